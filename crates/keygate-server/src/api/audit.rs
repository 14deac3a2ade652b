//! `GET /api/v1/audit-log`: who did what, when and from where. Account admins read their own
//! account's entries; operators read every account's, or one's with `?account=`. Newest first,
//! paged like every list, filtered by action (exact, or a prefix ending in `.`), actor (a key
//! or user id), object id and time. The action names are listed in `service::audit::action`.

use axum::extract::State;
use axum::response::IntoResponse;
use keygate_core::AccountId;
use keygate_store::{AuditEntry, AuditFilter};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

use crate::http::auth::Admin;
use crate::http::error::ApiResult;
use crate::http::extract::Query;
use crate::http::paging::{page_headers, page_request};
use crate::http::ApiError;
use crate::service::rfc3339;
use crate::state::AppState;

#[derive(Serialize, ToSchema)]
pub struct AuditActorOut {
    /// The key the act was done with (an API key, or the key a token was minted from).
    pub key_id: Option<String>,
    /// The user the act was done by.
    pub user_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct AuditObjectOut {
    /// `api_key`, `user`, `account`, `credits`, `token`, `signing_key`, …
    #[serde(rename = "type")]
    pub kind: String,
    pub id: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct AuditEntryOut {
    pub id: String,
    /// RFC 3339, UTC.
    pub at: String,
    /// e.g. `key.created`, `login.failed`.
    pub action: String,
    pub account_id: Option<String>,
    pub actor: AuditActorOut,
    pub object: AuditObjectOut,
    /// The client's address (through trusted proxies only).
    pub client_addr: Option<String>,
    pub request_id: Option<String>,
    /// What changed, never a secret.
    pub details: serde_json::Value,
}

impl From<&AuditEntry> for AuditEntryOut {
    fn from(e: &AuditEntry) -> Self {
        AuditEntryOut {
            id: e.id.clone(),
            at: rfc3339(e.at),
            action: e.action.clone(),
            account_id: e.account_id.as_ref().map(ToString::to_string),
            actor: AuditActorOut {
                key_id: e.actor_key_id.as_ref().map(ToString::to_string),
                user_id: e.actor_user_id.as_ref().map(ToString::to_string),
            },
            object: AuditObjectOut {
                kind: e.object_type.clone(),
                id: e.object_id.clone(),
            },
            client_addr: e.client_addr.clone(),
            request_id: e.request_id.clone(),
            details: e.details.clone(),
        }
    }
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    /// An action (`key.revoked`), or every action under a prefix ending in `.` (`key.`).
    pub action: Option<String>,
    /// A key id or user id: the entries it acted in.
    pub actor: Option<String>,
    /// The id of the object acted on.
    pub object: Option<String>,
    /// RFC 3339: entries at or after.
    pub since: Option<String>,
    /// RFC 3339: entries before.
    pub until: Option<String>,
    /// Operators: one account's entries.
    pub account: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

fn parse_time(field: &str, value: &str) -> ApiResult<OffsetDateTime> {
    OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
        .map_err(|_| ApiError::invalid_field(field, "must be an RFC 3339 time"))
}

fn filter_text(field: &str, value: Option<String>) -> ApiResult<Option<String>> {
    match value {
        Some(v) if v.is_empty() || v.len() > 200 => Err(ApiError::invalid_field(
            field,
            "must be 1 to 200 characters",
        )),
        other => Ok(other),
    }
}

/// `application/x-www-form-urlencoded` for a value put back in the next page's link.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[utoipa::path(get, path = "/api/v1/audit-log", tag = "audit", params(AuditParams),
    responses((status = 200, body = Vec<AuditEntryOut>, description = "newest first; total in X-Total-Count, next page in Link"),
        (status = 403), (status = 404)))]
pub async fn list_audit_log(
    State(state): State<AppState>,
    Admin(who): Admin,
    Query(params): Query<AuditParams>,
) -> ApiResult<impl IntoResponse> {
    let asked = match &params.account {
        Some(raw) => Some(AccountId::parse(raw).ok_or_else(|| ApiError::not_found("Account"))?),
        None => None,
    };
    let account_id = if who.is_operator() {
        asked
    } else {
        let own = who.own_account()?.clone();
        if asked.as_ref().is_some_and(|a| a != &own) {
            return Err(ApiError::not_found("Account"));
        }
        Some(own)
    };
    let filter = AuditFilter {
        account_id,
        action: filter_text("action", params.action.clone())?,
        actor: filter_text("actor", params.actor.clone())?,
        object_id: filter_text("object", params.object.clone())?,
        since: params
            .since
            .as_deref()
            .map(|v| parse_time("since", v))
            .transpose()?,
        until: params
            .until
            .as_deref()
            .map(|v| parse_time("until", v))
            .transpose()?,
    };
    let req = page_request(params.limit, params.cursor.clone())?;
    let page = state.store.list_audit(&filter, &req).await?;
    let kept: Vec<String> = [
        ("action", &params.action),
        ("actor", &params.actor),
        ("object", &params.object),
        ("since", &params.since),
        ("until", &params.until),
        ("account", &params.account),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.as_deref().map(|v| format!("{k}={}", encode(v))))
    .collect();
    let base = if kept.is_empty() {
        "/api/v1/audit-log".to_owned()
    } else {
        format!("/api/v1/audit-log?{}", kept.join("&"))
    };
    let headers = page_headers(
        &page,
        req.limit,
        &base,
        page.items.last().map(|e| e.id.as_str()),
    );
    Ok((
        headers,
        axum::Json(
            page.items
                .iter()
                .map(AuditEntryOut::from)
                .collect::<Vec<_>>(),
        ),
    ))
}
