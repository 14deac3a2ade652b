//! What makes the server safe to face browsers and the open internet on its own: security
//! headers on every answer, CORS closed unless origins are configured (and never with
//! credentials). The frame (`super::frame`) applies the headers, bounds how long a request may
//! take, and refuses credentials sent in clear text when configured to.

use std::time::Duration;

use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::Method;
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::client::ClientInfo;

/// For HTML pages (the dashboard, docs): nothing from elsewhere, no framing, no `<base>`, forms
/// post only here. A page that needs more sets its own policy, which is kept.
pub const HTML_CSP: &str =
    "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";
/// For everything else (JSON): nothing may load or frame it.
pub const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'";
/// One year. Sent only on answers that went out over HTTPS, as RFC 6797 requires.
pub const HSTS: &str = "max-age=31536000";

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
    use super::*;

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
