//! The gateway: Keygate in front of an upstream HTTP API. For each request it authenticates
//! (`Authorization: Bearer`, `X-API-Key` or `X-Auth-Token`), checks the scope the route needs,
//! applies the rate limit and debits the route's credit cost, strips the credential, adds the
//! identity headers (`X-Keygate-Account-Id`, `X-Keygate-Key-Id`, `X-Keygate-Scope`), forwards
//! over a keep-alive connection pool, and adds the rate-limit headers to the answer. Bodies
//! stream both ways: nothing is buffered whole.
//!
//! Hot path, all of it: the same cached authentication as the API, one limiter check, no
//! database write unless the route has a credit cost.

use std::fmt::Write as _;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::uri::PathAndQuery;
use axum::http::{Method, Uri};
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use keygate_core::Scope;
use tokio::net::TcpStream;

use axum::body::HttpBody as _;
use tower::ServiceExt;

mod upstream;

use crate::http::auth::authenticate;
use crate::http::client::{Connection, ConnectionLocal};
use crate::http::frame::{plaintext_refusal, Frame, FrameConfig, Inner, Surface};
use crate::http::request_id;
use crate::http::ApiError;
use crate::ratelimit::{apply_limits, charge};
use crate::state::AppState;
pub(crate) use upstream::Upstream;

/// Which scope (and credit cost) the calls under a path prefix need.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteRule {
    pub prefix: String,
    /// `None`: every method.
    pub methods: Option<Vec<Method>>,
    /// `None`: the default for the method.
    pub scope: Option<Scope>,
    pub cost: u64,
}

#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// `http://host:port`, optionally with a base path the request path is appended to.
    pub upstream: Uri,
    pub listen: SocketAddr,
    /// How long the upstream may take to start answering before the gateway answers 504.
    pub timeout: Duration,
    pub routes: Vec<RouteRule>,
    /// Path prefixes that need `admin` whatever the method.
    pub admin_prefixes: Vec<String>,
}

impl GatewayConfig {
    pub fn new(upstream: Uri) -> Self {
        GatewayConfig {
            upstream,
            listen: ([127, 0, 0, 1], 8081).into(),
            timeout: Duration::from_secs(30),
            routes: Vec::new(),
            admin_prefixes: Vec::new(),
        }
    }

    /// The rule of the longest matching prefix for this method, if any.
    fn rule(&self, method: &Method, path: &str) -> Option<&RouteRule> {
        self.routes
            .iter()
            .filter(|r| path.starts_with(&r.prefix))
            .filter(|r| r.methods.as_ref().is_none_or(|ms| ms.contains(method)))
            .max_by_key(|r| r.prefix.len())
    }

    /// DESIGN.md's defaults: GET, HEAD and OPTIONS read; other methods write; admin prefixes
    /// need admin. A configured rule overrides them.
    pub fn needs(&self, method: &Method, path: &str) -> (Scope, u64) {
        if let Some(rule) = self.rule(method, path) {
            if let Some(scope) = rule.scope {
                return (scope, rule.cost);
            }
            return (default_scope(self, method, path), rule.cost);
        }
        (default_scope(self, method, path), 0)
    }
}

fn default_scope(cfg: &GatewayConfig, method: &Method, path: &str) -> Scope {
    if cfg
        .admin_prefixes
        .iter()
        .any(|p| path.starts_with(p.as_str()))
    {
        Scope::Admin
    } else if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        Scope::Read
    } else {
        Scope::Write
    }
}

/// The gateway's state, shared by every connection.
pub struct Gateway {
    state: AppState,
    config: GatewayConfig,
    connector: HttpConnector,
    /// For HTTP/2 clients.
    client: Client<HttpConnector, Body>,
    /// The upstream's `Host`.
    host: Option<HeaderValue>,
}

/// The gateway as served: the proxy in its frame (request id, access log, transport headers,
/// rate-limit headers; see `http::frame`).
pub type GatewayApp = Frame<Arc<Gateway>>;

pub fn router(state: AppState, config: GatewayConfig) -> GatewayApp {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_keepalive(Some(Duration::from_secs(60)));
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    let client = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .build(connector.clone());
    let host = config
        .upstream
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok());
    let frame = FrameConfig {
        surface: Surface::Gateway,
        trusted_proxies: state.config.trusted_proxies.clone(),
    };
    Frame::new(
        frame,
        Arc::new(Gateway {
            state,
            config,
            connector,
            client,
            host,
        }),
    )
}

impl Inner for Arc<Gateway> {
    fn call(&self, req: Request) -> impl Future<Output = Response> + Send + 'static {
        let gw = self.clone();
        async move {
            match forward(&gw, req).await {
                Ok(response) => response,
                Err(err) => err.into_response(),
            }
        }
    }
}

/// Credential headers: never forwarded.
const CREDENTIAL_HEADERS: [HeaderName; 3] = [
    header::AUTHORIZATION,
    HeaderName::from_static("x-api-key"),
    HeaderName::from_static("x-auth-token"),
];
/// Identity headers: only the gateway sets them.
const IDENTITY_HEADERS: [HeaderName; 3] = [
    HeaderName::from_static("x-keygate-account-id"),
    HeaderName::from_static("x-keygate-key-id"),
    HeaderName::from_static("x-keygate-scope"),
];
/// Fields the gateway writes anew: the client's own are replaced, not repeated.
const REPLACED_HEADERS: [HeaderName; 2] = [X_REQUEST_ID, X_FORWARDED_FOR];
const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// RFC 9110 §7.6.1: hop-by-hop fields, plus any the Connection header names. (`Trailer` is
/// not one: it tells the client which trailer fields to expect, and hyper sends only those.)
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Drops the hop-by-hop fields, those the Connection header names, and `also`. A message
/// carries few fields and seldom more than one of these (the credential): a pass over the
/// fields present finds each, rather than a removal (a hash lookup) per name that could be.
fn strip_hop_by_hop(headers: &mut HeaderMap, also: &[&[HeaderName]]) {
    let doomed =
        |name: &HeaderName| HOP_BY_HOP.contains(name) || also.iter().any(|set| set.contains(name));
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        for name in &named {
            headers.remove(name);
        }
    }
    while let Some(name) = headers.keys().find(|name| doomed(name)).cloned() {
        headers.remove(&name);
    }
}

/// The fields the gateway adds to what it forwards: who called (`X-Keygate-*`), the request's
/// id and the chain of addresses it came through.
pub(crate) struct Added<'a> {
    fields: [(HeaderName, &'a str); 5],
    len: usize,
}

impl Default for Added<'_> {
    fn default() -> Self {
        Added {
            fields: std::array::from_fn(|_| (X_REQUEST_ID, "")),
            len: 0,
        }
    }
}

impl<'a> Added<'a> {
    pub(crate) fn push(&mut self, name: HeaderName, value: &'a str) {
        // Ids and addresses are plain text; anything that could not be a field value is left
        // out rather than sent.
        if self.len < self.fields.len() && is_field_value(value) {
            self.fields[self.len] = (name, value);
            self.len += 1;
        }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&HeaderName, &'a str)> + '_ {
        self.fields[..self.len].iter().map(|(n, v)| (n, *v))
    }

    /// Into a header map, for the requests that go by hyper's client.
    fn insert_into(&self, headers: &mut HeaderMap) {
        for (name, value) in self.iter() {
            if let Ok(v) = HeaderValue::from_str(value) {
                headers.insert(name.clone(), v);
            }
        }
    }
}

/// Visible ASCII, spaces and tabs: what a field value may hold (RFC 9110 §5.5, without the
/// obsolete octets above 0x7f).
fn is_field_value(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
}

async fn forward(gw: &Gateway, req: Request) -> Result<Response, ApiError> {
    let state = &gw.state;
    let (mut parts, body) = req.into_parts();
    // The clone shares the URI's bytes: the path is not copied.
    let uri = parts.uri.clone();
    let path = uri.path();
    if let Some(refusal) = plaintext_refusal(
        state.config.refuse_plaintext_credentials,
        &parts.headers,
        path,
    ) {
        return Err(refusal);
    }
    let context = request_id::context();
    let (peer, client) = match &context {
        Some(c) => (c.peer, c.client.addr),
        None => (IpAddr::from([0, 0, 0, 0]), IpAddr::from([0, 0, 0, 0])),
    };
    let who = authenticate(state, &parts.headers, Some(client)).await?;
    let (needed, cost) = gw.config.needs(&parts.method, path);
    // Limits first, so that a refused call still answers with the rate-limit headers; credits
    // only for a call that goes through.
    apply_limits(state, &who).await?;
    who.require(needed)?;
    let idem = parts
        .headers
        .get(IDEMPOTENCY_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    charge(
        state,
        &who,
        (parts.method.as_str(), path),
        cost,
        idem.as_deref(),
    )
    .await?;
    // The upstream sees the chain as it reached us, plus our TCP peer, as any proxy adds it.
    let mut forwarded_for = String::with_capacity(48);
    if let Some(prior) = parts
        .headers
        .get(X_FORWARDED_FOR)
        .and_then(|v| v.to_str().ok())
    {
        forwarded_for.push_str(prior);
        forwarded_for.push_str(", ");
    }
    let _ = write!(forwarded_for, "{peer}");
    strip_hop_by_hop(
        &mut parts.headers,
        &[&CREDENTIAL_HEADERS, &IDENTITY_HEADERS, &REPLACED_HEADERS],
    );
    let [account_id, key_id, scope] = IDENTITY_HEADERS;
    let mut added = Added::default();
    if let Some(a) = &who.account_id {
        added.push(account_id, a.as_str());
    }
    if let Some(k) = who.key_id() {
        added.push(key_id, k.as_str());
    }
    if let Some(c) = &context {
        added.push(X_REQUEST_ID, &c.id);
    }
    added.push(scope, who.scope.as_str());
    added.push(X_FORWARDED_FOR, &forwarded_for);

    let upstream = &gw.config.upstream;
    let base_path = upstream.path().trim_end_matches('/');
    let path_and_query: PathAndQuery = match parts.uri.path_and_query() {
        // Nothing to put in front: the request's own, as it came.
        Some(own) if base_path.is_empty() && own.as_str().starts_with('/') => own.clone(),
        _ => match parts.uri.query() {
            Some(q) => format!("{base_path}{path}?{q}"),
            None => format!("{base_path}{path}"),
        }
        .parse()
        .map_err(|_| ApiError::invalid("the request path is malformed"))?,
    };
    let client_version = parts.version;
    parts.version = axum::http::Version::HTTP_11;
    if let Some(host) = &gw.host {
        parts.headers.insert(header::HOST, host.clone());
    }
    // An HTTP/1 client's requests go over the upstream connection kept for its connection;
    // HTTP/2 clients, whose requests run side by side, share the pool.
    let own = parts
        .extensions
        .get::<Connection>()
        .map(|c| c.local.clone())
        .filter(|_| client_version < axum::http::Version::HTTP_2);
    let sent = match own {
        Some(local) => {
            // Origin-form: the connection already knows where it goes.
            parts.uri = Uri::from(path_and_query);
            tokio::time::timeout(
                gw.config.timeout,
                send_on_own(gw, &local, parts, body, &added),
            )
            .await
        }
        None => {
            let mut target = upstream.clone().into_parts();
            target.path_and_query = Some(path_and_query);
            parts.uri = Uri::from_parts(target)
                .map_err(|_| ApiError::invalid("the request path is malformed"))?;
            added.insert_into(&mut parts.headers);
            let request = hyper::Request::from_parts(parts, body);
            tokio::time::timeout(gw.config.timeout, async {
                let answer = gw.client.request(request).await?;
                let (parts, body) = answer.into_parts();
                Ok((parts, Body::new(body)))
            })
            .await
        }
    };
    let (mut parts, body) = match sent {
        Err(_) => return Err(ApiError::GatewayTimeout),
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "upstream request failed");
            return Err(ApiError::BadGateway);
        }
        Ok(Ok(answer)) => answer,
    };
    strip_hop_by_hop(&mut parts.headers, &[]);
    // The client's connection, not the upstream's, decides the version we answer in.
    parts.version = client_version;
    Ok(Response::from_parts(parts, body))
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Sends the request on the client connection's own upstream connection (see
/// `ConnectionLocal`), opening it on the first request. A request without a body, the common
/// case, goes by the gateway's own client (`upstream`), inside this task; one with a body by
/// hyper's client, which can send the body while the answer already comes back.
async fn send_on_own(
    gw: &Gateway,
    local: &Arc<ConnectionLocal>,
    mut parts: axum::http::request::Parts,
    body: Body,
    added: &Added<'_>,
) -> Result<(axum::http::response::Parts, Body), BoxError> {
    let kept = local
        .upstream
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    let sender = match kept {
        Some(Upstream::Hyper(sender)) => Some(sender),
        Some(Upstream::Raw(conn)) if body.is_end_stream() => {
            return upstream::exchange(gw, local, Some(conn), &parts, added).await
        }
        None if body.is_end_stream() => {
            return upstream::exchange(gw, local, None, &parts, added).await
        }
        // The idle connection goes on under hyper's client, with nothing left unread.
        Some(Upstream::Raw(conn)) => Some(handshake(conn.into_io()).await?),
        None => None,
    };
    added.insert_into(&mut parts.headers);
    let answer =
        send_with_hyper(gw, local, sender, hyper::Request::from_parts(parts, body)).await?;
    let (parts, body) = answer.into_parts();
    Ok((parts, Body::new(body)))
}

/// Sends `request` over hyper's client on `kept`, or on a new connection when there is none.
/// The kept connection may have been closed by the upstream meanwhile: then, or when the
/// connection refused the request before sending any of it, a new one is opened, once.
async fn send_with_hyper(
    gw: &Gateway,
    local: &ConnectionLocal,
    kept: Option<HyperSender>,
    request: hyper::Request<Body>,
) -> Result<hyper::Response<Incoming>, BoxError> {
    let mut kept = kept;
    let mut request = request;
    let mut retried = false;
    loop {
        let mut sender = match kept.take() {
            Some(mut sender) => match sender.ready().await {
                Ok(()) => sender,
                Err(_) => handshake(connect(gw).await?).await?,
            },
            None => handshake(connect(gw).await?).await?,
        };
        match sender.try_send_request(request).await {
            Ok(answer) => {
                // Kept while the body streams: the client's next request, which waits for it
                // to end, waits for the connection to be ready again.
                *local.upstream.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(Upstream::Hyper(sender));
                return Ok(answer);
            }
            Err(mut err) => match err.take_message() {
                Some(unsent) if !retried => {
                    retried = true;
                    request = unsent;
                }
                _ => return Err(err.into_error().into()),
            },
        }
    }
}

type HyperSender = hyper::client::conn::http1::SendRequest<Body>;

/// A new TCP connection to the upstream.
async fn connect(gw: &Gateway) -> Result<TcpStream, BoxError> {
    let io = gw
        .connector
        .clone()
        .oneshot(gw.config.upstream.clone())
        .await?;
    Ok(io.into_inner())
}

/// hyper's HTTP/1.1 client on `io`, driven by a task of its own until the client connection
/// that keeps it closes.
async fn handshake(io: TcpStream) -> Result<HyperSender, BoxError> {
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "upstream connection ended");
        }
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_scopes_follow_the_method_and_rules_override_them() {
        let mut cfg = GatewayConfig::new(Uri::from_static("http://127.0.0.1:9"));
        cfg.admin_prefixes.push("/api/settings".into());
        cfg.routes.push(RouteRule {
            prefix: "/api/images/generate".into(),
            methods: None,
            scope: None,
            cost: 5,
        });
        cfg.routes.push(RouteRule {
            prefix: "/api/reports".into(),
            methods: Some(vec![Method::GET]),
            scope: Some(Scope::Admin),
            cost: 0,
        });
        assert_eq!(cfg.needs(&Method::GET, "/api/posts"), (Scope::Read, 0));
        assert_eq!(
            cfg.needs(&Method::DELETE, "/api/posts/1"),
            (Scope::Write, 0)
        );
        assert_eq!(
            cfg.needs(&Method::GET, "/api/settings/x"),
            (Scope::Admin, 0)
        );
        assert_eq!(
            cfg.needs(&Method::POST, "/api/images/generate"),
            (Scope::Write, 5)
        );
        assert_eq!(
            cfg.needs(&Method::GET, "/api/reports/q3"),
            (Scope::Admin, 0)
        );
        assert_eq!(
            cfg.needs(&Method::POST, "/api/reports/q3"),
            (Scope::Write, 0)
        );
    }

    #[test]
    fn hop_by_hop_fields_and_those_connection_names_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("close, x-private"));
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("content-type", HeaderValue::from_static("application/json"));
        strip_hop_by_hop(&mut h, &[]);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("content-type"));
        h.insert("x-api-key", HeaderValue::from_static("ak_live_x"));
        h.insert("x-keygate-scope", HeaderValue::from_static("admin"));
        strip_hop_by_hop(&mut h, &[&CREDENTIAL_HEADERS, &IDENTITY_HEADERS]);
        assert_eq!(
            h.len(),
            1,
            "the credential and a forged identity are dropped"
        );
    }
}
