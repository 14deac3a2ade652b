//! What every page shares: the frame the layouts read ([`Base`]), form errors, the one error
//! type of the dashboard surface and how it is shown, and how dates are written.

use askama::Template;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use keygate_store::Role;
use time::OffsetDateTime;

use super::csrf::CsrfToken;
use super::session::DashboardUser;
use super::{NavItem, NAV};
use crate::http::ApiError;
use crate::state::AppState;

/// The signed-in user, as the layout shows them.
pub struct Who {
    pub name: String,
    pub email: String,
    pub account: String,
    pub role: &'static str,
    pub initials: String,
}

/// What the layouts need: the CSRF token of every form, the sidebar and who is signed in.
pub struct Base {
    pub brand: String,
    pub csrf: String,
    pub asset_version: &'static str,
    pub nav: &'static [NavItem],
    /// The `href` of the sidebar entry to mark as current.
    pub active: &'static str,
    pub who: Option<Who>,
    /// A one-line confirmation shown above the page (after a redirect).
    pub notice: Option<String>,
}

impl Base {
    pub fn anonymous(state: &AppState, csrf: &CsrfToken) -> Self {
        Base {
            brand: state.config.dashboard.brand.clone(),
            csrf: csrf.0.clone(),
            asset_version: super::assets::version(),
            nav: NAV,
            active: "",
            who: None,
            notice: None,
        }
    }

    pub fn signed_in(
        state: &AppState,
        csrf: &CsrfToken,
        me: &DashboardUser,
        active: &'static str,
    ) -> Self {
        let u = &me.user;
        let name = format!("{} {}", u.first_name, u.last_name)
            .trim()
            .to_owned();
        let shown = if name.is_empty() {
            u.email.clone()
        } else {
            name
        };
        let initials: String = shown
            .split_whitespace()
            .filter_map(|w| w.chars().next())
            .take(2)
            .collect::<String>()
            .to_uppercase();
        Base {
            who: Some(Who {
                name: shown,
                email: u.email.clone(),
                account: me.account.name.clone(),
                role: role_label(u.role),
                initials,
            }),
            active,
            ..Base::anonymous(state, csrf)
        }
    }

    pub fn with_notice(mut self, notice: Option<&str>) -> Self {
        self.notice = notice.map(str::to_owned);
        self
    }
}

pub fn role_label(role: Role) -> &'static str {
    match role {
        Role::Owner => "Owner",
        Role::Admin => "Admin",
        Role::Member => "Member",
    }
}

/// Messages for the fields of a form, by field name, shown beside each field and in a summary.
#[derive(Default)]
pub struct FieldErrors(pub Vec<(&'static str, String)>);

impl FieldErrors {
    pub fn get(&self, field: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, m)| m.as_str())
    }

    pub fn has(&self, field: &str) -> bool {
        self.get(field).is_some()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn add(&mut self, field: &'static str, message: impl Into<String>) {
        self.0.push((field, message.into()));
    }

    /// Files a service's validation error under the form field it concerns (`fields` maps the
    /// service's field names to the form's); other client errors go under `form`, and
    /// anything else is the page's error.
    pub fn absorb(
        &mut self,
        err: ApiError,
        fields: &[(&str, &'static str)],
    ) -> Result<(), PageError> {
        match err {
            ApiError::InvalidInput { message, details } => {
                let named = details
                    .as_ref()
                    .and_then(|d| d["field"].as_str())
                    .and_then(|f| fields.iter().find(|(from, _)| *from == f))
                    .map(|(_, to)| *to);
                let reason = details
                    .as_ref()
                    .and_then(|d| d["reason"].as_str())
                    .map(str::to_owned);
                match (named, reason) {
                    (Some(field), Some(reason)) => self.add(field, capitalized(&reason)),
                    _ => self.add("form", capitalized(&message)),
                }
                Ok(())
            }
            ApiError::Conflict(m) | ApiError::Forbidden(m) => {
                self.add("form", capitalized(&m));
                Ok(())
            }
            other => Err(other.into()),
        }
    }
}

fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(first) => {
            let mut out: String = first.to_uppercase().collect();
            out.push_str(c.as_str());
            if !out.ends_with('.') {
                out.push('.');
            }
            out
        }
        None => String::new(),
    }
}

/// The dashboard's one error type: each becomes a page (or, for a missing login, a redirect).
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    /// Not signed in: to the login page, then back to `next`.
    #[error("login required")]
    Login { next: String },
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Forbidden(String),
    /// The form's CSRF token is missing or wrong, or it came from another site.
    #[error("csrf")]
    Csrf,
    #[error("{0}")]
    BadRequest(String),
    #[error("too many requests")]
    TooMany { retry_after: std::time::Duration },
    #[error("{0}")]
    Internal(#[from] anyhow::Error),
}

impl From<ApiError> for PageError {
    fn from(err: ApiError) -> Self {
        match err {
            ApiError::NotFound(_) => PageError::NotFound,
            ApiError::Forbidden(m) => PageError::Forbidden(m),
            ApiError::Unauthorized(m) => PageError::Forbidden(m),
            ApiError::RateLimited { retry_after } => PageError::TooMany { retry_after },
            ApiError::InvalidInput { message, .. } => PageError::BadRequest(message),
            ApiError::Conflict(m) => PageError::BadRequest(m),
            ApiError::Internal(e) => PageError::Internal(e),
            other => PageError::Internal(anyhow::anyhow!("{other}")),
        }
    }
}

impl From<keygate_store::StoreError> for PageError {
    fn from(err: keygate_store::StoreError) -> Self {
        ApiError::from(err).into()
    }
}

#[derive(Template)]
#[template(path = "dashboard/error.html")]
struct ErrorPage {
    brand: String,
    asset_version: &'static str,
    title: &'static str,
    message: String,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, title, message) = match self {
            PageError::Login { next } => {
                let query = serde_urlencoded::to_string([("next", next.as_str())])
                    .unwrap_or_default();
                return Redirect::to(&format!("/login?{query}")).into_response();
            }
            PageError::NotFound => (
                StatusCode::NOT_FOUND,
                "Page not found",
                "There is nothing here, or it belongs to another account.".to_owned(),
            ),
            PageError::Forbidden(m) => (StatusCode::FORBIDDEN, "Not allowed", m),
            PageError::Csrf => (
                StatusCode::FORBIDDEN,
                "This form has expired",
                "For your security the form could not be accepted. Go back, reload the page and try again.".to_owned(),
            ),
            PageError::BadRequest(m) => (StatusCode::BAD_REQUEST, "Something is not right", m),
            PageError::TooMany { retry_after } => (
                StatusCode::TOO_MANY_REQUESTS,
                "Too many attempts",
                format!(
                    "Please wait {} and try again.",
                    wait_text(retry_after)
                ),
            ),
            PageError::Internal(err) => {
                tracing::error!(error = %format!("{err:#}"), "dashboard error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong",
                    "An internal error occurred; it has been logged. Please try again in a moment."
                        .to_owned(),
                )
            }
        };
        let page = ErrorPage {
            brand: BRAND
                .try_with(Clone::clone)
                .unwrap_or_else(|_| "Keygate".to_owned()),
            asset_version: super::assets::version(),
            title,
            message,
        };
        match page.render() {
            Ok(html) => (status, Html(html)).into_response(),
            Err(_) => (status, title).into_response(),
        }
    }
}

tokio::task_local! {
    /// The deployment's brand, for error pages (which are made without the state): set around
    /// each dashboard request by the middleware in `csrf.rs`.
    pub static BRAND: String;
}

pub fn wait_text(d: std::time::Duration) -> String {
    let secs = d.as_secs_f64().ceil().max(1.0) as u64;
    if secs < 90 {
        format!("{secs} seconds")
    } else {
        format!("{} minutes", secs.div_ceil(60))
    }
}

/// Renders a template as a page with `status`.
pub fn render(status: StatusCode, page: &impl Template) -> Result<Response, PageError> {
    let html = page
        .render()
        .map_err(|e| PageError::Internal(anyhow::anyhow!("rendering a page: {e}")))?;
    Ok((status, Html(html)).into_response())
}

pub fn ok(page: &impl Template) -> Result<Response, PageError> {
    render(StatusCode::OK, page)
}

/// A 303 to `to`, with `cookies` set.
pub fn see_other(to: &str, cookies: &[HeaderValue]) -> Response {
    let mut r = Redirect::to(to).into_response();
    for c in cookies {
        r.headers_mut().append(header::SET_COOKIE, c.clone());
    }
    r
}

/// `Nov 24, 2026`.
pub fn date(t: OffsetDateTime) -> String {
    t.format(time::macros::format_description!(
        "[month repr:short] [day padding:none], [year]"
    ))
    .unwrap_or_default()
}

/// `Nov 24, 2026, 09:57 UTC`.
pub fn date_time(t: OffsetDateTime) -> String {
    t.format(time::macros::format_description!(
        "[month repr:short] [day padding:none], [year], [hour]:[minute] UTC"
    ))
    .unwrap_or_default()
}

/// The machine-readable form for `<time datetime>`.
pub fn iso(t: OffsetDateTime) -> String {
    crate::service::rfc3339(t)
}
