//! `GET /.well-known/oauth-authorization-server` (RFC 8414): where the endpoints are and what
//! this authorization server supports, for clients that configure themselves.
//!
//! `issuer` is the `iss` of the access tokens. Endpoint URLs start from the configured
//! `oauth_issuer`; without one, from the token issuer when it is a URL, else from the address
//! the request came to, so a default set-up still answers with working URLs. Deployments that
//! serve third parties should configure `oauth_issuer` as their public URL.

use axum::extract::State;
use axum::http::{header, HeaderMap};
use serde_json::{json, Value};

use crate::state::AppState;

/// The base URL of this authorization server's endpoints.
pub fn base_url(state: &AppState, headers: &HeaderMap) -> String {
    let configured = state
        .config
        .oauth_issuer
        .as_deref()
        .or_else(|| Some(state.config.token_issuer.as_str()))
        .filter(|u| u.starts_with("https://") || u.starts_with("http://"));
    if let Some(url) = configured {
        return url.trim_end_matches('/').to_owned();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']')
                })
        })
        .map(str::to_owned)
        .unwrap_or_else(|| state.config.listen.to_string());
    format!("http://{host}")
}

#[utoipa::path(get, path = "/.well-known/oauth-authorization-server", tag = "oauth",
    responses((status = 200, description = "RFC 8414 authorization server metadata")))]
pub async fn metadata(State(state): State<AppState>, headers: HeaderMap) -> axum::Json<Value> {
    let base = base_url(&state, &headers);
    axum::Json(json!({
        "issuer": state.tokens.oauth_issuer(),
        "authorization_endpoint": format!("{base}/oauth/authorize"),
        "token_endpoint": format!("{base}/oauth/token"),
        "introspection_endpoint": format!("{base}/oauth/introspect"),
        "revocation_endpoint": format!("{base}/oauth/revoke"),
        "jwks_uri": format!("{base}/.well-known/jwks.json"),
        "scopes_supported": ["read", "write", "admin"],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "authorization_response_iss_parameter_supported": false,
    }))
}
