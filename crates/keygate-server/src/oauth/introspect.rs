//! `POST /oauth/introspect` (RFC 7662) and `POST /oauth/revoke` (RFC 7009).
//!
//! Introspection needs a confidential client, and answers only about tokens of clients of the
//! same account (its own integrations, or a resource server it registered for them); about
//! anything else, as about unknown, expired or revoked tokens, it says `{"active": false}`.
//! Revocation takes a client's own tokens: an access token's `jti` goes on the revocation
//! feed, a refresh token revokes its whole grant. Unknown tokens, and other clients' tokens,
//! get the same 200 (§2.2), so the endpoint tells nothing about tokens a caller does not hold.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use keygate_core::oauth::secret_hash;
use keygate_store::{RevocationKind, StoreError};
use serde_json::{json, Value};

use super::{authenticate_client, deny_access_tokens, no_store, FormParams, OAuthError};
use crate::service::now;
use crate::state::AppState;
use crate::tokens::looks_like_jwt;

#[utoipa::path(post, path = "/oauth/introspect", tag = "oauth",
    request_body(content_type = "application/x-www-form-urlencoded", description = "token, token_type_hint (RFC 7662)"),
    responses((status = 200, description = "{\"active\": …} and the token's claims"), (status = 401, description = "invalid_client")))]
pub async fn introspect(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let params = FormParams::parse(&headers, &body)?;
    let caller = authenticate_client(&state, &headers, &params).await?;
    if !caller.authenticated {
        return Err(OAuthError::invalid_client(
            "introspection needs a confidential client",
        ));
    }
    let token = params.require("token")?;
    let answer = describe(&state, &caller.client.account_id, token)
        .await?
        .unwrap_or_else(|| json!({"active": false}));
    Ok((no_store(), axum::Json(answer)).into_response())
}

/// What introspection may say about `token` to a client of `account`; `None`: inactive.
async fn describe(
    state: &AppState,
    account: &keygate_core::AccountId,
    token: &str,
) -> Result<Option<Value>, OAuthError> {
    if looks_like_jwt(token) {
        // Checked as a request would be: signature, expiry, deny-list, then the user or the
        // account behind it still being there and enabled.
        let Ok(principal) = crate::http::auth::authenticate_access_token(state, token).await else {
            return Ok(None);
        };
        let Some(oauth) = principal.oauth.as_ref() else {
            return Ok(None);
        };
        let c = &oauth.claims;
        let Some(client) = super::find_client(state, c.client_id.as_str()).await? else {
            return Ok(None);
        };
        if &client.account_id != account {
            return Ok(None);
        }
        return Ok(Some(json!({
            "active": true,
            "scope": c.scope,
            "client_id": c.client_id,
            "sub": c.sub,
            "aud": c.aud,
            "iss": c.iss,
            "exp": c.exp,
            "iat": c.iat,
            "jti": c.jti,
            "token_type": "Bearer",
            "account_id": c.account_id,
        })));
    }
    let found = match state.store.get_refresh_token(&secret_hash(token)).await {
        Ok(f) => f,
        Err(StoreError::NotFound) => return Ok(None),
        Err(err) => return Err(err.into()),
    };
    let active = found.token.used_at.is_none()
        && found.grant.revoked_at.is_none()
        && found.token.expires_at > now();
    let Some(client) = super::find_client(state, found.grant.client_id.as_str()).await? else {
        return Ok(None);
    };
    if !active || &client.account_id != account {
        return Ok(None);
    }
    Ok(Some(json!({
        "active": true,
        "scope": found.grant.scope,
        "client_id": found.grant.client_id,
        "sub": found.grant.user_id,
        "exp": found.token.expires_at.unix_timestamp(),
        "iat": found.token.created_at.unix_timestamp(),
        "token_type": "refresh_token",
        "account_id": found.grant.account_id,
    })))
}

#[utoipa::path(post, path = "/oauth/revoke", tag = "oauth",
    request_body(content_type = "application/x-www-form-urlencoded", description = "token, token_type_hint (RFC 7009)"),
    responses((status = 200, description = "revoked, or nothing to revoke"), (status = 401, description = "invalid_client")))]
pub async fn revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let params = FormParams::parse(&headers, &body)?;
    let caller = authenticate_client(&state, &headers, &params).await?;
    let token = params.require("token")?;
    let client = &caller.client;
    if looks_like_jwt(token) {
        if let Ok(claims) = state.tokens.verify_access(token) {
            if claims.client_id == client.id {
                let expires =
                    time::OffsetDateTime::from_unix_timestamp(claims.exp).unwrap_or_else(|_| now());
                crate::revocation::publish(
                    &state,
                    RevocationKind::Token,
                    claims.jti.clone(),
                    Some(expires),
                )
                .await?;
                tracing::info!(client_id = %client.id, "OAuth access token revoked");
            }
        }
    } else {
        match state.store.get_refresh_token(&secret_hash(token)).await {
            Ok(found) if found.grant.client_id == client.id => {
                let issued = state
                    .store
                    .revoke_oauth_grant(&found.grant.id, now())
                    .await?;
                deny_access_tokens(&state, issued).await?;
                tracing::info!(client_id = %client.id, grant_id = %found.grant.id, "OAuth grant revoked");
            }
            Ok(_) | Err(StoreError::NotFound) => {}
            Err(err) => return Err(err.into()),
        }
    }
    Ok((no_store(), axum::http::StatusCode::OK).into_response())
}
