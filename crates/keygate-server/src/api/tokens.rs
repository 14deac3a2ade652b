//! `/api/v1/auth/token`: the native twin of `/v2/api_auth` — an API key in, a short-lived auth
//! token out — and logging a token out. `/.well-known/jwks.json` publishes the keys that verify
//! tokens offline.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;

use crate::http::auth::Reader;
use crate::http::error::ApiResult;
use crate::http::ApiError;
use crate::state::AppState;
use crate::tokens::{issue_for_key, revoke_token};

#[derive(Serialize, ToSchema)]
pub struct TokenOut {
    /// A JWT (RS256 by default); send it as `Authorization: Bearer …` or `X-Auth-Token`.
    pub token: String,
    pub token_type: &'static str,
    /// Seconds until it expires.
    pub expires_in: i64,
    /// Unix seconds.
    pub expires_at: i64,
    pub account_id: String,
    pub owner_id: String,
    pub key_id: Option<String>,
    pub scope: String,
}

#[utoipa::path(post, path = "/api/v1/auth/token", tag = "auth",
    responses((status = 200, body = TokenOut), (status = 400, description = "a token was presented, not a key"),
              (status = 401), (status = 403, description = "operator keys are not exchanged")))]
pub async fn create_token(
    State(state): State<AppState>,
    Reader(who): Reader,
) -> ApiResult<axum::Json<TokenOut>> {
    let issued = issue_for_key(&state, &who)?;
    let c = &issued.claims;
    Ok(axum::Json(TokenOut {
        token_type: "Bearer",
        expires_in: c.exp - c.iat,
        expires_at: c.exp,
        account_id: c.account_id.to_string(),
        owner_id: c.owner_id.to_string(),
        key_id: c.key_id.as_ref().map(ToString::to_string),
        scope: c.scope.to_string(),
        token: issued.token,
    }))
}

#[derive(Serialize, ToSchema)]
pub struct TokenRevokedOut {
    pub revoked: bool,
}

#[utoipa::path(delete, path = "/api/v1/auth/token", tag = "auth",
    responses((status = 200, body = TokenRevokedOut), (status = 400, description = "no token was presented")))]
pub async fn delete_token(
    State(state): State<AppState>,
    Reader(who): Reader,
) -> ApiResult<axum::Json<TokenRevokedOut>> {
    let token = who
        .token
        .as_ref()
        .ok_or_else(|| ApiError::invalid("Send the auth token to log out"))?;
    revoke_token(&state, &token.claims).await?;
    Ok(axum::Json(TokenRevokedOut { revoked: true }))
}

#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "auth", security(()),
    responses((status = 200, description = "the JSON Web Key Set that verifies auth tokens")))]
pub async fn jwks(State(state): State<AppState>) -> impl IntoResponse {
    let body = serde_json::to_string(&state.tokens.current().jwks)
        .unwrap_or_else(|_| "{\"keys\":[]}".into());
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
}
