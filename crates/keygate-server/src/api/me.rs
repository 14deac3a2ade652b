//! `GET /api/v1/auth/me`: who a credential belongs to. Seed 002's SDK reads `email` at the top
//! level.

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::accounts::AccountOut;
use super::keys::KeyOut;
use crate::http::auth::Reader;
use crate::http::error::ApiResult;
use crate::state::AppState;

#[derive(Serialize, ToSchema)]
pub struct MeOut {
    /// The user's id; `null` for an operator key or a key whose creator was deleted.
    pub id: Option<String>,
    pub email: Option<String>,
    pub username: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub role: Option<String>,
    pub operator: bool,
    pub account: Option<AccountOut>,
    /// The key in use, or the key the auth token was minted from; `null` for a user's token.
    pub key: Option<KeyOut>,
    /// What this credential may do: `read`, `write` or `admin`.
    pub scope: String,
    /// How the caller authenticated: `api_key`, `auth_token` or `oauth_access_token`.
    pub credential: &'static str,
}

#[utoipa::path(get, path = "/api/v1/auth/me", tag = "auth",
    responses((status = 200, body = MeOut), (status = 401, description = "invalid credential")))]
pub async fn me(
    State(state): State<AppState>,
    Reader(who): Reader,
) -> ApiResult<axum::Json<MeOut>> {
    let account = who.account();
    let user = match (&who.user, &who.account_id, &who.user_id) {
        (Some(u), _, _) => Some(u.clone()),
        (None, Some(a), Some(u)) => crate::http::auth::load_user(&state, a, u).await.ok(),
        _ => None,
    };
    let user = user.as_ref().map(|u| &u.user);
    let now = time::OffsetDateTime::now_utc();
    Ok(axum::Json(MeOut {
        id: user.as_ref().map(|u| u.id.to_string()),
        email: user
            .as_ref()
            .map(|u| u.email.clone())
            .or_else(|| account.map(|a| a.email.clone())),
        username: user.as_ref().map(|u| u.username.clone()),
        first_name: user.as_ref().map(|u| u.first_name.clone()),
        last_name: user.as_ref().map(|u| u.last_name.clone()),
        role: user.as_ref().map(|u| u.role.as_str().to_owned()),
        operator: who.is_operator(),
        account: account.map(AccountOut::from),
        key: who.key.as_ref().map(|k| KeyOut::new(&k.key, now)),
        scope: who.scope.to_string(),
        credential: if who.token.is_some() {
            "auth_token"
        } else if who.oauth.is_some() {
            "oauth_access_token"
        } else {
            "api_key"
        },
    }))
}
