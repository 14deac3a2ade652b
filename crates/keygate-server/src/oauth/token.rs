//! `POST /oauth/token` (RFC 6749 §3.2): the authorization code grant (with PKCE, RFC 7636),
//! refresh tokens (rotated at every use, RFC 9700 §4.14.2) and client credentials. Anything
//! else, the password and implicit grants included, is `unsupported_grant_type`.
//!
//! Replays are treated as theft: a code presented a second time revokes the grant its first
//! redemption started, and a refresh token presented after it was rotated revokes its whole
//! grant; either way the grant's access tokens go on the revocation feed.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use keygate_core::oauth::{generate_secret, secret_hash, verify_pkce, ScopeSet, SecretKind};
use keygate_core::{AccountId, ClientId, GrantId};
use keygate_store::{AccountStatus, IssuedAccessToken, OAuthGrant, RefreshToken, StoreError};
use keygate_token::AccessClaims;
use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::{
    authenticate_client, deny_access_tokens, no_store, CallingClient, FormParams, OAuthError,
};
use crate::service::audit::{self, action, AuditEvent};
use crate::service::now;
use crate::state::AppState;

/// A successful token response (RFC 6749 §5.1).
#[derive(Serialize, ToSchema)]
pub struct TokenOut {
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// Opaque; absent for client credentials.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// The scopes granted, space-separated.
    pub scope: String,
}

#[utoipa::path(post, path = "/oauth/token", tag = "oauth",
    request_body(content_type = "application/x-www-form-urlencoded", description = "grant_type and the grant's parameters (RFC 6749)"),
    responses((status = 200, body = TokenOut), (status = 400, description = "RFC 6749 §5.2 error"), (status = 401, description = "invalid_client")))]
pub async fn token(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let params = FormParams::parse(&headers, &body)?;
    let grant_type = params.require("grant_type")?;
    if !matches!(
        grant_type,
        "authorization_code" | "refresh_token" | "client_credentials"
    ) {
        return Err(OAuthError::unsupported_grant_type(
            "supported grant types: authorization_code, refresh_token, client_credentials",
        ));
    }
    let caller = authenticate_client(&state, &headers, &params).await?;
    let out = match grant_type {
        "authorization_code" => authorization_code(&state, &caller, &params).await?,
        "refresh_token" => refresh_token(&state, &caller, &params).await?,
        _ => client_credentials(&state, &caller, &params).await?,
    };
    Ok((no_store(), axum::Json(out)).into_response())
}

/// A signed access token and its record.
pub struct NewAccessToken {
    pub token: String,
    pub record: IssuedAccessToken,
    pub claims: AccessClaims,
}

/// Signs an RFC 9068 access token. `sub` is the user, or the client for client credentials.
pub fn new_access_token(
    state: &AppState,
    client: &ClientId,
    account: &AccountId,
    sub: &str,
    scope: &ScopeSet,
    grant: Option<&GrantId>,
    at: OffsetDateTime,
) -> Result<NewAccessToken, OAuthError> {
    let ttl = state.tokens.ttl;
    let issuer = state.tokens.oauth_issuer().to_owned();
    let claims = AccessClaims {
        aud: issuer.clone(),
        iss: issuer,
        sub: sub.to_owned(),
        iat: at.unix_timestamp(),
        exp: at.unix_timestamp() + ttl.as_secs() as i64,
        jti: format!("tok_{}", uuid::Uuid::new_v4().simple()),
        client_id: client.clone(),
        scope: scope.to_string(),
        account_id: account.clone(),
    };
    let token = state.tokens.sign_access(&claims)?;
    let record = IssuedAccessToken {
        jti: claims.jti.clone(),
        client_id: client.clone(),
        grant_id: grant.cloned(),
        expires_at: at + ttl,
    };
    Ok(NewAccessToken {
        token,
        record,
        claims,
    })
}

fn new_refresh_token(
    state: &AppState,
    grant: &GrantId,
    at: OffsetDateTime,
) -> (String, RefreshToken) {
    let plain = generate_secret(SecretKind::RefreshToken);
    let record = RefreshToken {
        token_hash: secret_hash(&plain),
        grant_id: grant.clone(),
        created_at: at,
        expires_at: at + state.config.oauth_refresh_ttl,
        used_at: None,
    };
    (plain, record)
}

fn token_out(state: &AppState, access: NewAccessToken, refresh: Option<String>) -> TokenOut {
    TokenOut {
        access_token: access.token,
        token_type: "Bearer",
        expires_in: state.tokens.ttl.as_secs(),
        refresh_token: refresh,
        scope: access.claims.scope,
    }
}

/// The scope a token request asks for: none means all of `allowed`; asking for more is
/// `invalid_scope`.
fn requested_scope(params: &FormParams, allowed: &ScopeSet) -> Result<ScopeSet, OAuthError> {
    let Some(raw) = params.get("scope") else {
        return Ok(allowed.clone());
    };
    let asked = ScopeSet::parse(raw).map_err(|e| OAuthError::invalid_scope(e.to_string()))?;
    if asked.is_empty() || !asked.is_subset(allowed) {
        return Err(OAuthError::invalid_scope(format!(
            "the scope may include only: {allowed}"
        )));
    }
    Ok(asked)
}

fn stored_scope(s: &str) -> Result<ScopeSet, OAuthError> {
    ScopeSet::parse(s)
        .map_err(|_| OAuthError::server_error(anyhow::anyhow!("a stored scope is unreadable")))
}

/// Revokes a grant after a replay, and says so.
async fn revoke_after_replay(
    state: &AppState,
    account: &AccountId,
    grant: Option<&GrantId>,
    what: &str,
) -> Result<OAuthError, OAuthError> {
    if let Some(grant) = grant {
        let issued = state.store.revoke_oauth_grant(grant, now()).await?;
        let denied = issued.len();
        deny_access_tokens(state, issued).await?;
        tracing::warn!(grant_id = %grant, "OAuth {what} replayed: the grant is revoked");
        audit::record(
            state,
            AuditEvent::new(action::OAUTH_GRANT_REVOKED, "oauth_grant", grant)
                .account(Some(account))
                .details(serde_json::json!({"reason": format!("{what} replayed"), "tokens_denied": denied})),
        )
        .await;
    }
    Ok(OAuthError::invalid_grant(format!(
        "this {what} was already used; the tokens issued with it are revoked"
    )))
}

async fn authorization_code(
    state: &AppState,
    caller: &CallingClient,
    params: &FormParams,
) -> Result<TokenOut, OAuthError> {
    let client = &caller.client;
    let code_hash = secret_hash(params.require("code")?);
    let redirect_uri = params.require("redirect_uri")?;
    let code = match state.store.get_authorization_code(&code_hash).await {
        Ok(c) => c,
        Err(StoreError::NotFound) => return Err(OAuthError::invalid_grant("unknown code")),
        Err(err) => return Err(err.into()),
    };
    if code.client_id != client.id {
        return Err(OAuthError::invalid_grant(
            "this code was issued to another client",
        ));
    }
    if code.used_at.is_some() {
        return Err(
            revoke_after_replay(state, &code.account_id, code.grant_id.as_ref(), "code").await?,
        );
    }
    let at = now();
    if code.expires_at <= at {
        return Err(OAuthError::invalid_grant("the code has expired"));
    }
    if code.redirect_uri != redirect_uri {
        return Err(OAuthError::invalid_grant(
            "redirect_uri differs from the authorization request's",
        ));
    }
    match (&code.code_challenge, params.get("code_verifier")) {
        (Some(challenge), Some(verifier)) => verify_pkce(verifier, challenge)
            .map_err(|e| OAuthError::invalid_grant(e.to_string()))?,
        (Some(_), None) => return Err(OAuthError::invalid_grant("code_verifier is required")),
        (None, Some(_)) => {
            return Err(OAuthError::invalid_grant(
                "the authorization request had no code_challenge",
            ))
        }
        (None, None) => {}
    }
    // The user may have been deleted since they consented.
    match state.store.get_user(&code.account_id, &code.user_id).await {
        Ok(_) => {}
        Err(StoreError::NotFound) => {
            return Err(OAuthError::invalid_grant("the user no longer exists"))
        }
        Err(err) => return Err(err.into()),
    }
    let scope = stored_scope(&code.scope)?;
    let grant = OAuthGrant {
        id: GrantId::generate(),
        client_id: client.id.clone(),
        account_id: code.account_id.clone(),
        user_id: code.user_id.clone(),
        scope: code.scope.clone(),
        created_at: at,
        revoked_at: None,
    };
    let (refresh_plain, refresh) = new_refresh_token(state, &grant.id, at);
    let access = new_access_token(
        state,
        &client.id,
        &code.account_id,
        code.user_id.as_str(),
        &scope,
        Some(&grant.id),
        at,
    )?;
    let won = state
        .store
        .redeem_authorization_code(&code_hash, &grant, Some(&refresh), &access.record)
        .await?;
    if !won {
        // Another request redeemed it just now: that is a replay too.
        let code = state.store.get_authorization_code(&code_hash).await?;
        return Err(
            revoke_after_replay(state, &code.account_id, code.grant_id.as_ref(), "code").await?,
        );
    }
    tracing::info!(client_id = %client.id, grant_id = %grant.id, "OAuth code redeemed");
    Ok(token_out(state, access, Some(refresh_plain)))
}

async fn refresh_token(
    state: &AppState,
    caller: &CallingClient,
    params: &FormParams,
) -> Result<TokenOut, OAuthError> {
    let client = &caller.client;
    let old_hash = secret_hash(params.require("refresh_token")?);
    let found = match state.store.get_refresh_token(&old_hash).await {
        Ok(f) => f,
        Err(StoreError::NotFound) => {
            return Err(OAuthError::invalid_grant("unknown refresh token"))
        }
        Err(err) => return Err(err.into()),
    };
    let grant = &found.grant;
    if grant.client_id != client.id {
        return Err(OAuthError::invalid_grant(
            "this refresh token was issued to another client",
        ));
    }
    if grant.revoked_at.is_some() {
        return Err(OAuthError::invalid_grant("this refresh token was revoked"));
    }
    if found.token.used_at.is_some() {
        return Err(revoke_after_replay(
            state,
            &grant.account_id,
            Some(&grant.id),
            "refresh token",
        )
        .await?);
    }
    let at = now();
    if found.token.expires_at <= at {
        return Err(OAuthError::invalid_grant("the refresh token has expired"));
    }
    let scope = requested_scope(params, &stored_scope(&grant.scope)?)?;
    match state
        .store
        .get_user(&grant.account_id, &grant.user_id)
        .await
    {
        Ok(_) => {}
        Err(StoreError::NotFound) => {
            return Err(OAuthError::invalid_grant("the user no longer exists"))
        }
        Err(err) => return Err(err.into()),
    }
    let (refresh_plain, next) = new_refresh_token(state, &grant.id, at);
    let access = new_access_token(
        state,
        &client.id,
        &grant.account_id,
        grant.user_id.as_str(),
        &scope,
        Some(&grant.id),
        at,
    )?;
    if !state
        .store
        .rotate_refresh_token(&old_hash, &next, &access.record)
        .await?
    {
        return Err(revoke_after_replay(
            state,
            &grant.account_id,
            Some(&grant.id),
            "refresh token",
        )
        .await?);
    }
    Ok(token_out(state, access, Some(refresh_plain)))
}

async fn client_credentials(
    state: &AppState,
    caller: &CallingClient,
    params: &FormParams,
) -> Result<TokenOut, OAuthError> {
    let client = &caller.client;
    if !caller.authenticated {
        return Err(OAuthError::unauthorized_client(
            "client credentials need a confidential client",
        ));
    }
    let scope = requested_scope(params, &stored_scope(&client.scope)?)?;
    let account = match state.store.get_account(&client.account_id).await {
        Ok(a) => a,
        Err(StoreError::NotFound) => return Err(OAuthError::invalid_client("unknown client")),
        Err(err) => return Err(err.into()),
    };
    if account.status != AccountStatus::Active {
        return Err(OAuthError::unauthorized_client(
            "the client's account is disabled",
        ));
    }
    let at = now();
    let access = new_access_token(
        state,
        &client.id,
        &client.account_id,
        client.id.as_str(),
        &scope,
        None,
        at,
    )?;
    state.store.record_access_token(&access.record).await?;
    Ok(token_out(state, access, None))
}
