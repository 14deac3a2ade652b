//! `/api/v1/webhooks`: an account's endpoints, their secrets, their deliveries and replays.
//!
//! Reading needs any credential of the account; changing endpoints and secrets needs `admin`
//! (a secret is shown when it is made: at creation and at rotation); sending a test message
//! needs `write`, like publishing an event.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use keygate_core::webhook::{self, WebhookSecret};
use keygate_core::{DeliveryId, EndpointId};
use keygate_store::{DeliveryAttempt, EventTarget, WebhookDelivery, WebhookEndpoint};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use crate::http::auth::{Admin, Principal, Reader, Writer};
use crate::http::error::ApiResult;
use crate::http::extract::{Json, PathParams, Query};
use crate::http::paging::{page_headers, page_request};
use crate::http::ApiError;
use crate::service::audit::{self, action, AuditEvent};
use crate::service::{now, rfc3339};
use crate::state::AppState;

/// The most filters an endpoint may have.
const MAX_FILTERS: usize = 100;
const MAX_DESCRIPTION: usize = 500;
/// The purpose a secret is sealed for (bound into the ciphertext).
pub(crate) const SECRET_PURPOSE: &str = "webhook-endpoint-secret";

#[derive(Serialize, ToSchema)]
pub struct EndpointOut {
    pub id: String,
    pub url: String,
    pub description: String,
    /// Event types, `prefix.*` or `*`; empty: every event.
    pub events: Vec<String>,
    pub enabled: bool,
    /// Why Keygate disabled it (410 Gone, failing for days).
    pub disabled_reason: Option<String>,
    /// The first failed attempt since the last success.
    pub failing_since: Option<String>,
    /// Until when the previous secret still signs beside the current one.
    pub previous_secret_expires_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl EndpointOut {
    fn new(e: &WebhookEndpoint) -> Self {
        let overlap = time::Duration::try_from(webhook::ROTATION_OVERLAP).unwrap_or_default();
        EndpointOut {
            id: e.id.to_string(),
            url: e.url.clone(),
            description: e.description.clone(),
            events: e.event_types.clone(),
            enabled: e.enabled,
            disabled_reason: e.disabled_reason.clone(),
            failing_since: e.failing_since.map(rfc3339),
            previous_secret_expires_at: e
                .previous_secret
                .as_ref()
                .map(|(_, at)| *at + overlap)
                .filter(|until| *until > now())
                .map(rfc3339),
            created_at: rfc3339(e.created_at),
            updated_at: rfc3339(e.updated_at),
        }
    }
}

/// An endpoint as created or re-keyed: the only times its secret is shown.
#[derive(Serialize, ToSchema)]
pub struct EndpointWithSecretOut {
    /// `whsec_…`: verify each delivery's `webhook-signature` with it.
    pub secret: String,
    #[serde(flatten)]
    pub endpoint: EndpointOut,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointIn {
    /// `https://…` (or `http://`); private addresses are refused at delivery time.
    pub url: String,
    /// Event types to receive (`post.created`, `key.*`, `*`); omitted or empty: every event.
    #[serde(default)]
    pub events: Vec<String>,
    #[serde(default)]
    pub description: String,
    /// Default true.
    pub enabled: Option<bool>,
    /// A secret of your own (`whsec_` + base64 of 24 to 64 bytes); default: a new random one.
    pub secret: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointPatch {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateIn {
    /// A secret of your own; default: a new random one.
    pub secret: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct AttemptOut {
    pub attempted_at: String,
    /// The receiver's status; null when no response came.
    pub status_code: Option<u16>,
    pub latency_ms: u32,
    pub error: Option<String>,
    /// The first bytes of the response body.
    pub response: String,
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryOut {
    pub id: String,
    /// The event, and the `webhook-id` header of every attempt.
    pub event_id: String,
    pub event_type: String,
    /// `pending`, `succeeded` or `failed`.
    pub status: String,
    pub attempts: u32,
    /// When the next attempt is due, while pending.
    pub next_attempt_at: Option<String>,
    pub last_status_code: Option<u16>,
    pub last_error: Option<String>,
    pub created_at: String,
    /// Oldest first.
    pub attempt_log: Vec<AttemptOut>,
}

impl DeliveryOut {
    fn new(d: &WebhookDelivery, attempts: &[DeliveryAttempt]) -> Self {
        DeliveryOut {
            id: d.id.to_string(),
            event_id: d.event_id.to_string(),
            event_type: d.event_type.clone(),
            status: d.status.as_str().to_owned(),
            attempts: d.attempts,
            next_attempt_at: (d.status == keygate_store::DeliveryStatus::Pending)
                .then(|| rfc3339(d.next_attempt_at)),
            last_status_code: d.last_status_code,
            last_error: d.last_error.clone(),
            created_at: rfc3339(d.created_at),
            attempt_log: attempts
                .iter()
                .filter(|a| a.delivery_id == d.id)
                .map(|a| AttemptOut {
                    attempted_at: rfc3339(a.attempted_at),
                    status_code: a.status_code,
                    latency_ms: a.latency_ms,
                    error: a.error.clone(),
                    response: a.response_excerpt.clone(),
                })
                .collect(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct QueuedOut {
    /// The event (and `webhook-id`).
    pub event_id: String,
    /// The new delivery.
    pub delivery_id: String,
}

#[derive(Deserialize, IntoParams)]
pub struct ListParams {
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// The URL's shape now; where it points is checked at each delivery, after DNS resolution. An
/// address that can never be delivered to is refused at once, so the mistake shows here.
fn validate_url(state: &AppState, url: &str) -> ApiResult<String> {
    let dest =
        webhook::check_url(url).map_err(|e| ApiError::invalid_field("url", e.to_string()))?;
    if let webhook::Host::Ip(ip) = dest.host {
        if !state.config.webhooks_allow_private && webhook::is_forbidden_destination(ip) {
            return Err(ApiError::invalid_field(
                "url",
                "is a private, loopback or link-local address; deliveries there are refused",
            ));
        }
    }
    Ok(url.to_owned())
}

fn validate_filters(filters: Vec<String>) -> ApiResult<Vec<String>> {
    if filters.len() > MAX_FILTERS {
        return Err(ApiError::invalid_field(
            "events",
            format!("at most {MAX_FILTERS} entries"),
        ));
    }
    for f in &filters {
        if !webhook::is_valid_event_filter(f) {
            return Err(ApiError::invalid_field(
                "events",
                format!(
                    "{:?} is not an event type, a prefix.* or *",
                    truncate(f, 64)
                ),
            ));
        }
    }
    let mut filters = filters;
    filters.sort();
    filters.dedup();
    Ok(filters)
}

fn validate_description(d: &str) -> ApiResult<String> {
    if d.chars().count() > MAX_DESCRIPTION || d.chars().any(|c| c.is_control() && c != '\n') {
        return Err(ApiError::invalid_field(
            "description",
            format!("at most {MAX_DESCRIPTION} characters, no control characters"),
        ));
    }
    Ok(d.to_owned())
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

pub fn parse_secret(raw: Option<&str>) -> ApiResult<WebhookSecret> {
    match raw {
        None => Ok(WebhookSecret::generate()),
        Some(s) => WebhookSecret::parse_whsec(s)
            .map_err(|e| ApiError::invalid_field("secret", e.to_string())),
    }
}

fn seal(state: &AppState, secret: &WebhookSecret) -> ApiResult<String> {
    state
        .tokens
        .seal_secret(SECRET_PURPOSE, secret.expose_bytes())
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("sealing a webhook secret: {e}")))
}

async fn load(state: &AppState, who: &Principal, id: &str) -> ApiResult<WebhookEndpoint> {
    let account = who.own_account()?;
    let id = EndpointId::parse(id).ok_or_else(|| ApiError::not_found("Webhook endpoint"))?;
    state
        .store
        .get_endpoint(Some(account), &id)
        .await
        .map_err(|_| ApiError::not_found("Webhook endpoint"))
}

/// What a new endpoint is made of (the API's body, the dashboard's form).
pub struct EndpointSpec {
    pub url: String,
    pub events: Vec<String>,
    pub description: String,
    pub enabled: bool,
}

/// Validates and stores a new endpoint of `account` signing with `secret`.
pub async fn create(
    state: &AppState,
    account: &keygate_core::AccountId,
    spec: EndpointSpec,
    secret: &WebhookSecret,
) -> ApiResult<WebhookEndpoint> {
    let at = now();
    let endpoint = WebhookEndpoint {
        id: EndpointId::generate(),
        account_id: account.clone(),
        url: validate_url(state, &spec.url)?,
        description: validate_description(&spec.description)?,
        event_types: validate_filters(spec.events)?,
        sealed_secret: seal(state, secret)?,
        previous_secret: None,
        enabled: spec.enabled,
        disabled_reason: None,
        failing_since: None,
        created_at: at,
        updated_at: at,
    };
    state.store.create_endpoint(&endpoint).await?;
    tracing::info!(endpoint_id = %endpoint.id, "webhook endpoint created");
    let details = json!({"host": url_host(&endpoint.url), "events": endpoint.event_types, "enabled": endpoint.enabled});
    audit_endpoint(state, action::WEBHOOK_ENDPOINT_CREATED, &endpoint, details).await;
    Ok(endpoint)
}

/// Parses a filter list typed as text: event types separated by commas, spaces or lines.
pub fn filters_from_text(text: &str) -> Vec<String> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|f| !f.is_empty())
        .map(str::to_owned)
        .collect()
}

#[utoipa::path(post, path = "/api/v1/webhooks", tag = "webhooks", request_body = EndpointIn,
    responses((status = 201, body = EndpointWithSecretOut), (status = 400), (status = 403)))]
pub async fn create_endpoint(
    State(state): State<AppState>,
    Admin(who): Admin,
    Json(body): Json<EndpointIn>,
) -> ApiResult<impl IntoResponse> {
    let account = who.own_account()?.clone();
    let secret = parse_secret(body.secret.as_deref())?;
    let spec = EndpointSpec {
        url: body.url,
        events: body.events,
        description: body.description,
        enabled: body.enabled.unwrap_or(true),
    };
    let endpoint = create(&state, &account, spec, &secret).await?;
    let out = EndpointWithSecretOut {
        secret: secret.to_whsec(),
        endpoint: EndpointOut::new(&endpoint),
    };
    Ok((StatusCode::CREATED, axum::Json(out)))
}

#[utoipa::path(get, path = "/api/v1/webhooks", tag = "webhooks", params(ListParams),
    responses((status = 200, body = Vec<EndpointOut>, description = "total in X-Total-Count, next page in Link")))]
pub async fn list_endpoints(
    State(state): State<AppState>,
    Reader(who): Reader,
    Query(params): Query<ListParams>,
) -> ApiResult<impl IntoResponse> {
    let account = who.own_account()?;
    let page_req = page_request(params.limit, params.cursor)?;
    let page = state.store.list_endpoints(account, &page_req).await?;
    let headers = page_headers(
        &page,
        page_req.limit,
        "/api/v1/webhooks",
        page.items.last().map(|e| e.id.as_str()),
    );
    let body: Vec<EndpointOut> = page.items.iter().map(EndpointOut::new).collect();
    Ok((headers, axum::Json(body)))
}

#[utoipa::path(get, path = "/api/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path)), responses((status = 200, body = EndpointOut), (status = 404)))]
pub async fn get_endpoint(
    State(state): State<AppState>,
    Reader(who): Reader,
    PathParams(id): PathParams<String>,
) -> ApiResult<axum::Json<EndpointOut>> {
    let endpoint = load(&state, &who, &id).await?;
    Ok(axum::Json(EndpointOut::new(&endpoint)))
}

#[utoipa::path(patch, path = "/api/v1/webhooks/{id}", tag = "webhooks", request_body = EndpointPatch,
    params(("id" = String, Path)), responses((status = 200, body = EndpointOut), (status = 400), (status = 404)))]
pub async fn update_endpoint(
    State(state): State<AppState>,
    Admin(who): Admin,
    PathParams(id): PathParams<String>,
    Json(patch): Json<EndpointPatch>,
) -> ApiResult<axum::Json<EndpointOut>> {
    let mut endpoint = load(&state, &who, &id).await?;
    let before = endpoint.clone();
    if let Some(url) = patch.url {
        endpoint.url = validate_url(&state, &url)?;
    }
    if let Some(events) = patch.events {
        endpoint.event_types = validate_filters(events)?;
    }
    if let Some(d) = patch.description {
        endpoint.description = validate_description(&d)?;
    }
    if let Some(enabled) = patch.enabled {
        set_enabled(&mut endpoint, enabled);
    }
    endpoint.updated_at = now();
    state.store.update_endpoint(&endpoint).await?;
    tracing::info!(endpoint_id = %endpoint.id, "webhook endpoint updated");
    let fields: Vec<&str> = [
        ("url", before.url != endpoint.url),
        ("events", before.event_types != endpoint.event_types),
        ("description", before.description != endpoint.description),
        ("enabled", before.enabled != endpoint.enabled),
    ]
    .into_iter()
    .filter_map(|(name, changed)| changed.then_some(name))
    .collect();
    if !fields.is_empty() {
        let details =
            json!({"fields": fields, "host": url_host(&endpoint.url), "enabled": endpoint.enabled});
        audit_endpoint(&state, action::WEBHOOK_ENDPOINT_UPDATED, &endpoint, details).await;
    }
    Ok(axum::Json(EndpointOut::new(&endpoint)))
}

/// The scheme and host of an endpoint's URL: what the audit log keeps of it, since a path or
/// query may carry a token of the receiver's.
fn url_host(url: &str) -> String {
    match url.parse::<axum::http::Uri>() {
        Ok(uri) => format!(
            "{}://{}",
            uri.scheme_str().unwrap_or("https"),
            uri.host().unwrap_or_default()
        ),
        Err(_) => String::new(),
    }
}

/// Records a change to an endpoint in the audit log (never its secret).
async fn audit_endpoint(
    state: &AppState,
    name: &'static str,
    endpoint: &WebhookEndpoint,
    details: serde_json::Value,
) {
    let event = AuditEvent::new(name, "webhook_endpoint", &endpoint.id)
        .account(Some(&endpoint.account_id))
        .details(details);
    audit::record(state, event).await;
}

fn set_enabled(endpoint: &mut WebhookEndpoint, enabled: bool) {
    if enabled && !endpoint.enabled {
        // A fresh start: the failures that disabled it are history.
        endpoint.disabled_reason = None;
        endpoint.failing_since = None;
    }
    endpoint.enabled = enabled;
}

#[utoipa::path(delete, path = "/api/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path)), responses((status = 204), (status = 404)))]
pub async fn delete_endpoint(
    State(state): State<AppState>,
    Admin(who): Admin,
    PathParams(id): PathParams<String>,
) -> ApiResult<StatusCode> {
    let endpoint = load(&state, &who, &id).await?;
    delete(&state, &endpoint).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes an endpoint with its deliveries and their attempts.
pub async fn delete(state: &AppState, endpoint: &WebhookEndpoint) -> ApiResult<()> {
    state
        .store
        .delete_endpoint(&endpoint.account_id, &endpoint.id)
        .await?;
    tracing::info!(endpoint_id = %endpoint.id, "webhook endpoint deleted");
    let details = json!({"host": url_host(&endpoint.url)});
    audit_endpoint(state, action::WEBHOOK_ENDPOINT_DELETED, endpoint, details).await;
    Ok(())
}

async fn switch(
    state: &AppState,
    who: &Principal,
    id: &str,
    enabled: bool,
) -> ApiResult<EndpointOut> {
    let endpoint = load(state, who, id).await?;
    Ok(EndpointOut::new(
        &set_endpoint_enabled(state, endpoint, enabled).await?,
    ))
}

/// Enables (forgetting past failures) or disables (giving up pending deliveries) an endpoint.
pub async fn set_endpoint_enabled(
    state: &AppState,
    mut endpoint: WebhookEndpoint,
    enabled: bool,
) -> ApiResult<WebhookEndpoint> {
    let was_enabled = endpoint.enabled;
    if enabled {
        set_enabled(&mut endpoint, true);
        endpoint.updated_at = now();
        state.store.update_endpoint(&endpoint).await?;
    } else if endpoint.enabled {
        state
            .store
            .disable_endpoint(&endpoint.id, "disabled by a user", now())
            .await?;
        endpoint = state
            .store
            .get_endpoint(Some(&endpoint.account_id), &endpoint.id)
            .await?;
    }
    if was_enabled != endpoint.enabled {
        let details = json!({"fields": ["enabled"], "host": url_host(&endpoint.url), "enabled": endpoint.enabled});
        audit_endpoint(state, action::WEBHOOK_ENDPOINT_UPDATED, &endpoint, details).await;
    }
    Ok(endpoint)
}

#[utoipa::path(post, path = "/api/v1/webhooks/{id}/enable", tag = "webhooks",
    params(("id" = String, Path)), responses((status = 200, body = EndpointOut), (status = 404)))]
pub async fn enable_endpoint(
    State(state): State<AppState>,
    Admin(who): Admin,
    PathParams(id): PathParams<String>,
) -> ApiResult<axum::Json<EndpointOut>> {
    Ok(axum::Json(switch(&state, &who, &id, true).await?))
}

/// Disables the endpoint; its pending deliveries are given up (replay them after enabling).
#[utoipa::path(post, path = "/api/v1/webhooks/{id}/disable", tag = "webhooks",
    params(("id" = String, Path)), responses((status = 200, body = EndpointOut), (status = 404)))]
pub async fn disable_endpoint(
    State(state): State<AppState>,
    Admin(who): Admin,
    PathParams(id): PathParams<String>,
) -> ApiResult<axum::Json<EndpointOut>> {
    Ok(axum::Json(switch(&state, &who, &id, false).await?))
}

/// A new secret; for 24 hours the old one signs too (both signatures in `webhook-signature`).
#[utoipa::path(post, path = "/api/v1/webhooks/{id}/rotate-secret", tag = "webhooks",
    request_body(content = RotateIn, description = "optional"),
    params(("id" = String, Path)), responses((status = 200, body = EndpointWithSecretOut), (status = 404)))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    Admin(who): Admin,
    PathParams(id): PathParams<String>,
    Json(body): Json<RotateIn>,
) -> ApiResult<axum::Json<EndpointWithSecretOut>> {
    let endpoint = load(&state, &who, &id).await?;
    let secret = parse_secret(body.secret.as_deref())?;
    let endpoint = rotate(&state, endpoint, &secret).await?;
    Ok(axum::Json(EndpointWithSecretOut {
        secret: secret.to_whsec(),
        endpoint: EndpointOut::new(&endpoint),
    }))
}

/// Makes `secret` the endpoint's; the current one keeps signing beside it for a day.
pub async fn rotate(
    state: &AppState,
    mut endpoint: WebhookEndpoint,
    secret: &WebhookSecret,
) -> ApiResult<WebhookEndpoint> {
    let at = now();
    endpoint.previous_secret = Some((
        std::mem::replace(&mut endpoint.sealed_secret, seal(state, secret)?),
        at,
    ));
    endpoint.updated_at = at;
    state.store.update_endpoint(&endpoint).await?;
    tracing::info!(endpoint_id = %endpoint.id, "webhook secret rotated");
    audit_endpoint(state, action::WEBHOOK_SECRET_ROTATED, &endpoint, json!({})).await;
    Ok(endpoint)
}

/// Sends a `webhook.test` event to this endpoint alone, whatever its filters.
#[utoipa::path(post, path = "/api/v1/webhooks/{id}/test", tag = "webhooks",
    params(("id" = String, Path)), responses((status = 202, body = QueuedOut), (status = 404), (status = 409)))]
pub async fn test_endpoint(
    State(state): State<AppState>,
    Writer(who): Writer,
    PathParams(id): PathParams<String>,
) -> ApiResult<impl IntoResponse> {
    let endpoint = load(&state, &who, &id).await?;
    let published = send_test(&state, &endpoint).await?;
    let delivery = published
        .deliveries
        .first()
        .map(ToString::to_string)
        .unwrap_or_default();
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(QueuedOut {
            event_id: published.id.to_string(),
            delivery_id: delivery,
        }),
    ))
}

/// Queues a `webhook.test` event for this endpoint alone.
pub async fn send_test(
    state: &AppState,
    endpoint: &WebhookEndpoint,
) -> ApiResult<super::events::Published> {
    if !endpoint.enabled {
        return Err(ApiError::conflict(
            "the endpoint is disabled; enable it first",
        ));
    }
    let data = json!({
        "message": "A test event from Keygate: your endpoint receives and verifies webhooks.",
        "endpoint_id": endpoint.id,
    });
    Ok(super::events::publish(
        state,
        &endpoint.account_id,
        "webhook.test",
        data,
        EventTarget::Endpoint(endpoint.id.clone()),
    )
    .await?)
}

/// The endpoint's deliveries, newest first, each with its attempts.
#[utoipa::path(get, path = "/api/v1/webhooks/{id}/deliveries", tag = "webhooks", params(("id" = String, Path), ListParams),
    responses((status = 200, body = Vec<DeliveryOut>, description = "total in X-Total-Count, next page in Link"), (status = 404)))]
pub async fn list_deliveries(
    State(state): State<AppState>,
    Reader(who): Reader,
    PathParams(id): PathParams<String>,
    Query(params): Query<ListParams>,
) -> ApiResult<impl IntoResponse> {
    let endpoint = load(&state, &who, &id).await?;
    let page_req = page_request(params.limit, params.cursor)?;
    let page = state
        .store
        .list_deliveries(&endpoint.account_id, &endpoint.id, &page_req)
        .await?;
    let ids: Vec<DeliveryId> = page.items.iter().map(|d| d.id.clone()).collect();
    let attempts = state.store.list_attempts(&ids).await?;
    let headers = page_headers(
        &page,
        page_req.limit,
        &format!("/api/v1/webhooks/{}/deliveries", endpoint.id),
        page.items.last().map(|d| d.id.as_str()),
    );
    let body: Vec<DeliveryOut> = page
        .items
        .iter()
        .map(|d| DeliveryOut::new(d, &attempts))
        .collect();
    Ok((headers, axum::Json(body)))
}

/// Sends the delivery's event to the endpoint again, now, with the same `webhook-id`.
#[utoipa::path(post, path = "/api/v1/webhooks/{id}/deliveries/{delivery_id}/replay", tag = "webhooks",
    params(("id" = String, Path), ("delivery_id" = String, Path)),
    responses((status = 202, body = QueuedOut), (status = 404), (status = 409)))]
pub async fn replay_delivery(
    State(state): State<AppState>,
    Admin(who): Admin,
    PathParams((id, delivery_id)): PathParams<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let endpoint = load(&state, &who, &id).await?;
    let (delivery, replay) = replay(&state, &endpoint, &delivery_id).await?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(QueuedOut {
            event_id: delivery.event_id.to_string(),
            delivery_id: replay.to_string(),
        }),
    ))
}

/// Queues the delivery's event for the endpoint again; returns the original and the new id.
pub async fn replay(
    state: &AppState,
    endpoint: &WebhookEndpoint,
    delivery_id: &str,
) -> ApiResult<(WebhookDelivery, DeliveryId)> {
    let delivery_id =
        DeliveryId::parse(delivery_id).ok_or_else(|| ApiError::not_found("Delivery"))?;
    let delivery = state
        .store
        .get_delivery(&endpoint.account_id, &delivery_id)
        .await
        .map_err(|_| ApiError::not_found("Delivery"))?;
    if delivery.endpoint_id != endpoint.id {
        return Err(ApiError::not_found("Delivery"));
    }
    if !endpoint.enabled {
        return Err(ApiError::conflict(
            "the endpoint is disabled; enable it first",
        ));
    }
    let replay = state
        .store
        .replay_delivery(&endpoint.account_id, &delivery.id, now())
        .await?;
    super::events::wake(state);
    Ok((delivery, replay))
}
