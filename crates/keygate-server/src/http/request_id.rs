//! Request ids and the request log. Every request gets an id (the client's `X-Request-Id` when
//! it is short and plain, otherwise a new `req_…`), a [`RequestContext`] carrying it, and the
//! id back in the response's `X-Request-Id`. Every log line written inside a request names the
//! request: the log formatter (the binary's) reads the context from the task-local below, which
//! costs nothing until a line is written, where a tracing span per request would format its
//! fields for every request. The log records the path without the query string: a client may
//! put a credential there.
//!
//! The frame (`super::frame`) decides who the client is ([`super::client::client_info`]) and
//! keeps, for the rest of the request, a [`RequestContext`]: the id, the client, the
//! credential's owner once authentication has run, and the limit the request was counted
//! against. Code deep inside a request (the audit log, Crossbar
//! envelopes) reads it from a task-local instead of having it passed down every call.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use axum::http::Method;

use super::auth::{Principal, TokenInUse};
use super::client::ClientInfo;
use crate::cache::UserWithAccount;
use crate::ratelimit::RateLimitInfo;
use crate::service::audit::Actor;

/// What is known about the request being handled.
#[derive(Debug)]
pub struct RequestContext {
    pub id: String,
    /// The TCP peer (a proxy's address when the client is behind one).
    pub peer: IpAddr,
    pub client: ClientInfo,
    pub method: Method,
    /// Without the query string.
    pub path: String,
    /// Filled in by authentication; read by the audit log.
    actor: Mutex<Option<Credential>>,
    /// The limit the request was counted against, for the answer's headers.
    ratelimit: Mutex<Option<RateLimitInfo>>,
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
    pub fn new(id: String, peer: IpAddr, client: ClientInfo, method: Method, path: &str) -> Self {
        RequestContext {
            id,
            peer,
            client,
            method,
            path: path.to_owned(),
            actor: Mutex::new(None),
            ratelimit: Mutex::new(None),
        }
    }

    /// The limit the request was counted against, once: the frame writes it as headers.
    pub fn take_ratelimit(&self) -> Option<RateLimitInfo> {
        self.ratelimit
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

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
    pub(crate) static CURRENT: Arc<RequestContext>;
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

/// Hot path: keeps the limit the request was counted against for the answer's headers
/// (called by the limiter). Outside a request, nothing to do.
pub fn set_ratelimit(info: RateLimitInfo) {
    let _ = CURRENT.try_with(|c| {
        *c.ratelimit.lock().unwrap_or_else(|p| p.into_inner()) = Some(info);
    });
}

pub const HEADER: &str = "x-request-id";

pub(crate) fn acceptable(id: &str) -> bool {
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

/// Writes the access log line of a request that was answered below 500, in place of the
/// `handled` event at info. The binary installs one ([`set_access_log`]) that writes the same
/// line the event would have produced straight into its log buffer: the request log is the
/// busiest thing Keygate writes, and tracing's dispatch, filter and formatting layer around
/// the line cost a few percent of a whole request.
pub trait AccessLog: Send + Sync + 'static {
    fn handled(&self, request: &RequestContext, status: u16, latency_us: u64);
}

static ACCESS_LOG: std::sync::OnceLock<Box<dyn AccessLog>> = std::sync::OnceLock::new();

/// Installs the process's access log sink, once; `false` if one was already installed.
pub fn set_access_log(sink: Box<dyn AccessLog>) -> bool {
    ACCESS_LOG.set(sink).is_ok()
}

/// The access log line of a request, inside its context so that it names the request.
pub(crate) fn log_handled(context: &Arc<RequestContext>, status: u16, latency_us: u64) {
    // Server errors stand out in the log (their cause was logged inside the request); client
    // errors are the client's business and stay at info.
    if status < 500 {
        if let Some(sink) = ACCESS_LOG.get() {
            // The same filter as the event's (`KEYGATE_LOG`): this callsite has its target
            // and level.
            if tracing::enabled!(tracing::Level::INFO) {
                sink.handled(context, status, latency_us);
            }
            return;
        }
    }
    handled_event(context, status, latency_us);
}

/// The access log line as a tracing event (`handled`, at warn for a server error), inside the
/// request's context so that it names the request.
pub fn handled_event(context: &Arc<RequestContext>, status: u16, latency_us: u64) {
    CURRENT.sync_scope(context.clone(), || {
        if status >= 500 {
            tracing::warn!(status, latency_us, "handled");
        } else {
            tracing::info!(status, latency_us, "handled");
        }
    });
}
