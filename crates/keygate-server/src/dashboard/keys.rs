//! The API Keys page: the account's keys, creating one (its plaintext shown once, on the page
//! that answers the form, and nowhere else), revoking after a confirmation, and rolling. A user
//! manages keys up to the scope their role carries, as the API's rule is for credentials.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use keygate_core::{Environment, KeyId, Scope};
use keygate_store::{ApiKey, KeyFilter, KeyStatus, PageRequest};
use serde::Deserialize;
use time::OffsetDateTime;

use super::csrf::{CsrfToken, Form};
use super::page::{date, date_time, iso, ok, render, see_other, Base, FieldErrors, PageError};
use super::session::DashboardUser;
use crate::service::keys::{self as svc, KeySpec};
use crate::state::AppState;

/// A key as a row of the table.
pub struct KeyRow {
    pub id: String,
    pub name: String,
    pub description: String,
    pub start: String,
    pub last4: String,
    pub scope: &'static str,
    pub environment: &'static str,
    pub created: String,
    pub created_iso: String,
    pub last_used: Option<(String, String)>,
    pub expires: Option<String>,
    /// `active`, `revoked` or `expired`.
    pub status: &'static str,
    pub manageable: bool,
}

impl KeyRow {
    fn new(k: &ApiKey, now: OffsetDateTime, me: &DashboardUser) -> Self {
        let status = match k.status_at(now) {
            KeyStatus::Active => "active",
            KeyStatus::Revoked => "revoked",
            KeyStatus::Expired => "expired",
        };
        KeyRow {
            id: k.id.to_string(),
            name: k.name.clone(),
            description: k.description.clone(),
            start: k.start.clone(),
            last4: k.last4.clone(),
            scope: k.scope.as_str(),
            environment: k.environment.as_str(),
            created: date(k.created_at),
            created_iso: iso(k.created_at),
            last_used: k.last_used_at.map(|t| (date_time(t), iso(t))),
            expires: k.expires_at.map(date_time),
            status,
            manageable: status == "active" && k.scope <= me.scope(),
        }
    }
}

/// Every key of the account, newest first (an account has dozens of keys, not thousands; the
/// page shows the newest 500).
pub async fn all_keys(state: &AppState, me: &DashboardUser) -> Result<Vec<ApiKey>, PageError> {
    let mut keys = Vec::new();
    let mut after = None;
    loop {
        let page = state
            .store
            .list_keys(
                Some(&me.account.id),
                KeyFilter::All,
                OffsetDateTime::now_utc(),
                &PageRequest {
                    after: after.clone(),
                    limit: 100,
                },
            )
            .await?;
        after = page.items.last().map(|k| k.id.to_string());
        keys.extend(page.items);
        if !page.has_more || keys.len() >= 5000 {
            break;
        }
    }
    keys.reverse();
    keys.truncate(500);
    Ok(keys)
}

#[derive(Template)]
#[template(path = "dashboard/keys.html")]
struct KeysPage {
    base: Base,
    keys: Vec<KeyRow>,
    active_count: usize,
}

#[derive(Deserialize)]
pub struct NoticeQuery {
    notice: Option<String>,
}

pub async fn list_keys(
    State(state): State<AppState>,
    csrf: CsrfToken,
    me: DashboardUser,
    Query(q): Query<NoticeQuery>,
) -> Result<Response, PageError> {
    let now = OffsetDateTime::now_utc();
    let keys: Vec<KeyRow> = all_keys(&state, &me)
        .await?
        .iter()
        .map(|k| KeyRow::new(k, now, &me))
        .collect();
    let notice = match q.notice.as_deref() {
        Some("revoked") => {
            Some("The key is revoked: requests made with it are refused from now on.")
        }
        _ => None,
    };
    ok(&KeysPage {
        base: Base::signed_in(&state, &csrf, &me, "/keys").with_notice(notice),
        active_count: keys.iter().filter(|k| k.status == "active").count(),
        keys,
    })
}

/// A scope a user may choose, for the form.
pub struct ScopeChoice {
    pub value: &'static str,
    pub label: &'static str,
    pub hint: &'static str,
}

pub(super) fn scope_choices(me: &DashboardUser) -> Vec<ScopeChoice> {
    [
        ScopeChoice {
            value: "read",
            label: "Read",
            hint: "Read-only: GET requests.",
        },
        ScopeChoice {
            value: "write",
            label: "Write",
            hint: "Read and change: GET, POST, PUT and DELETE.",
        },
        ScopeChoice {
            value: "admin",
            label: "Admin",
            hint: "Everything, including settings and managing other keys.",
        },
    ]
    .into_iter()
    .filter(|c| c.value.parse::<Scope>().is_ok_and(|s| s <= me.scope()))
    .collect()
}

#[derive(Template)]
#[template(path = "dashboard/key_new.html")]
struct NewKeyPage {
    base: Base,
    scopes: Vec<ScopeChoice>,
    form: KeyForm,
    errors: FieldErrors,
    today: String,
}

#[derive(Deserialize, Default)]
pub struct KeyForm {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub scope: String,
    #[serde(default)]
    pub environment: String,
    /// `YYYY-MM-DD`, empty for no expiry.
    #[serde(default)]
    pub expires_on: String,
}

fn today() -> String {
    OffsetDateTime::now_utc().date().to_string()
}

pub async fn new_key(
    State(state): State<AppState>,
    csrf: CsrfToken,
    me: DashboardUser,
) -> Result<Response, PageError> {
    let form = KeyForm {
        scope: if me.scope() >= Scope::Write {
            "write"
        } else {
            "read"
        }
        .into(),
        environment: "live".into(),
        ..KeyForm::default()
    };
    ok(&NewKeyPage {
        base: Base::signed_in(&state, &csrf, &me, "/keys"),
        scopes: scope_choices(&me),
        form,
        errors: FieldErrors::default(),
        today: today(),
    })
}

/// The page that shows a new key's plaintext, once.
#[derive(Template)]
#[template(path = "dashboard/key_created.html")]
struct KeyCreatedPage {
    base: Base,
    key: KeyRow,
    plaintext: String,
    /// For a rolled key: until when the old one keeps working.
    old_until: Option<String>,
}

fn parse_form(form: &KeyForm, me: &DashboardUser, errors: &mut FieldErrors) -> Option<KeySpec> {
    let name = match svc::validate_key_name(&form.name) {
        Ok(n) => Some(n),
        Err(_) => {
            errors.add("name", "Give the key a name of 1 to 200 characters.");
            None
        }
    };
    let description = match svc::validate_description(&form.description) {
        Ok(d) => Some(d),
        Err(_) => {
            errors.add("description", "Keep the description under 1000 characters.");
            None
        }
    };
    let scope = match form.scope.parse::<Scope>() {
        Ok(s) if s <= me.scope() => Some(s),
        Ok(_) => {
            errors.add("scope", "Your role cannot create keys with this scope.");
            None
        }
        Err(_) => {
            errors.add("scope", "Choose a scope.");
            None
        }
    };
    let environment = Environment::parse(&form.environment);
    if environment.is_none() {
        errors.add("environment", "Choose live or test.");
    }
    let expires_at = match form.expires_on.trim() {
        "" => Some(None),
        day => match time::Date::parse(day, &time::format_description::well_known::Iso8601::DATE) {
            // The key works through the whole day it expires on (UTC).
            Ok(d) => {
                match svc::validate_expiry(d.next_day().unwrap_or(d).midnight().assume_utc()) {
                    Ok(at) => Some(Some(at)),
                    Err(_) => {
                        errors.add("expires_on", "Choose a day from today on.");
                        None
                    }
                }
            }
            Err(_) => {
                errors.add("expires_on", "Enter a date as YYYY-MM-DD.");
                None
            }
        },
    };
    Some(KeySpec {
        name: name?,
        description: description?,
        scope: scope?,
        environment: environment?,
        expires_at: expires_at?,
        metadata: serde_json::json!({}),
        rate_limit: None,
        permissions: Vec::new(),
    })
}

pub async fn create_key(
    State(state): State<AppState>,
    csrf: CsrfToken,
    me: DashboardUser,
    Form(form): Form<KeyForm>,
) -> Result<Response, PageError> {
    let mut errors = FieldErrors::default();
    let Some(spec) = parse_form(&form, &me, &mut errors) else {
        return render(
            StatusCode::BAD_REQUEST,
            &NewKeyPage {
                base: Base::signed_in(&state, &csrf, &me, "/keys"),
                scopes: scope_choices(&me),
                form,
                errors,
                today: today(),
            },
        );
    };
    let (record, generated) =
        svc::create_key(&state, Some(&me.account.id), Some(&me.user.id), spec).await?;
    ok(&KeyCreatedPage {
        base: Base::signed_in(&state, &csrf, &me, "/keys"),
        key: KeyRow::new(&record, OffsetDateTime::now_utc(), &me),
        plaintext: generated.into_plaintext(),
        old_until: None,
    })
}

/// One of the user's account's keys that they may manage; anything else is "not found".
async fn manageable_key(
    state: &AppState,
    me: &DashboardUser,
    id: &str,
) -> Result<ApiKey, PageError> {
    let id = KeyId::parse(id).ok_or(PageError::NotFound)?;
    let key = state
        .store
        .get_key(Some(&me.account.id), &id)
        .await
        .map_err(|_| PageError::NotFound)?;
    if key.scope > me.scope() {
        return Err(PageError::Forbidden(format!(
            "Your role can manage keys up to {} scope; this key has {} scope.",
            me.scope(),
            key.scope
        )));
    }
    Ok(key)
}

#[derive(Template)]
#[template(path = "dashboard/key_confirm.html")]
struct ConfirmPage {
    base: Base,
    key: KeyRow,
    /// `revoke` or `roll`.
    action: &'static str,
}

pub async fn confirm_revoke(
    State(state): State<AppState>,
    csrf: CsrfToken,
    me: DashboardUser,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let key = manageable_key(&state, &me, &id).await?;
    ok(&ConfirmPage {
        base: Base::signed_in(&state, &csrf, &me, "/keys"),
        key: KeyRow::new(&key, OffsetDateTime::now_utc(), &me),
        action: "revoke",
    })
}

pub async fn revoke_key(
    State(state): State<AppState>,
    me: DashboardUser,
    Path(id): Path<String>,
    Form(_): Form<serde::de::IgnoredAny>,
) -> Result<Response, PageError> {
    let key = manageable_key(&state, &me, &id).await?;
    svc::revoke_key(&state, key).await?;
    Ok(see_other("/keys?notice=revoked", &[]))
}

pub async fn confirm_roll(
    State(state): State<AppState>,
    csrf: CsrfToken,
    me: DashboardUser,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let key = manageable_key(&state, &me, &id).await?;
    if key.status_at(OffsetDateTime::now_utc()) != KeyStatus::Active {
        return Err(PageError::BadRequest(
            "Only an active key can be rolled.".into(),
        ));
    }
    ok(&ConfirmPage {
        base: Base::signed_in(&state, &csrf, &me, "/keys"),
        key: KeyRow::new(&key, OffsetDateTime::now_utc(), &me),
        action: "roll",
    })
}

#[derive(Deserialize)]
pub struct RollForm {
    #[serde(default)]
    grace_seconds: Option<u64>,
}

pub async fn roll_key(
    State(state): State<AppState>,
    csrf: CsrfToken,
    me: DashboardUser,
    Path(id): Path<String>,
    Form(form): Form<RollForm>,
) -> Result<Response, PageError> {
    let key = manageable_key(&state, &me, &id).await?;
    let grace = form
        .grace_seconds
        .unwrap_or(svc::DEFAULT_ROLL_GRACE_SECONDS);
    let (new, generated) = svc::roll_key(&state, key, grace, Some(&me.user.id)).await?;
    let old_until = (grace > 0)
        .then(|| date_time(OffsetDateTime::now_utc() + time::Duration::seconds(grace as i64)));
    ok(&KeyCreatedPage {
        base: Base::signed_in(&state, &csrf, &me, "/keys"),
        key: KeyRow::new(&new, OffsetDateTime::now_utc(), &me),
        plaintext: generated.into_plaintext(),
        old_until,
    })
}
