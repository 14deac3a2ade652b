//! `/api/v1/oauth/consents`: the clients the calling user has authorized, and taking an
//! authorization back, which ends every refresh token and access token issued under it.
//! Only a credential that speaks for a user (a key with an owner, a user's token) has consents.

use axum::extract::State;
use axum::http::StatusCode;
use keygate_core::{AccountId, ClientId, UserId};
use keygate_store::{OAuthConsent, StoreError};
use serde::Serialize;
use utoipa::ToSchema;

use crate::http::auth::{Principal, Reader, Writer};
use crate::http::error::ApiResult;
use crate::http::extract::PathParams;
use crate::http::ApiError;
use crate::service::audit::{self, action, AuditEvent};
use crate::service::{now, rfc3339};
use crate::state::AppState;

#[derive(Serialize, ToSchema)]
pub struct ConsentOut {
    pub client_id: String,
    /// The client's name, as the consent page showed it; `null` if it was since deleted.
    pub client_name: Option<String>,
    /// The scopes granted, space-separated.
    pub scope: String,
    pub created_at: String,
    pub updated_at: String,
}

fn calling_user(who: &Principal) -> ApiResult<&keygate_core::UserId> {
    who.user_id
        .as_ref()
        .ok_or_else(|| ApiError::forbidden("Consents belong to users: use a credential of a user"))
}

/// The consents `user` gave, each with its client's name (`None` if the client was deleted).
pub async fn list(
    state: &AppState,
    user: &UserId,
) -> ApiResult<Vec<(OAuthConsent, Option<String>)>> {
    let consents = state.store.list_oauth_consents(user).await?;
    let mut out = Vec::with_capacity(consents.len());
    for c in consents {
        let client_name = match state.store.get_oauth_client(None, &c.client_id).await {
            Ok(client) => Some(client.name),
            Err(StoreError::NotFound) => None,
            Err(err) => return Err(err.into()),
        };
        out.push((c, client_name));
    }
    Ok(out)
}

/// Takes back `user`'s consent to `client_id`, ends every token issued under it, and records
/// it in the audit log (under `account`, the account of the credential or session acting).
pub async fn revoke(
    state: &AppState,
    user: &UserId,
    account: Option<&AccountId>,
    client_id: &str,
) -> ApiResult<()> {
    let client = ClientId::parse(client_id).ok_or_else(|| ApiError::not_found("Consent"))?;
    let issued = match state.store.delete_oauth_consent(user, &client, now()).await {
        Ok(issued) => issued,
        Err(StoreError::NotFound) => return Err(ApiError::not_found("Consent")),
        Err(err) => return Err(err.into()),
    };
    let denied = issued.len();
    super::deny_access_tokens(state, issued).await?;
    tracing::info!(client_id = %client, "OAuth consent revoked");
    audit::record(
        state,
        AuditEvent::new(action::OAUTH_CONSENT_REVOKED, "oauth_consent", &client)
            .account(account)
            .details(serde_json::json!({"tokens_denied": denied})),
    )
    .await;
    Ok(())
}

#[utoipa::path(get, path = "/api/v1/oauth/consents", tag = "oauth",
    responses((status = 200, body = Vec<ConsentOut>), (status = 403)))]
pub async fn list_consents(
    State(state): State<AppState>,
    Reader(who): Reader,
) -> ApiResult<axum::Json<Vec<ConsentOut>>> {
    let user = calling_user(&who)?;
    let out = list(&state, user)
        .await?
        .into_iter()
        .map(|(c, client_name)| ConsentOut {
            client_id: c.client_id.to_string(),
            client_name,
            scope: c.scope,
            created_at: rfc3339(c.created_at),
            updated_at: rfc3339(c.updated_at),
        })
        .collect();
    Ok(axum::Json(out))
}

#[utoipa::path(delete, path = "/api/v1/oauth/consents/{client_id}", tag = "oauth",
    params(("client_id" = String, Path)), responses((status = 204), (status = 404)))]
pub async fn revoke_consent(
    State(state): State<AppState>,
    Writer(who): Writer,
    PathParams(client_id): PathParams<String>,
) -> ApiResult<StatusCode> {
    let user = calling_user(&who)?;
    revoke(&state, user, who.account_id.as_ref(), &client_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
