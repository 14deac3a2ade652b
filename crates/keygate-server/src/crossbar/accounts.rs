//! `/v2/accounts/{id}` and its `api_key`. Crossbar refuses another account's resources with 403.

use axum::extract::State;
use keygate_core::AccountId;
use keygate_store::{Account, AccountStatus, KeyStatus};
use serde::Deserialize;
use serde_json::{json, Value};
use time::OffsetDateTime;

use super::{Cb, CbError, CbResult, Data, Envelope};
use crate::http::auth::{Admin, Principal, Reader};
use crate::http::extract::PathParams;
use crate::http::ApiError;
use crate::service::accounts::{self as account_svc, validate_account_name};
use crate::service::keys::roll_key;
use crate::service::{now, rfc3339, users::validate_email};
use crate::state::AppState;

/// The account `raw` names, if the caller may see it: its own, or any for an operator.
pub(super) async fn visible_account(
    state: &AppState,
    who: &Principal,
    raw: &str,
) -> Result<Account, CbError> {
    let id = AccountId::parse(raw).ok_or_else(|| CbError(ApiError::not_found("Account")))?;
    if !who.is_operator() && who.account_id.as_ref() != Some(&id) {
        return Err(CbError(ApiError::forbidden(
            "You do not have access to this account",
        )));
    }
    state
        .store
        .get_account(&id)
        .await
        .map_err(|_| CbError(ApiError::not_found("Account")))
}

pub(super) fn account_doc(a: &Account) -> Value {
    json!({
        "id": a.id,
        "name": a.name,
        "email": a.email,
        "plan": a.plan,
        "enabled": a.status == AccountStatus::Active,
        "created": rfc3339(a.created_at),
        "updated": rfc3339(a.updated_at),
    })
}

#[derive(Deserialize)]
pub struct AccountUpdate {
    pub name: Option<String>,
    pub email: Option<String>,
}

#[utoipa::path(get, path = "/v2/accounts/{account_id}", tag = "crossbar", params(("account_id" = String, Path)),
    responses((status = 200, description = "the account"), (status = 403), (status = 404)))]
pub async fn get_account(
    State(state): State<AppState>,
    Cb(Reader(who)): Cb<Reader>,
    PathParams(id): PathParams<String>,
) -> CbResult {
    let account = visible_account(&state, &who, &id).await?;
    Ok(Envelope::ok(account_doc(&account), Some(&who)))
}

#[utoipa::path(post, path = "/v2/accounts/{account_id}", tag = "crossbar", params(("account_id" = String, Path)),
    request_body(content = serde_json::Value, description = "{\"data\": {\"name\": …, \"email\": …}}"),
    responses((status = 200, description = "the updated account"), (status = 400), (status = 403)))]
pub async fn update_account(
    State(state): State<AppState>,
    Cb(Admin(who)): Cb<Admin>,
    PathParams(id): PathParams<String>,
    Data(change): Data<AccountUpdate>,
) -> CbResult {
    let before = visible_account(&state, &who, &id).await?;
    let mut account = before.clone();
    if let Some(name) = change.name {
        account.name = validate_account_name(&name)?;
    }
    if let Some(email) = change.email {
        account.email = validate_email(&email)?;
    }
    account.updated_at = now();
    account_svc::update_account(&state, &before, &account).await?;
    Ok(Envelope::ok(account_doc(&account), Some(&who)))
}

#[utoipa::path(get, path = "/v2/accounts/{account_id}/api_key", tag = "crossbar", params(("account_id" = String, Path)),
    responses((status = 200, description = "the account's API key: its id, start and last four (the key itself is shown only when created)")))]
pub async fn get_api_key(
    State(state): State<AppState>,
    Cb(Admin(who)): Cb<Admin>,
    PathParams(id): PathParams<String>,
) -> CbResult {
    let account = visible_account(&state, &who, &id).await?;
    let data = match &account.api_key_id {
        Some(key_id) => match state.store.get_key(Some(&account.id), key_id).await {
            Ok(k) => json!({
                "api_key_id": k.id,
                "start": k.start,
                "last4": k.last4,
                "status": match k.status_at(OffsetDateTime::now_utc()) {
                    KeyStatus::Active => "active", KeyStatus::Revoked => "revoked", KeyStatus::Expired => "expired",
                },
                "created": rfc3339(k.created_at),
                "note": "the key itself is shown only when it is created: PUT re-creates it",
            }),
            Err(_) => json!({"api_key_id": null}),
        },
        None => json!({"api_key_id": null}),
    };
    Ok(Envelope::ok(data, Some(&who)))
}

#[utoipa::path(put, path = "/v2/accounts/{account_id}/api_key", tag = "crossbar", params(("account_id" = String, Path)),
    responses((status = 201, description = "`data.api_key`: the new key, shown once; the old one stops working at once")))]
pub async fn recreate_api_key(
    State(state): State<AppState>,
    Cb(Admin(who)): Cb<Admin>,
    PathParams(id): PathParams<String>,
) -> CbResult {
    let mut account = visible_account(&state, &who, &id).await?;
    let current = match &account.api_key_id {
        Some(key_id) => state.store.get_key(Some(&account.id), key_id).await.ok(),
        None => None,
    };
    let (new, generated) = match current
        .filter(|k| k.status_at(OffsetDateTime::now_utc()) == KeyStatus::Active)
    {
        Some(old) => roll_key(&state, old, 0, who.user_id.as_ref()).await?,
        None => {
            let spec = crate::service::keys::KeySpec {
                name: "Account API key".into(),
                description: "Created by PUT /v2/accounts/{id}/api_key".into(),
                scope: who.scope,
                environment: keygate_core::Environment::Live,
                expires_at: None,
                metadata: json!({}),
                rate_limit: None,
                permissions: Vec::new(),
            };
            crate::service::keys::create_key(&state, Some(&account.id), who.user_id.as_ref(), spec)
                .await?
        }
    };
    account.api_key_id = Some(new.id.clone());
    account.updated_at = now();
    state
        .store
        .update_account(&account)
        .await
        .map_err(ApiError::from)?;
    let data = json!({ "api_key": generated.into_plaintext(), "api_key_id": new.id });
    Ok(Envelope::ok(data, Some(&who)).created())
}
