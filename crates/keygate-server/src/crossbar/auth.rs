//! `PUT /v2/api_auth`, `PUT /v2/user_auth` and `/v2/token_auth`: seed 000's two-step flow —
//! exchange a credential for an auth token, then send it as `X-Auth-Token`.

use axum::extract::State;
use keygate_core::Scope;
use keygate_store::{CredentialDigest, StoreError};
use keygate_token::AuthMethod;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::{Cb, CbError, CbResult, Data, Envelope};
use crate::http::auth::{authenticate_key, user_scope, Principal, Reader};
use crate::http::client::ClientInfo;
use crate::http::ApiError;
use crate::ratelimit::authentication_failed;
use crate::service::audit::{self, action, Actor, AuditEvent};
use crate::service::passwords::credential_lookup;
use crate::state::AppState;
use crate::tokens::{issue, issue_for_key, revoke_token, IssuedToken};

#[derive(Deserialize, ToSchema)]
pub struct ApiAuthIn {
    pub api_key: String,
}

#[derive(Deserialize, ToSchema)]
pub struct UserAuthIn {
    /// Hex MD5 (or SHA-1) of `"username:password"`, the username lower-cased.
    pub credentials: String,
    pub account_name: Option<String>,
    pub account_id: Option<String>,
    /// `md5` (default) or `sha`; inferred from the digest's length when absent.
    pub method: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct TokenData {
    pub account_id: String,
    pub owner_id: String,
    pub account_name: Option<String>,
    pub method: String,
    pub key_id: Option<String>,
    pub scope: String,
    pub issued_at: i64,
    pub expires_at: i64,
}

fn token_envelope(issued: IssuedToken, account_name: Option<String>) -> Envelope {
    let c = &issued.claims;
    let data = TokenData {
        account_id: c.account_id.to_string(),
        owner_id: c.owner_id.to_string(),
        account_name,
        method: method_name(c.method).into(),
        key_id: c.key_id.as_ref().map(ToString::to_string),
        scope: c.scope.to_string(),
        issued_at: c.iat,
        expires_at: c.exp,
    };
    let mut env = Envelope::ok(data, None).created();
    env.auth_token = Some(issued.token);
    env
}

fn method_name(m: AuthMethod) -> &'static str {
    match m {
        AuthMethod::ApiKey => "api_key",
        AuthMethod::UserAuth => "user_auth",
    }
}

#[utoipa::path(put, path = "/v2/api_auth", tag = "crossbar", security(()),
    request_body(content = serde_json::Value, description = "{\"data\": {\"api_key\": \"…\"}}"),
    responses((status = 201, description = "`auth_token` and `data.account_id`, `data.owner_id`"), (status = 401)))]
pub async fn api_auth(
    State(state): State<AppState>,
    client: ClientInfo,
    Data(body): Data<ApiAuthIn>,
) -> CbResult {
    let ip = Some(client.addr);
    let who = match authenticate_key(&state, body.api_key.trim(), ip).await {
        Ok(who) => {
            crate::http::request_id::set_principal(&who);
            who
        }
        Err(err @ ApiError::Unauthorized(_)) => {
            return Err(authentication_failed(&state, ip, err).await.into())
        }
        Err(err) => return Err(err.into()),
    };
    let issued = issue_for_key(&state, &who)?;
    Ok(token_envelope(
        issued,
        who.account().map(|a| a.name.clone()),
    ))
}

#[utoipa::path(put, path = "/v2/user_auth", tag = "crossbar", security(()),
    request_body(content = serde_json::Value, description = "{\"data\": {\"credentials\": md5(\"username:password\"), \"account_name\": \"…\"}}"),
    responses((status = 201, description = "`auth_token` and `data.account_id`, `data.owner_id`"), (status = 401)))]
pub async fn user_auth(
    State(state): State<AppState>,
    client: ClientInfo,
    Data(body): Data<UserAuthIn>,
) -> CbResult {
    let ip = Some(client.addr);
    if crate::ratelimit::failures_exhausted(&state, ip).await {
        return Err(CbError(
            authentication_failed(&state, ip, ApiError::unauthorized("invalid credentials")).await,
        ));
    }
    let creds = body.credentials.trim().to_ascii_lowercase();
    let digest = match (body.method.as_deref(), creds.len()) {
        (Some("md5"), _) | (None, 32) => CredentialDigest::Md5,
        (Some("sha" | "sha1"), _) | (None, 40) => CredentialDigest::Sha1,
        _ => {
            return Err(CbError(ApiError::invalid_field(
                "credentials",
                "must be the hex MD5 or SHA-1 of \"username:password\"",
            )))
        }
    };
    if !creds.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(CbError(ApiError::invalid_field(
            "credentials",
            "must be hex",
        )));
    }
    let unauthorized = || ApiError::unauthorized("invalid credentials");
    let account = match (&body.account_id, &body.account_name) {
        (Some(id), _) => match keygate_core::AccountId::parse(id) {
            Some(id) => state.store.get_account(&id).await,
            None => Err(StoreError::NotFound),
        },
        (None, Some(name)) => state.store.find_account_by_name(name.trim()).await,
        (None, None) => {
            return Err(CbError(ApiError::invalid_field(
                "account_name",
                "is required",
            )));
        }
    };
    let account = match account {
        Ok(a) => a,
        Err(StoreError::NotFound) => {
            let event = AuditEvent::without_object(action::LOGIN_FAILED, "user").details(json!({
                "method": "user_auth",
                "reason": "unknown account",
                "account_name": body.account_name,
            }));
            audit::record(&state, event).await;
            return Err(authentication_failed(&state, ip, unauthorized())
                .await
                .into());
        }
        Err(e) => return Err(e.into()),
    };
    let lookup = credential_lookup(&state.tokens.credential_pepper(), digest, &creds);
    let user = match state
        .store
        .find_user_by_credential(&account.id, digest, &lookup)
        .await
    {
        Ok(u) => u,
        Err(StoreError::NotFound) => {
            let event = AuditEvent::without_object(action::LOGIN_FAILED, "user")
                .account(Some(&account.id))
                .details(json!({"method": "user_auth", "reason": "wrong credentials"}));
            audit::record(&state, event).await;
            return Err(authentication_failed(&state, ip, unauthorized())
                .await
                .into());
        }
        Err(e) => return Err(e.into()),
    };
    if account.status != keygate_store::AccountStatus::Active {
        let event = AuditEvent::new(action::LOGIN_FAILED, "user", &user.id)
            .account(Some(&account.id))
            .actor(Actor::user(&user.id))
            .details(json!({"method": "user_auth", "reason": "account disabled"}));
        audit::record(&state, event).await;
        return Err(CbError(ApiError::unauthorized("This account is disabled")));
    }
    let issued = issue(
        &state,
        AuthMethod::UserAuth,
        account.id.clone(),
        user.id.clone(),
        None,
        user_scope(user.role),
    )?;
    tracing::info!(account_id = %account.id, user_id = %user.id, "user authenticated");
    let event = AuditEvent::new(action::LOGIN_SUCCEEDED, "user", &user.id)
        .account(Some(&account.id))
        .actor(Actor::user(&user.id))
        .details(json!({"method": "user_auth", "username": user.username}));
    audit::record(&state, event).await;
    Ok(token_envelope(issued, Some(account.name)))
}

fn require_token(who: &Principal) -> Result<&crate::http::auth::TokenInUse, CbError> {
    who.token.as_deref().ok_or_else(|| {
        CbError(ApiError::invalid(
            "this request needs an auth token in X-Auth-Token",
        ))
    })
}

#[utoipa::path(get, path = "/v2/token_auth", tag = "crossbar",
    responses((status = 200, description = "what the token is: account, owner, method, expiry")))]
pub async fn token_info(Cb(Reader(who)): Cb<Reader>) -> CbResult {
    let token = require_token(&who)?;
    let c = &token.claims;
    let data = json!({
        "account_id": c.account_id,
        "owner_id": c.owner_id,
        "method": method_name(c.method),
        "key_id": c.key_id,
        "scope": who.scope.max(Scope::Read).to_string(),
        "issued_at": c.iat,
        "expires_at": c.exp,
        "id": c.jti,
    });
    Ok(Envelope::ok(data, Some(&who)))
}

#[utoipa::path(delete, path = "/v2/token_auth", tag = "crossbar",
    responses((status = 200, description = "the token is logged out on every node")))]
pub async fn logout(State(state): State<AppState>, Cb(Reader(who)): Cb<Reader>) -> CbResult {
    let token = require_token(&who)?;
    revoke_token(&state, &token.claims).await?;
    Ok(Envelope::ok(
        json!({"message": "the auth token is revoked"}),
        None,
    ))
}
