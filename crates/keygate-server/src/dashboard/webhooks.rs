//! The Webhooks page: the account's endpoints, adding one (its signing secret shown once, on
//! the page that answers the form), and for each endpoint its recent deliveries with their
//! attempts, a replay button, a test event, enabling and disabling, rotating the secret and
//! deleting. Everyone in the account sees them; changing them takes an owner or admin, like
//! `admin` scope on the API. The rules are the API's (`crate::webhooks::endpoints`).

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use keygate_core::webhook::WebhookSecret;
use keygate_core::EndpointId;
use keygate_store::{DeliveryAttempt, PageRequest, WebhookDelivery, WebhookEndpoint};
use serde::Deserialize;

use super::csrf::{CsrfToken, Form};
use super::page::{date_time, iso, ok, render, see_other, Base, FieldErrors, PageError};
use super::session::{DashboardAdmin, DashboardUser};
use crate::state::AppState;
use crate::webhooks::endpoints as svc;

/// An endpoint as a row or a heading.
pub struct EndpointRow {
    pub id: String,
    pub url: String,
    pub description: String,
    /// The filters as typed, or "All events".
    pub events: String,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub failing_since: Option<String>,
    pub created: String,
}

impl EndpointRow {
    fn new(e: &WebhookEndpoint) -> Self {
        EndpointRow {
            id: e.id.to_string(),
            url: e.url.clone(),
            description: e.description.clone(),
            events: if e.event_types.is_empty() {
                "All events".into()
            } else {
                e.event_types.join(", ")
            },
            enabled: e.enabled,
            disabled_reason: e.disabled_reason.clone(),
            failing_since: e.failing_since.map(date_time),
            created: date_time(e.created_at),
        }
    }
}

pub struct AttemptRow {
    pub at: String,
    pub at_iso: String,
    /// The status code, or the error when no answer came.
    pub outcome: String,
    pub ok: bool,
    pub latency_ms: u32,
    pub response: String,
}

pub struct DeliveryRow {
    pub id: String,
    pub event_id: String,
    pub event_type: String,
    /// `pending`, `succeeded` or `failed`.
    pub status: &'static str,
    pub attempts: u32,
    pub created: String,
    pub created_iso: String,
    pub next_attempt: Option<String>,
    pub log: Vec<AttemptRow>,
}

impl DeliveryRow {
    fn new(d: &WebhookDelivery, attempts: &[DeliveryAttempt]) -> Self {
        DeliveryRow {
            id: d.id.to_string(),
            event_id: d.event_id.to_string(),
            event_type: d.event_type.clone(),
            status: d.status.as_str(),
            attempts: d.attempts,
            created: date_time(d.created_at),
            created_iso: iso(d.created_at),
            next_attempt: (d.status == keygate_store::DeliveryStatus::Pending && d.attempts > 0)
                .then(|| date_time(d.next_attempt_at)),
            log: attempts
                .iter()
                .filter(|a| a.delivery_id == d.id)
                .map(|a| AttemptRow {
                    at: date_time(a.attempted_at),
                    at_iso: iso(a.attempted_at),
                    outcome: match (a.status_code, &a.error) {
                        (Some(code), _) => code.to_string(),
                        (None, Some(e)) => e.clone(),
                        (None, None) => "no answer".into(),
                    },
                    ok: a.status_code.is_some_and(|c| (200..300).contains(&c)),
                    latency_ms: a.latency_ms,
                    response: a.response_excerpt.chars().take(200).collect(),
                })
                .collect(),
        }
    }
}

#[derive(Template)]
#[template(path = "dashboard/webhooks.html")]
struct WebhooksPage {
    base: Base,
    endpoints: Vec<EndpointRow>,
    can_manage: bool,
}

#[derive(Deserialize)]
pub struct NoticeQuery {
    notice: Option<String>,
}

fn notice_text(notice: Option<&str>) -> Option<&'static str> {
    match notice {
        Some("deleted") => Some("The endpoint is deleted: nothing more is sent to it."),
        Some("test") => Some("A test event is on its way; its delivery shows below in a moment."),
        Some("replayed") => Some("The event is queued again, with the same webhook-id."),
        Some("enabled") => Some("The endpoint is enabled."),
        Some("disabled") => Some("The endpoint is disabled: its pending deliveries are given up."),
        _ => None,
    }
}

/// Every endpoint of the account (an account has a handful; the page shows up to 100).
async fn endpoints(
    state: &AppState,
    me: &DashboardUser,
) -> Result<Vec<WebhookEndpoint>, PageError> {
    let page = state
        .store
        .list_endpoints(
            &me.account.id,
            &PageRequest {
                after: None,
                limit: 100,
            },
        )
        .await?;
    Ok(page.items)
}

pub async fn list(
    State(state): State<AppState>,
    csrf: CsrfToken,
    me: DashboardUser,
    Query(q): Query<NoticeQuery>,
) -> Result<Response, PageError> {
    let rows = endpoints(&state, &me)
        .await?
        .iter()
        .map(EndpointRow::new)
        .collect();
    ok(&WebhooksPage {
        base: Base::signed_in(&state, &csrf, &me, "/webhooks")
            .with_notice(notice_text(q.notice.as_deref())),
        endpoints: rows,
        can_manage: me.is_admin(),
    })
}

#[derive(Deserialize, Default)]
pub struct EndpointForm {
    #[serde(default)]
    pub url: String,
    /// Event types separated by commas or spaces; empty: every event.
    #[serde(default)]
    pub events: String,
    #[serde(default)]
    pub description: String,
}

#[derive(Template)]
#[template(path = "dashboard/webhook_new.html")]
struct NewEndpointPage {
    base: Base,
    form: EndpointForm,
    errors: FieldErrors,
}

pub async fn new_endpoint(
    State(state): State<AppState>,
    csrf: CsrfToken,
    DashboardAdmin(me): DashboardAdmin,
) -> Result<Response, PageError> {
    ok(&NewEndpointPage {
        base: Base::signed_in(&state, &csrf, &me, "/webhooks"),
        form: EndpointForm::default(),
        errors: FieldErrors::default(),
    })
}

/// The page that shows an endpoint's signing secret, once.
#[derive(Template)]
#[template(path = "dashboard/webhook_secret.html")]
struct SecretPage {
    base: Base,
    endpoint: EndpointRow,
    secret: String,
    rotated: bool,
}

pub async fn create(
    State(state): State<AppState>,
    csrf: CsrfToken,
    DashboardAdmin(me): DashboardAdmin,
    Form(form): Form<EndpointForm>,
) -> Result<Response, PageError> {
    let secret = WebhookSecret::generate();
    let spec = svc::EndpointSpec {
        url: form.url.trim().to_owned(),
        events: svc::filters_from_text(&form.events),
        description: form.description.trim().to_owned(),
        enabled: true,
    };
    match svc::create(&state, &me.account.id, spec, &secret).await {
        Ok(endpoint) => ok(&SecretPage {
            base: Base::signed_in(&state, &csrf, &me, "/webhooks"),
            endpoint: EndpointRow::new(&endpoint),
            secret: secret.to_whsec(),
            rotated: false,
        }),
        Err(err) => {
            let mut errors = FieldErrors::default();
            errors.absorb(
                err,
                &[
                    ("url", "url"),
                    ("events", "events"),
                    ("description", "description"),
                ],
            )?;
            render(
                StatusCode::BAD_REQUEST,
                &NewEndpointPage {
                    base: Base::signed_in(&state, &csrf, &me, "/webhooks"),
                    form,
                    errors,
                },
            )
        }
    }
}

/// One of the account's endpoints; anything else is "not found".
async fn endpoint_of(
    state: &AppState,
    me: &DashboardUser,
    id: &str,
) -> Result<WebhookEndpoint, PageError> {
    let id = EndpointId::parse(id).ok_or(PageError::NotFound)?;
    state
        .store
        .get_endpoint(Some(&me.account.id), &id)
        .await
        .map_err(|_| PageError::NotFound)
}

#[derive(Template)]
#[template(path = "dashboard/webhook.html")]
struct EndpointPage {
    base: Base,
    endpoint: EndpointRow,
    deliveries: Vec<DeliveryRow>,
    total: u64,
    can_manage: bool,
}

pub async fn show(
    State(state): State<AppState>,
    csrf: CsrfToken,
    me: DashboardUser,
    Path(id): Path<String>,
    Query(q): Query<NoticeQuery>,
) -> Result<Response, PageError> {
    let endpoint = endpoint_of(&state, &me, &id).await?;
    let page = state
        .store
        .list_deliveries(
            &me.account.id,
            &endpoint.id,
            &PageRequest {
                after: None,
                limit: 25,
            },
        )
        .await?;
    let ids: Vec<_> = page.items.iter().map(|d| d.id.clone()).collect();
    let attempts = state.store.list_attempts(&ids).await?;
    ok(&EndpointPage {
        base: Base::signed_in(&state, &csrf, &me, "/webhooks")
            .with_notice(notice_text(q.notice.as_deref())),
        endpoint: EndpointRow::new(&endpoint),
        deliveries: page
            .items
            .iter()
            .map(|d| DeliveryRow::new(d, &attempts))
            .collect(),
        total: page.total,
        can_manage: me.is_admin(),
    })
}

pub async fn send_test(
    State(state): State<AppState>,
    DashboardAdmin(me): DashboardAdmin,
    Path(id): Path<String>,
    Form(_): Form<serde::de::IgnoredAny>,
) -> Result<Response, PageError> {
    let endpoint = endpoint_of(&state, &me, &id).await?;
    svc::send_test(&state, &endpoint).await?;
    Ok(see_other(
        &format!("/webhooks/{}?notice=test", endpoint.id),
        &[],
    ))
}

pub async fn enable(
    State(state): State<AppState>,
    DashboardAdmin(me): DashboardAdmin,
    Path(id): Path<String>,
    Form(_): Form<serde::de::IgnoredAny>,
) -> Result<Response, PageError> {
    let endpoint = endpoint_of(&state, &me, &id).await?;
    let endpoint = svc::set_endpoint_enabled(&state, endpoint, true).await?;
    Ok(see_other(
        &format!("/webhooks/{}?notice=enabled", endpoint.id),
        &[],
    ))
}

pub async fn disable(
    State(state): State<AppState>,
    DashboardAdmin(me): DashboardAdmin,
    Path(id): Path<String>,
    Form(_): Form<serde::de::IgnoredAny>,
) -> Result<Response, PageError> {
    let endpoint = endpoint_of(&state, &me, &id).await?;
    let endpoint = svc::set_endpoint_enabled(&state, endpoint, false).await?;
    Ok(see_other(
        &format!("/webhooks/{}?notice=disabled", endpoint.id),
        &[],
    ))
}

pub async fn replay(
    State(state): State<AppState>,
    DashboardAdmin(me): DashboardAdmin,
    Path((id, delivery)): Path<(String, String)>,
    Form(_): Form<serde::de::IgnoredAny>,
) -> Result<Response, PageError> {
    let endpoint = endpoint_of(&state, &me, &id).await?;
    svc::replay(&state, &endpoint, &delivery).await?;
    Ok(see_other(
        &format!("/webhooks/{}?notice=replayed", endpoint.id),
        &[],
    ))
}

#[derive(Template)]
#[template(path = "dashboard/webhook_confirm.html")]
struct ConfirmPage {
    base: Base,
    endpoint: EndpointRow,
    /// `rotate` or `delete`.
    action: &'static str,
}

async fn confirm(
    state: &AppState,
    csrf: &CsrfToken,
    me: &DashboardUser,
    id: &str,
    action: &'static str,
) -> Result<Response, PageError> {
    let endpoint = endpoint_of(state, me, id).await?;
    ok(&ConfirmPage {
        base: Base::signed_in(state, csrf, me, "/webhooks"),
        endpoint: EndpointRow::new(&endpoint),
        action,
    })
}

pub async fn confirm_rotate(
    State(state): State<AppState>,
    csrf: CsrfToken,
    DashboardAdmin(me): DashboardAdmin,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    confirm(&state, &csrf, &me, &id, "rotate").await
}

pub async fn rotate(
    State(state): State<AppState>,
    csrf: CsrfToken,
    DashboardAdmin(me): DashboardAdmin,
    Path(id): Path<String>,
    Form(_): Form<serde::de::IgnoredAny>,
) -> Result<Response, PageError> {
    let endpoint = endpoint_of(&state, &me, &id).await?;
    let secret = WebhookSecret::generate();
    let endpoint = svc::rotate(&state, endpoint, &secret).await?;
    ok(&SecretPage {
        base: Base::signed_in(&state, &csrf, &me, "/webhooks"),
        endpoint: EndpointRow::new(&endpoint),
        secret: secret.to_whsec(),
        rotated: true,
    })
}

pub async fn confirm_delete(
    State(state): State<AppState>,
    csrf: CsrfToken,
    DashboardAdmin(me): DashboardAdmin,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    confirm(&state, &csrf, &me, &id, "delete").await
}

pub async fn delete(
    State(state): State<AppState>,
    DashboardAdmin(me): DashboardAdmin,
    Path(id): Path<String>,
    Form(_): Form<serde::de::IgnoredAny>,
) -> Result<Response, PageError> {
    let endpoint = endpoint_of(&state, &me, &id).await?;
    svc::delete(&state, &endpoint).await?;
    Ok(see_other("/webhooks?notice=deleted", &[]))
}
