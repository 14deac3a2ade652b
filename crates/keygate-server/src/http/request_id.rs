//! Request ids and the request log. Every request gets an id (the client's `X-Request-Id` when
//! it is short and plain, otherwise a new `req_…`), a [`RequestContext`] carrying it, and the
//! id back in the response's `X-Request-Id`. Every log line written inside a request names the
//! request: the log formatter (the binary's) reads the context from the task-local below, which
//! costs nothing until a line is written, where a tracing span per request would format its
//! fields for every request. The log records the path without the query string: a client may
//! put a credential there.
//!
//! The same middleware decides who the client is ([`super::client::client_info`]) and keeps,
//! for the rest of the request, a [`RequestContext`]: the id, the client, and the credential's
//! owner once authentication has run. Code deep inside a request (the audit log, Crossbar
//! envelopes) reads it from a task-local instead of having it passed down every call.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;

use super::auth::{Principal, TokenInUse};
use super::client::{client_info, ClientInfo, ConnectionTls};
use crate::cache::UserWithAccount;
use crate::service::audit::Actor;
use crate::state::AppState;

#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// What is known about the request being handled.
#[derive(Debug)]
pub struct RequestContext {
    pub id: String,
    pub client: ClientInfo,
    pub method: Method,
    /// Without the query string.
    pub path: String,
    /// Filled in by authentication; read by the audit log.
    actor: Mutex<Option<Credential>>,
}

/// What authenticated the request, kept as the `Arc`s the principal already holds: recording it
/// on the hot path copies pointers and allocates nothing; the audit log, which is rare, makes
/// the ids from them.
#[derive(Debug, Default)]
struct Credential {
    key: Option<Arc<keygate_store::KeyWithAccount>>,
    user: Option<Arc<UserWithAccount>>,
    token: Option<Arc<TokenInUse>>,
}

impl RequestContext {
    /// Who the request's credential belongs to, once authentication has run.
    pub fn actor(&self) -> Option<Actor> {
        let guard = self.actor.lock().unwrap_or_else(|p| p.into_inner());
        let c = guard.as_ref()?;
        let user_id = match (&c.token, &c.key, &c.user) {
            (Some(t), _, _) => Some(t.claims.owner_id.clone()),
            (None, Some(k), _) => k.key.created_by.clone(),
            (None, None, Some(u)) => Some(u.user.id.clone()),
            (None, None, None) => None,
        };
        Some(Actor {
            key_id: c.key.as_ref().map(|k| k.key.id.clone()),
            user_id,
        })
    }
}

tokio::task_local! {
    static CURRENT: Arc<RequestContext>;
}

/// The current request's id, inside a request.
pub fn current() -> Option<String> {
    CURRENT.try_with(|c| c.id.clone()).ok()
}

/// The current request's context, inside a request.
pub fn context() -> Option<Arc<RequestContext>> {
    CURRENT.try_with(Clone::clone).ok()
}

/// Hot path: records who the request's credential belongs to (called by authentication).
pub fn set_principal(p: &Principal) {
    let _ = CURRENT.try_with(|c| {
        *c.actor.lock().unwrap_or_else(|p| p.into_inner()) = Some(Credential {
            key: p.key.clone(),
            user: p.user.clone(),
            token: p.token.clone(),
        });
    });
}

pub const HEADER: &str = "x-request-id";

fn acceptable(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// `req_` and 128 random bits in hex. From the thread's own generator (ChaCha, seeded from the
/// OS and reseeded by rand), not a `getrandom` system call per request: a request id names a
/// request in the logs, it guards nothing.
pub fn new_request_id() -> String {
    format!("req_{:032x}", rand::random::<u128>())
}

pub async fn request_id_and_log(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let id = req
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| acceptable(v))
        .map(str::to_owned)
        .unwrap_or_else(new_request_id);
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
    let tls = req.extensions().get::<ConnectionTls>().is_some_and(|t| t.0);
    let client = client_info(peer, tls, req.headers(), &state.config.trusted_proxies);
    req.extensions_mut().insert(RequestId(id.clone()));
    req.extensions_mut().insert(client);
    let started = Instant::now();
    let context = Arc::new(RequestContext {
        id,
        client,
        method: req.method().clone(),
        path: req.uri().path().to_owned(),
        actor: Mutex::new(None),
    });
    let mut response = CURRENT.scope(context.clone(), next.run(req)).await;
    let status = response.status().as_u16();
    let latency_us = started.elapsed().as_micros() as u64;
    CURRENT.sync_scope(context.clone(), || {
        // Server errors stand out in the log (their cause was logged inside the request);
        // client errors are the client's business and stay at info.
        if status >= 500 {
            tracing::warn!(status, latency_us, "handled");
        } else {
            tracing::info!(status, latency_us, "handled");
        }
    });
    if let Ok(value) = HeaderValue::from_str(&context.id) {
        response.headers_mut().insert(HEADER, value);
    }
    response
}
