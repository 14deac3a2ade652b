//! Events: what the host service publishes (`POST /api/v1/events`) and what Keygate says about
//! itself (`key.created`, `key.revoked`, `key.rolled`, `key.expiring`, `credits.low`,
//! `ratelimit.exceeded`, `user.created`, `webhook.endpoint.disabled`, `webhook.test`).
//!
//! Every event is one JSON body, `{"type", "timestamp", "account_id", "data"}`, written with its
//! deliveries in one transaction (the outbox, see `keygate_store::WebhookStore`). Keygate's own
//! events are written before the API call that caused them answers, so a client that saw its
//! key created can count on `key.created` being delivered; they never contain a plaintext key.
//! A failure to write one is logged and does not fail the call: the key was still created.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use keygate_core::{AccountId, EventId};
use keygate_store::{ApiKey, EventTarget, StoreResult, User, WebhookEvent};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;

use crate::api::keys::KeyOut;
use crate::http::auth::Writer;
use crate::http::error::ApiResult;
use crate::http::extract::Json;
use crate::http::ApiError;
use crate::service::{now, rfc3339};
use crate::state::AppState;

/// The Redis channel that wakes every node's delivery worker.
pub const CHANNEL: &str = "keygate:webhooks";
/// The largest `data` accepted from `POST /api/v1/events`, serialized.
pub const MAX_DATA_BYTES: usize = 64 * 1024;

/// An event as written: its id is every delivery's `webhook-id`.
#[derive(Debug)]
pub struct Published {
    pub id: EventId,
    pub timestamp: String,
    pub deliveries: Vec<keygate_core::DeliveryId>,
}

/// Writes an event with its deliveries and wakes the workers.
pub async fn publish(
    state: &AppState,
    account: &AccountId,
    event_type: &str,
    data: Value,
    target: EventTarget,
) -> StoreResult<Published> {
    let at = now();
    let timestamp = rfc3339(at);
    let payload = json!({
        "type": event_type,
        "timestamp": timestamp,
        "account_id": account,
        "data": data,
    });
    let event = WebhookEvent {
        id: EventId::generate(),
        account_id: account.clone(),
        event_type: event_type.to_owned(),
        payload: payload.to_string(),
        created_at: at,
    };
    let deliveries = state.store.enqueue_event(&event, &target).await?;
    if !deliveries.is_empty() {
        wake(state);
    }
    Ok(Published {
        id: event.id,
        timestamp,
        deliveries,
    })
}

/// Wakes this node's worker now, and the other nodes' through Redis when there is one.
pub fn wake(state: &AppState) {
    state.webhook_wakeup.notify_one();
    if let Some(bus) = state.bus.clone() {
        tokio::spawn(async move { bus.publish(CHANNEL, "due").await });
    }
}

/// One of Keygate's own events, to the account's subscribed endpoints. Never fails the caller.
pub async fn emit(state: &AppState, account: Option<&AccountId>, event_type: &str, data: Value) {
    let Some(account) = account else { return };
    if let Err(err) = publish(state, account, event_type, data, EventTarget::Subscribed).await {
        tracing::warn!(error = %err, event_type, account_id = %account, "could not write a webhook event");
    }
}

pub async fn key_created(state: &AppState, key: &ApiKey) {
    let data = json!({ "key": KeyOut::new(key, now()) });
    emit(state, key.account_id.as_ref(), "key.created", data).await;
}

pub async fn key_revoked(state: &AppState, key: &ApiKey) {
    let data = json!({ "key": KeyOut::new(key, now()) });
    emit(state, key.account_id.as_ref(), "key.revoked", data).await;
}

pub async fn key_rolled(state: &AppState, old: &ApiKey, new: &ApiKey) {
    let at = now();
    let data = json!({ "key": KeyOut::new(old, at), "new_key": KeyOut::new(new, at) });
    emit(state, old.account_id.as_ref(), "key.rolled", data).await;
}

pub async fn user_created(state: &AppState, user: &User) {
    let data = json!({ "user": {
        "id": user.id,
        "username": user.username,
        "email": user.email,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "role": user.role.as_str(),
        "created_at": rfc3339(user.created_at),
    }});
    emit(state, Some(&user.account_id), "user.created", data).await;
}

/// `credits.low`, once per account and month, when a debit leaves the balance below the
/// threshold (`credits_low_threshold`, else a tenth of the plan's monthly credits).
pub async fn credits_debited(state: &AppState, account: &AccountId, plan: &str, balance: i64) {
    let threshold = state.config.credits_low_threshold.or_else(|| {
        state
            .config
            .plans
            .get(plan)
            .and_then(|p| p.monthly_credits)
            .map(|m| m / 10)
    });
    let Some(threshold) = threshold else { return };
    if balance >= threshold as i64 {
        return;
    }
    let at = now();
    let kind = format!("credits.low:{}", crate::service::credits::period_of(at));
    // While the balance stays low every debit comes here: only the first in an hour on this
    // node asks the database whether the month's notice went out.
    let seen = (account.clone(), kind.clone());
    if state.low_credit_notices.contains_key(&seen) {
        return;
    }
    state.low_credit_notices.insert(seen, ());
    match state.store.claim_notice(account.as_str(), &kind, at).await {
        Ok(true) => {
            let data = json!({ "balance": balance, "threshold": threshold });
            emit(state, Some(account), "credits.low", data).await;
        }
        Ok(false) => {}
        Err(err) => tracing::warn!(error = %err, "could not record a credits.low notice"),
    }
}

/// `ratelimit.exceeded`, at most once a minute per account and node: a client hammering a
/// limit must not turn every refused request into a database write.
pub fn rate_limit_exceeded(
    state: &AppState,
    account: &AccountId,
    key_id: Option<&str>,
    limit: u64,
) {
    // Hot path (a 429 is being answered): only an in-memory check here; the write is spawned.
    if state.ratelimit_notices.contains_key(account) {
        return;
    }
    state.ratelimit_notices.insert(account.clone(), ());
    let state = state.clone();
    let account = account.clone();
    let data = json!({ "key_id": key_id, "limit": limit });
    tokio::spawn(async move { emit(&state, Some(&account), "ratelimit.exceeded", data).await });
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventIn {
    /// A dotted name such as `post.created`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Any JSON object, at most 64 KiB.
    #[schema(value_type = Object)]
    pub data: Value,
    /// Operators name the account; account keys may only name their own.
    pub account_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct EventOut {
    /// The `webhook-id` every delivery of this event carries.
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub timestamp: String,
    /// Endpoints the event was queued for.
    pub deliveries: usize,
}

/// Publishes an event of the host service to the account's subscribed endpoints.
#[utoipa::path(post, path = "/api/v1/events", tag = "webhooks", request_body = EventIn,
    responses((status = 202, body = EventOut), (status = 400), (status = 401), (status = 403)))]
pub async fn publish_event(
    State(state): State<AppState>,
    Writer(who): Writer,
    Json(body): Json<EventIn>,
) -> ApiResult<impl IntoResponse> {
    let account = match (&who.account_id, body.account_id.as_deref()) {
        (Some(own), None) => own.clone(),
        (_, Some(named)) => {
            let named = AccountId::parse(named).ok_or_else(|| ApiError::not_found("Account"))?;
            who.account_access(&named)?;
            state
                .store
                .get_account(&named)
                .await
                .map_err(|_| ApiError::not_found("Account"))?;
            named
        }
        (None, None) => {
            return Err(ApiError::invalid_field(
                "account_id",
                "is required with an operator key",
            ))
        }
    };
    if !keygate_core::webhook::is_valid_event_type(&body.event_type) {
        return Err(ApiError::invalid_field(
            "type",
            "must be a dotted name of letters, digits, _ and - (e.g. post.created), at most 128 characters",
        ));
    }
    if !body.data.is_object() {
        return Err(ApiError::invalid_field("data", "must be a JSON object"));
    }
    if body.data.to_string().len() > MAX_DATA_BYTES {
        return Err(ApiError::invalid_field("data", "must be at most 64 KiB"));
    }
    let published = publish(
        &state,
        &account,
        &body.event_type,
        body.data,
        EventTarget::Subscribed,
    )
    .await?;
    let out = EventOut {
        id: published.id.to_string(),
        event_type: body.event_type,
        timestamp: published.timestamp,
        deliveries: published.deliveries.len(),
    };
    Ok((StatusCode::ACCEPTED, axum::Json(out)))
}
