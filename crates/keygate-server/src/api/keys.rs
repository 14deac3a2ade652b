//! `/api/v1/auth/api-keys`: seed 002's programmatic key management, and the rest of the key
//! lifecycle (get, patch, roll). A key can only mint or change keys up to its own scope.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use keygate_core::{Environment, KeyId, Scope};
use keygate_store::{ApiKey, KeyFilter};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

use crate::http::auth::{Principal, Reader, Writer};
use crate::http::error::ApiResult;
use crate::http::extract::{Json, PathParams, Query};
use crate::http::paging::{page_headers, page_request};
use crate::http::ApiError;
use crate::service::keys::{self as svc, KeySpec};
use crate::service::rfc3339;
use crate::state::AppState;

#[derive(Serialize, ToSchema)]
pub struct KeyOut {
    pub id: String,
    pub name: String,
    pub description: String,
    /// The key's first characters, e.g. `ak_live_AbCd`.
    pub start: String,
    pub last4: String,
    /// `read`, `write` or `admin`.
    pub scope: String,
    /// `live` or `test`.
    pub environment: String,
    /// `active`, `revoked` or `expired`.
    pub status: String,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    pub last_used_at: Option<String>,
    pub created_by: Option<String>,
    /// The key that replaced this one when it was rolled.
    pub rolled_to: Option<String>,
    pub rate_limit: Option<String>,
    pub permissions: Vec<String>,
    pub metadata: Value,
}

impl KeyOut {
    pub fn new(k: &ApiKey, now: OffsetDateTime) -> Self {
        let status = match k.status_at(now) {
            keygate_store::KeyStatus::Active => "active",
            keygate_store::KeyStatus::Revoked => "revoked",
            keygate_store::KeyStatus::Expired => "expired",
        };
        KeyOut {
            id: k.id.to_string(),
            name: k.name.clone(),
            description: k.description.clone(),
            start: k.start.clone(),
            last4: k.last4.clone(),
            scope: k.scope.to_string(),
            environment: k.environment.as_str().to_owned(),
            status: status.to_owned(),
            created_at: rfc3339(k.created_at),
            expires_at: k.expires_at.map(rfc3339),
            revoked_at: k.revoked_at.map(rfc3339),
            last_used_at: k.last_used_at.map(rfc3339),
            created_by: k.created_by.as_ref().map(ToString::to_string),
            rolled_to: k.rolled_to.as_ref().map(ToString::to_string),
            rate_limit: k.rate_limit.clone(),
            permissions: k.permissions.clone(),
            metadata: k.metadata.clone(),
        }
    }
}

/// A key as created: the only time its plaintext `key` is shown.
#[derive(Serialize, ToSchema)]
pub struct KeyCreatedOut {
    /// The API key itself. Store it now: it is never shown again.
    pub key: String,
    #[serde(flatten)]
    pub info: KeyOut,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyIn {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Defaults to the scope of the credential that creates the key.
    #[schema(value_type = Option<String>)]
    pub scope: Option<Scope>,
    /// `live` (default) or `test`.
    #[schema(value_type = Option<String>)]
    pub environment: Option<Environment>,
    /// RFC 3339.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>)]
    pub expires_at: Option<OffsetDateTime>,
    pub metadata: Option<Value>,
    /// e.g. `10/second`; at most the account's plan.
    pub rate_limit: Option<String>,
    /// Beside the scope: `verify` lets the key call `POST /api/v1/keys/verify` for its account.
    #[serde(default)]
    pub permissions: Vec<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyPatch {
    pub name: Option<String>,
    pub description: Option<String>,
    #[schema(value_type = Option<String>)]
    pub scope: Option<Scope>,
    /// RFC 3339, or `null` to remove the expiry.
    #[serde(default, deserialize_with = "double_option_time")]
    #[schema(value_type = Option<String>)]
    pub expires_at: Option<Option<OffsetDateTime>>,
    pub metadata: Option<Value>,
    /// `null` removes the key's own limit.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub rate_limit: Option<Option<String>>,
}

fn double_option<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

fn double_option_time<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<OffsetDateTime>>, D::Error> {
    time::serde::rfc3339::option::deserialize(d).map(Some)
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RollIn {
    /// How long the old key keeps working; 0 revokes it at once. Default 86400.
    pub grace_seconds: Option<u64>,
}

#[derive(Deserialize, IntoParams)]
pub struct ListKeysParams {
    /// `active`, `revoked` or `expired`.
    pub status: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

fn parse_key_id(raw: &str) -> ApiResult<KeyId> {
    KeyId::parse(raw).ok_or_else(|| ApiError::not_found("API key"))
}

/// The key `id` as the caller may see it: one of its own account's keys (operators: operator
/// keys).
async fn load_key(state: &AppState, who: &Principal, id: &str) -> ApiResult<ApiKey> {
    let id = parse_key_id(id)?;
    state
        .store
        .get_key(who.account_id.as_ref(), &id)
        .await
        .map_err(|_| ApiError::not_found("API key"))
}

fn check_can_manage(who: &Principal, key: &ApiKey) -> ApiResult<()> {
    if key.scope > who.scope {
        return Err(ApiError::forbidden(format!(
            "This credential ({} scope) cannot change a key with {} scope",
            who.scope, key.scope
        )));
    }
    Ok(())
}

/// A key's own limit must stay within its account's plan.
fn check_key_limit(
    state: &AppState,
    who: &Principal,
    limit: Option<&str>,
) -> ApiResult<Option<String>> {
    let Some(limit) = limit else { return Ok(None) };
    let quota: keygate_core::gcra::Quota =
        limit.parse().map_err(|e: keygate_core::gcra::QuotaError| {
            ApiError::invalid_field("rate_limit", e.to_string())
        })?;
    let plan = who.account().and_then(|a| state.config.plans.get(&a.plan));
    if let Some(plan) = plan {
        if !crate::ratelimit::within_plan(&quota, &plan.rate_limit) {
            return Err(ApiError::invalid_field(
                "rate_limit",
                format!("must not exceed the account's plan ({})", plan.rate_limit),
            ));
        }
    }
    Ok(Some(quota.to_string()))
}

fn check_can_grant(who: &Principal, scope: Scope) -> ApiResult<()> {
    if scope > who.scope {
        return Err(ApiError::forbidden(format!(
            "This credential ({} scope) cannot grant {scope} scope",
            who.scope
        )));
    }
    Ok(())
}

#[utoipa::path(post, path = "/api/v1/auth/api-keys", tag = "api-keys", request_body = KeyIn,
    responses((status = 201, body = KeyCreatedOut), (status = 400), (status = 401), (status = 403)))]
pub async fn create_key(
    State(state): State<AppState>,
    Writer(who): Writer,
    Json(body): Json<KeyIn>,
) -> ApiResult<impl IntoResponse> {
    let scope = body.scope.unwrap_or(who.scope);
    check_can_grant(&who, scope)?;
    let spec = KeySpec {
        name: svc::validate_key_name(&body.name)?,
        description: svc::validate_description(&body.description)?,
        scope,
        environment: body.environment.unwrap_or(Environment::Live),
        expires_at: body.expires_at.map(svc::validate_expiry).transpose()?,
        metadata: svc::validate_metadata(body.metadata.unwrap_or_else(|| serde_json::json!({})))?,
        rate_limit: check_key_limit(&state, &who, body.rate_limit.as_deref())?,
        permissions: svc::validate_permissions(body.permissions)?,
    };
    let (record, generated) =
        svc::create_key(&state, who.account_id.as_ref(), who.user_id.as_ref(), spec).await?;
    let out = KeyCreatedOut {
        info: KeyOut::new(&record, OffsetDateTime::now_utc()),
        key: generated.into_plaintext(),
    };
    Ok((StatusCode::CREATED, axum::Json(out)))
}

#[utoipa::path(get, path = "/api/v1/auth/api-keys", tag = "api-keys", params(ListKeysParams),
    responses((status = 200, body = Vec<KeyOut>, description = "total in X-Total-Count, next page in Link")))]
pub async fn list_keys(
    State(state): State<AppState>,
    Reader(who): Reader,
    Query(params): Query<ListKeysParams>,
) -> ApiResult<impl IntoResponse> {
    let filter = match params.status.as_deref() {
        None | Some("") | Some("all") => KeyFilter::All,
        Some("active") => KeyFilter::Active,
        Some("revoked") => KeyFilter::Revoked,
        Some("expired") => KeyFilter::Expired,
        Some(_) => {
            return Err(ApiError::invalid_field(
                "status",
                "must be active, revoked or expired",
            ))
        }
    };
    let page_req = page_request(params.limit, params.cursor)?;
    let now = OffsetDateTime::now_utc();
    let page = state
        .store
        .list_keys(who.account_id.as_ref(), filter, now, &page_req)
        .await?;
    let base = match params.status.as_deref() {
        Some(s @ ("active" | "revoked" | "expired")) => format!("/api/v1/auth/api-keys?status={s}"),
        _ => "/api/v1/auth/api-keys".to_owned(),
    };
    let headers = page_headers(
        &page,
        page_req.limit,
        &base,
        page.items.last().map(|k| k.id.as_str()),
    );
    let body: Vec<KeyOut> = page.items.iter().map(|k| KeyOut::new(k, now)).collect();
    Ok((headers, axum::Json(body)))
}

#[utoipa::path(get, path = "/api/v1/auth/api-keys/{id}", tag = "api-keys",
    params(("id" = String, Path)), responses((status = 200, body = KeyOut), (status = 404)))]
pub async fn get_key(
    State(state): State<AppState>,
    Reader(who): Reader,
    PathParams(id): PathParams<String>,
) -> ApiResult<axum::Json<KeyOut>> {
    let key = load_key(&state, &who, &id).await?;
    Ok(axum::Json(KeyOut::new(&key, OffsetDateTime::now_utc())))
}

#[utoipa::path(patch, path = "/api/v1/auth/api-keys/{id}", tag = "api-keys", request_body = KeyPatch,
    params(("id" = String, Path)), responses((status = 200, body = KeyOut), (status = 403), (status = 404)))]
pub async fn update_key(
    State(state): State<AppState>,
    Writer(who): Writer,
    PathParams(id): PathParams<String>,
    Json(patch): Json<KeyPatch>,
) -> ApiResult<axum::Json<KeyOut>> {
    let before = load_key(&state, &who, &id).await?;
    check_can_manage(&who, &before)?;
    let mut key = before.clone();
    if let Some(name) = patch.name {
        key.name = svc::validate_key_name(&name)?;
    }
    if let Some(d) = patch.description {
        key.description = svc::validate_description(&d)?;
    }
    if let Some(scope) = patch.scope {
        check_can_grant(&who, scope)?;
        key.scope = scope;
    }
    if let Some(expiry) = patch.expires_at {
        key.expires_at = expiry.map(svc::validate_expiry).transpose()?;
    }
    if let Some(m) = patch.metadata {
        key.metadata = svc::validate_metadata(m)?;
    }
    if let Some(limit) = patch.rate_limit {
        key.rate_limit = check_key_limit(&state, &who, limit.as_deref())?;
    }
    svc::update_key(&state, &before, &key).await?;
    Ok(axum::Json(KeyOut::new(&key, OffsetDateTime::now_utc())))
}

#[utoipa::path(delete, path = "/api/v1/auth/api-keys/{id}", tag = "api-keys",
    params(("id" = String, Path)),
    responses((status = 200, body = KeyOut, description = "the revoked key"), (status = 404)))]
pub async fn revoke_key(
    State(state): State<AppState>,
    Writer(who): Writer,
    PathParams(id): PathParams<String>,
) -> ApiResult<axum::Json<KeyOut>> {
    let key = load_key(&state, &who, &id).await?;
    check_can_manage(&who, &key)?;
    let key = svc::revoke_key(&state, key).await?;
    Ok(axum::Json(KeyOut::new(&key, OffsetDateTime::now_utc())))
}

#[utoipa::path(post, path = "/api/v1/auth/api-keys/{id}/roll", tag = "api-keys", request_body = RollIn,
    params(("id" = String, Path)),
    responses((status = 201, body = KeyCreatedOut, description = "the new key"), (status = 404), (status = 409)))]
pub async fn roll_key(
    State(state): State<AppState>,
    Writer(who): Writer,
    PathParams(id): PathParams<String>,
    Json(body): Json<RollIn>,
) -> ApiResult<impl IntoResponse> {
    let old = load_key(&state, &who, &id).await?;
    check_can_manage(&who, &old)?;
    let grace = body
        .grace_seconds
        .unwrap_or(svc::DEFAULT_ROLL_GRACE_SECONDS);
    let (new, generated) = svc::roll_key(&state, old, grace, who.user_id.as_ref()).await?;
    let out = KeyCreatedOut {
        info: KeyOut::new(&new, OffsetDateTime::now_utc()),
        key: generated.into_plaintext(),
    };
    Ok((StatusCode::CREATED, axum::Json(out)))
}
