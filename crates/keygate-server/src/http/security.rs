//! What makes the server safe to face browsers and the open internet on its own: security
//! headers on every answer, CORS closed unless origins are configured (and never with
//! credentials), a bound on how long a request may take, and the option to refuse credentials
//! sent in clear text.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::client::ClientInfo;
use super::ApiError;

/// For HTML pages (the dashboard, docs): nothing from elsewhere, no framing, no `<base>`, forms
/// post only here. A page that needs more sets its own policy, which is kept.
pub const HTML_CSP: &str =
    "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";
/// For everything else (JSON): nothing may load or frame it.
pub const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'";
/// One year. Sent only on answers that went out over HTTPS, as RFC 6797 requires.
pub const HSTS: &str = "max-age=31536000";

fn is_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("text/html"))
}

/// HSTS on HTTPS answers, and no banner naming the software (an upstream's included).
pub fn transport_headers(headers: &mut HeaderMap, client: Option<&ClientInfo>) {
    headers.remove(header::SERVER);
    headers.remove("x-powered-by");
    if client.is_some_and(|c| c.secure) {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static(HSTS),
        );
    }
}

/// Middleware for the server's own answers: [`transport_headers`], and the browser headers
/// unless the handler chose its own.
pub async fn security_headers(req: Request, next: Next) -> Response {
    let client = req.extensions().get::<ClientInfo>().copied();
    let mut response = next.run(req).await;
    let headers = response.headers_mut();
    transport_headers(headers, client.as_ref());
    let csp = if is_html(headers) { HTML_CSP } else { API_CSP };
    let defaults: [(HeaderName, &'static str); 4] = [
        (header::CONTENT_SECURITY_POLICY, csp),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
    ];
    for (name, value) in defaults {
        headers
            .entry(name)
            .or_insert(HeaderValue::from_static(value));
    }
    response
}

/// Middleware for the gateway: only [`transport_headers`], since the upstream's pages are its
/// own to secure.
pub async fn gateway_transport_headers(req: Request, next: Next) -> Response {
    let client = req.extensions().get::<ClientInfo>().copied();
    let mut response = next.run(req).await;
    transport_headers(response.headers_mut(), client.as_ref());
    response
}

/// Abandons a request that takes longer than `request_timeout` with a 503 in the surface's
/// shape. Dropping the handler's future cancels its work at the next `.await`.
pub async fn request_timeout(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    let uri = req.uri().clone();
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(timeout_ms = limit.as_millis() as u64, "request timed out");
            crate::surface_error(&uri, ApiError::Timeout)
        }
    }
}

/// Paths whose body is a credential (Crossbar's logins).
const CREDENTIAL_BODY_PATHS: [&str; 2] = ["/v2/api_auth", "/v2/user_auth"];

fn carries_credential(req: &Request) -> bool {
    let h = req.headers();
    h.contains_key(header::AUTHORIZATION)
        || h.contains_key("x-api-key")
        || h.contains_key("x-auth-token")
        || CREDENTIAL_BODY_PATHS.contains(&req.uri().path())
}

/// With `refuse_plaintext_credentials`: a credential that arrived over plain HTTP is refused
/// before it is looked at. (It has crossed the network in clear already; the refusal makes the
/// mistake loud instead of letting it work.)
pub async fn refuse_plaintext_credentials(
    State(refuse): State<bool>,
    req: Request,
    next: Next,
) -> Response {
    if refuse {
        let secure = req
            .extensions()
            .get::<ClientInfo>()
            .is_some_and(|c| c.secure);
        if !secure && carries_credential(&req) {
            return crate::surface_error(
                req.uri(),
                ApiError::forbidden(
                    "Credentials must be sent over HTTPS; this server refuses them over plain HTTP",
                ),
            );
        }
    }
    next.run(req).await
}

/// The CORS layer for the configured origins; `None` (CORS closed: a preflight gets no
/// `Access-Control-Allow-Origin`) when there are none. Credentials are never allowed: an API
/// key belongs in a server, not in a page (seed 002), and cookies must not ride cross-origin.
pub fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect::<Vec<_>>(),
        )
    };
    let allowed_headers = [
        header::AUTHORIZATION,
        header::CONTENT_TYPE,
        HeaderName::from_static("x-api-key"),
        HeaderName::from_static("x-auth-token"),
        HeaderName::from_static("x-request-id"),
        HeaderName::from_static("idempotency-key"),
    ];
    let exposed = [
        "x-request-id",
        "x-total-count",
        "link",
        "retry-after",
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
        "ratelimit",
        "ratelimit-policy",
    ]
    .map(HeaderName::from_static);
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([
                Method::GET,
                Method::HEAD,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers(allowed_headers)
            .expose_headers(exposed)
            .allow_credentials(false)
            .max_age(Duration::from_secs(600)),
    )
}

/// Checks an origin as the config gives it: `*`, or `scheme://host[:port]` with no path.
pub fn validate_origin(origin: &str) -> Result<(), String> {
    if origin == "*" {
        return Ok(());
    }
    let ok = origin
        .parse::<axum::http::Uri>()
        .ok()
        .filter(|u| matches!(u.scheme_str(), Some("http" | "https")))
        .filter(|u| u.authority().is_some())
        .filter(|u| {
            u.path_and_query()
                .is_none_or(|p| p.as_str() == "/" || p.as_str().is_empty())
        })
        .is_some()
        && !origin.ends_with('/');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "expected an origin such as https://app.example.com (scheme, host, optional port, no path) or *, got {origin:?}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::middleware::{from_fn, from_fn_with_state};
    use axum::response::Html;
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    use super::*;

    async fn call(app: Router, path: &str) -> Response {
        app.oneshot(
            Request::builder()
                .uri(path)
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("infallible")
    }

    #[tokio::test]
    async fn html_pages_get_the_strict_policy_and_json_the_closed_one() {
        let app = Router::new()
            .route("/page", get(|| async { Html("<h1>hi</h1>") }))
            .route("/json", get(|| async { axum::Json(serde_json::json!({})) }))
            .layer(from_fn(security_headers));
        let page = call(app.clone(), "/page").await;
        assert_eq!(page.headers()[header::CONTENT_SECURITY_POLICY], HTML_CSP);
        assert_eq!(page.headers()[header::X_FRAME_OPTIONS], "DENY");
        let json = call(app, "/json").await;
        assert_eq!(json.headers()[header::CONTENT_SECURITY_POLICY], API_CSP);
        assert_eq!(json.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert!(
            json.headers()
                .get(header::STRICT_TRANSPORT_SECURITY)
                .is_none(),
            "not over HTTPS"
        );
    }

    #[tokio::test]
    async fn a_page_that_sets_its_own_policy_keeps_it() {
        let app = Router::new()
            .route(
                "/page",
                get(|| async {
                    (
                        [(header::CONTENT_SECURITY_POLICY, "default-src 'self' data:")],
                        Html("x"),
                    )
                }),
            )
            .layer(from_fn(security_headers));
        let page = call(app, "/page").await;
        assert_eq!(
            page.headers()[header::CONTENT_SECURITY_POLICY],
            "default-src 'self' data:"
        );
    }

    #[tokio::test]
    async fn a_request_slower_than_the_timeout_gets_503_in_the_surface_shape() {
        let slow = || async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            "late"
        };
        let app = Router::new()
            .route("/api/v1/slow", get(slow))
            .route("/v2/slow", get(slow))
            .layer(from_fn_with_state(
                Duration::from_millis(50),
                request_timeout,
            ));
        let native = call(app.clone(), "/api/v1/slow").await;
        assert_eq!(native.status(), 503);
        let body = axum::body::to_bytes(native.into_body(), 10_000)
            .await
            .expect("body");
        let body: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(body["error"]["code"], "timeout");
        let crossbar = call(app, "/v2/slow").await;
        let body = axum::body::to_bytes(crossbar.into_body(), 10_000)
            .await
            .expect("body");
        let body: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(body["error"], "503");
    }

    #[test]
    fn origins_are_scheme_host_and_port_only() {
        assert!(validate_origin("https://app.example.com").is_ok());
        assert!(validate_origin("http://localhost:3000").is_ok());
        assert!(validate_origin("*").is_ok());
        assert!(validate_origin("https://app.example.com/path").is_err());
        assert!(validate_origin("https://app.example.com/").is_err());
        assert!(validate_origin("app.example.com").is_err());
        assert!(validate_origin("ftp://app.example.com").is_err());
    }
}
