//! The gateway: Keygate in front of an upstream HTTP API. For each request it authenticates
//! (`Authorization: Bearer`, `X-API-Key` or `X-Auth-Token`), checks the scope the route needs,
//! applies the rate limit and debits the route's credit cost, strips the credential, adds the
//! identity headers (`X-Keygate-Account-Id`, `X-Keygate-Key-Id`, `X-Keygate-Scope`), forwards
//! over a keep-alive connection pool, and adds the rate-limit headers to the answer. Bodies
//! stream both ways: nothing is buffered whole.
//!
//! Hot path, all of it: the same cached authentication as the API, one limiter check, no
//! database write unless the route has a credit cost.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use keygate_core::Scope;

use crate::http::auth::authenticate;
use crate::http::client::ClientInfo;
use crate::http::ApiError;
use crate::ratelimit::{apply_limits, charge, write_headers, RateLimitSlot};
use crate::state::AppState;

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

struct Gateway {
    state: AppState,
    config: GatewayConfig,
    client: Client<HttpConnector, Body>,
}

pub fn router(state: AppState, config: GatewayConfig) -> Router {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_keepalive(Some(Duration::from_secs(60)));
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    let client = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .build(connector);
    let gateway = Arc::new(Gateway {
        state: state.clone(),
        config,
        client,
    });
    Router::new()
        .fallback(proxy)
        .with_state(gateway)
        .layer(axum::middleware::from_fn_with_state(
            state.config.refuse_plaintext_credentials,
            crate::http::security::refuse_plaintext_credentials,
        ))
        .layer(axum::middleware::from_fn(
            crate::http::security::gateway_transport_headers,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state,
            crate::http::request_id::request_id_and_log,
        ))
}

/// Credential headers: never forwarded.
const CREDENTIAL_HEADERS: [&str; 3] = ["authorization", "x-api-key", "x-auth-token"];
/// RFC 9110 §7.6.1: hop-by-hop fields, plus any the Connection header names.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

fn error_response(err: ApiError, slot: &RateLimitSlot) -> Response {
    let mut response = err.into_response();
    if let Some(info) = slot.take() {
        write_headers(
            response.headers_mut(),
            &info,
            time::OffsetDateTime::now_utc().unix_timestamp(),
        );
    }
    response
}

async fn proxy(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    client: ClientInfo,
    req: Request,
) -> Response {
    let slot = RateLimitSlot::default();
    match forward(&gw, (peer, client), req, &slot).await {
        Ok(mut response) => {
            if let Some(info) = slot.take() {
                write_headers(
                    response.headers_mut(),
                    &info,
                    time::OffsetDateTime::now_utc().unix_timestamp(),
                );
            }
            response
        }
        Err(err) => error_response(err, &slot),
    }
}

async fn forward(
    gw: &Gateway,
    (peer, client): (SocketAddr, ClientInfo),
    req: Request,
    slot: &RateLimitSlot,
) -> Result<Response, ApiError> {
    let state = &gw.state;
    let (mut parts, body) = req.into_parts();
    let who = authenticate(state, &parts.headers, Some(client.addr)).await?;
    let path = parts.uri.path().to_owned();
    let (needed, cost) = gw.config.needs(&parts.method, &path);
    // Limits first, so that a refused call still answers with the rate-limit headers; credits
    // only for a call that goes through.
    apply_limits(state, &who, Some(slot)).await?;
    who.require(needed)?;
    let idem = parts
        .headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    charge(
        state,
        &who,
        (parts.method.as_str(), &path),
        cost,
        idem.as_deref(),
    )
    .await?;
    // The upstream sees the chain as it reached us, plus our TCP peer, as any proxy adds it.
    let forwarded_for = match parts
        .headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
    {
        Some(prior) => format!("{prior}, {}", peer.ip()),
        None => peer.ip().to_string(),
    };
    let headers = &mut parts.headers;
    for name in CREDENTIAL_HEADERS {
        headers.remove(name);
    }
    strip_hop_by_hop(headers);
    for name in [
        "x-keygate-account-id",
        "x-keygate-key-id",
        "x-keygate-scope",
    ] {
        headers.remove(name);
    }
    let mut set = |name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    };
    if let Some(a) = &who.account_id {
        set("x-keygate-account-id", a.as_str());
    }
    if let Some(k) = who.key_id() {
        set("x-keygate-key-id", k.as_str());
    }
    set("x-keygate-scope", who.scope.as_str());
    set("x-forwarded-for", &forwarded_for);
    if let Some(id) = crate::http::request_id::current() {
        set("x-request-id", &id);
    }

    let upstream = &gw.config.upstream;
    let base_path = upstream.path().trim_end_matches('/');
    let path_and_query = match parts.uri.query() {
        Some(q) => format!("{base_path}{path}?{q}"),
        None => format!("{base_path}{path}"),
    };
    let mut target = upstream.clone().into_parts();
    target.path_and_query = Some(
        path_and_query
            .parse()
            .map_err(|_| ApiError::invalid("the request path is malformed"))?,
    );
    parts.uri =
        Uri::from_parts(target).map_err(|_| ApiError::invalid("the request path is malformed"))?;
    let client_version = parts.version;
    parts.version = axum::http::Version::HTTP_11;
    if let Some(authority) = upstream.authority() {
        if let Ok(v) = HeaderValue::from_str(authority.as_str()) {
            parts.headers.insert(header::HOST, v);
        }
    }

    let request = hyper::Request::from_parts(parts, body);
    let answer = match tokio::time::timeout(gw.config.timeout, gw.client.request(request)).await {
        Err(_) => return Err(ApiError::GatewayTimeout),
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "upstream request failed");
            return Err(ApiError::BadGateway);
        }
        Ok(Ok(answer)) => answer,
    };
    let (mut parts, body) = answer.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    // The client's connection, not the upstream's, decides the version we answer in.
    parts.version = client_version;
    Ok(Response::from_parts(parts, Body::new(body)))
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
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("content-type"));
    }
}
