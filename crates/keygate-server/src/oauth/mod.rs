//! OAuth 2.0 for third-party integrations: a small authorization server on Keygate's own
//! accounts, users and signing keys, with only the parts current practice keeps (RFC 9700): the
//! authorization code grant with PKCE S256, refresh tokens that rotate, and client credentials.
//! No implicit grant, no password grant.
//!
//! - [`clients`]: `/api/v1/oauth/clients`, an account's registered clients;
//! - [`authorize`]: the authorization step as service functions the dashboard's consent page
//!   calls, and `GET/POST /oauth/authorize`;
//! - [`token`]: `/oauth/token`, the three grants;
//! - [`introspect`]: `/oauth/introspect` (RFC 7662) and `/oauth/revoke` (RFC 7009);
//! - [`metadata`]: `/.well-known/oauth-authorization-server` (RFC 8414);
//! - [`consents`]: `/api/v1/oauth/consents`, what a user has granted, and taking it back.
//!
//! Access tokens are RFC 9068 JWTs signed by the token service's keys (the same JWKS), checked
//! without I/O on `/api/v1` like auth tokens; revoking one puts its `jti` on the revocation feed
//! every node follows. Codes and refresh tokens are opaque and stored hashed (see
//! `keygate_store::OAuthStore` for their single-use rules).
//!
//! Who a token acts for: a user's token (authorization code, refresh) acts in the user's
//! account with the granted scopes, never more than the user's role allows; a client
//! credentials token acts in the account that registered the client, with at most the
//! client's scope, as no user (`sub` is the client id).

pub mod authorize;
pub mod clients;
pub mod consents;
pub mod introspect;
pub mod metadata;
pub mod token;

use std::collections::HashMap;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use keygate_core::oauth::secret_matches;
use keygate_core::ClientId;
use keygate_store::{IssuedAccessToken, OAuthClient, RevocationKind, StoreError};
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(clients::list_clients, clients::create_client))
        .routes(routes!(
            clients::get_client,
            clients::update_client,
            clients::delete_client
        ))
        .routes(routes!(clients::rotate_client_secret))
        .routes(routes!(consents::list_consents))
        .routes(routes!(consents::revoke_consent))
        .routes(routes!(token::token))
        .routes(routes!(introspect::introspect))
        .routes(routes!(introspect::revoke))
        .routes(routes!(metadata::metadata))
        .routes(routes!(
            authorize::authorize_page,
            authorize::authorize_decision
        ))
}

/// An error of the token, introspection and revocation endpoints, in RFC 6749 §5.2's shape:
/// `{"error": "invalid_grant", "error_description": "…"}`, never cached. Server errors are
/// logged and shown without detail, like the native API's.
#[derive(Debug)]
pub struct OAuthError {
    pub status: StatusCode,
    pub error: &'static str,
    pub description: String,
}

impl OAuthError {
    fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> Self {
        OAuthError {
            status,
            error,
            description: description.into(),
        }
    }

    pub fn invalid_request(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", d)
    }

    /// 401 with `WWW-Authenticate` (§5.2): the client could not be authenticated.
    pub fn invalid_client(d: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_client", d)
    }

    pub fn invalid_grant(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_grant", d)
    }

    pub fn unauthorized_client(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "unauthorized_client", d)
    }

    pub fn unsupported_grant_type(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "unsupported_grant_type", d)
    }

    pub fn invalid_scope(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_scope", d)
    }

    pub fn server_error(err: anyhow::Error) -> Self {
        tracing::error!(error = %format!("{err:#}"), "internal error in OAuth");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "An internal error occurred; it has been logged.",
        )
    }
}

impl From<StoreError> for OAuthError {
    fn from(err: StoreError) -> Self {
        OAuthError::server_error(err.into())
    }
}

impl From<anyhow::Error> for OAuthError {
    fn from(err: anyhow::Error) -> Self {
        OAuthError::server_error(err)
    }
}

impl From<crate::http::ApiError> for OAuthError {
    fn from(err: crate::http::ApiError) -> Self {
        OAuthError::server_error(anyhow::anyhow!("{err}"))
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = json!({"error": self.error, "error_description": self.description});
        let mut response = (self.status, no_store(), axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"keygate\", charset=\"UTF-8\""),
            );
        }
        response
    }
}

/// `Cache-Control: no-store` and `Pragma: no-cache` (RFC 6749 §5.1): responses carrying
/// tokens, and their errors, must not be cached anywhere.
pub fn no_store() -> [(header::HeaderName, HeaderValue); 2] {
    [
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (header::PRAGMA, HeaderValue::from_static("no-cache")),
    ]
}

/// The parameters of a form-encoded request (RFC 6749 Appendix B). A parameter sent twice is
/// refused (§3.1, §3.2); one sent empty counts as absent.
pub struct FormParams(HashMap<String, String>);

impl FormParams {
    pub fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Self, OAuthError> {
        let form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|m| {
                m.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            });
        if !form {
            return Err(OAuthError::invalid_request(
                "send the parameters as application/x-www-form-urlencoded",
            ));
        }
        Self::from_pairs(form_urlencoded::parse(body))
    }

    pub fn from_query(query: Option<&str>) -> Result<Self, OAuthError> {
        Self::from_pairs(form_urlencoded::parse(query.unwrap_or("").as_bytes()))
    }

    fn from_pairs<'a>(
        pairs: impl Iterator<Item = (std::borrow::Cow<'a, str>, std::borrow::Cow<'a, str>)>,
    ) -> Result<Self, OAuthError> {
        let mut map = HashMap::new();
        for (k, v) in pairs {
            if v.is_empty() {
                continue;
            }
            if map.insert(k.to_string(), v.into_owned()).is_some() {
                return Err(OAuthError::invalid_request(format!(
                    "the parameter {:?} appears more than once",
                    truncate(&k, 40)
                )));
            }
        }
        Ok(FormParams(map))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub fn require(&self, name: &str) -> Result<&str, OAuthError> {
        self.get(name)
            .ok_or_else(|| OAuthError::invalid_request(format!("{name} is required")))
    }
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// A client that proved who it is at a token-type endpoint.
pub struct CallingClient {
    pub client: OAuthClient,
    /// `true` when it presented its secret; `false` for a public client naming itself.
    pub authenticated: bool,
}

/// Client authentication (RFC 6749 §2.3): HTTP Basic (`client_secret_basic`, the id and the
/// secret form-encoded first), or `client_id` and `client_secret` in the body
/// (`client_secret_post`), never both. A public client sends its `client_id` only.
pub async fn authenticate_client(
    state: &AppState,
    headers: &HeaderMap,
    params: &FormParams,
) -> Result<CallingClient, OAuthError> {
    let (id, secret) = match headers.get(header::AUTHORIZATION) {
        Some(v) => {
            if params.get("client_secret").is_some() {
                return Err(OAuthError::invalid_request(
                    "use one client authentication method, not two",
                ));
            }
            let (id, secret) = basic_credentials(v)
                .ok_or_else(|| OAuthError::invalid_client("malformed Basic credentials"))?;
            if params.get("client_id").is_some_and(|body_id| body_id != id) {
                return Err(OAuthError::invalid_client(
                    "client_id differs from the authenticated client",
                ));
            }
            (id, Some(secret))
        }
        None => {
            let id = params
                .get("client_id")
                .ok_or_else(|| OAuthError::invalid_client("client authentication is required"))?;
            (
                id.to_owned(),
                params.get("client_secret").map(str::to_owned),
            )
        }
    };
    let client = find_client(state, &id)
        .await?
        .ok_or_else(|| OAuthError::invalid_client("unknown client or wrong secret"))?;
    match (&client.secret_hash, secret) {
        (Some(hash), Some(secret)) if secret_matches(&secret, hash) => Ok(CallingClient {
            client,
            authenticated: true,
        }),
        (None, None) => Ok(CallingClient {
            client,
            authenticated: false,
        }),
        (None, Some(_)) => Err(OAuthError::invalid_client(
            "this is a public client: it has no secret",
        )),
        _ => Err(OAuthError::invalid_client("unknown client or wrong secret")),
    }
}

fn basic_credentials(value: &HeaderValue) -> Option<(String, String)> {
    let value = value.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let unescape = |s: &str| -> String {
        form_urlencoded::parse(format!("v={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Some((unescape(id), unescape(secret)))
}

/// A client by its public id, in any account; `None` for an unknown or malformed id.
pub async fn find_client(state: &AppState, id: &str) -> Result<Option<OAuthClient>, OAuthError> {
    let Some(id) = ClientId::parse(id) else {
        return Ok(None);
    };
    match state.store.get_oauth_client(None, &id).await {
        Ok(c) => Ok(Some(c)),
        Err(StoreError::NotFound) => Ok(None),
        Err(err) => Err(err.into()),
    }
}

/// Puts access tokens on the revocation feed, each until it would have expired anyway.
pub async fn deny_access_tokens(
    state: &AppState,
    tokens: Vec<IssuedAccessToken>,
) -> Result<(), StoreError> {
    for t in tokens {
        crate::revocation::publish(state, RevocationKind::Token, t.jti, Some(t.expires_at)).await?;
    }
    Ok(())
}
