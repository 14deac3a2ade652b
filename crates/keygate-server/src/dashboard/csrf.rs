//! CSRF protection for every form: a double-submit token. Each browser gets a random token in
//! an HttpOnly, SameSite=Lax cookie (set by [`ensure_cookie`] on its first page), every form
//! carries the same token in a hidden `csrf` field, and [`Form`] accepts a POST only when the
//! two match. Another site can make a browser send the cookie, but cannot read it to fill the
//! field. A request the browser itself marks `Sec-Fetch-Site: cross-site` is refused outright.

use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::page::{PageError, BRAND};
use crate::state::AppState;

pub const COOKIE: &str = "kg_csrf";

/// This browser's CSRF token, for the forms of the page being made.
#[derive(Clone, Debug)]
pub struct CsrfToken(pub String);

/// A fresh random token: 32 bytes, base64url.
pub fn random_token() -> Result<String, PageError> {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| PageError::Internal(anyhow::anyhow!("the system random source failed")))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

fn well_formed(token: &str) -> bool {
    token.len() == 43
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The value of the cookie `name`, if the request carries it.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// `Set-Cookie` for a cookie of the dashboard: HttpOnly, SameSite=Lax, `Secure` when so
/// configured or behind TLS (`Config::secure_cookies`); `max_age` `None` for a browser-session
/// cookie, `Some(0)` to delete it.
pub fn set_cookie(state: &AppState, name: &str, value: &str, max_age: Option<u64>) -> HeaderValue {
    let mut c = format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax");
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    // Behind TLS (ours, or a trusted proxy's) cookies are `Secure` without being told.
    if state.config.dashboard.cookie_secure || state.config.secure_cookies() {
        c.push_str("; Secure");
    }
    HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Middleware of every dashboard page: gives a browser without a CSRF cookie a new token (for
/// the forms of this very page, and in a cookie for the POST that follows), and marks every
/// answer `Cache-Control: no-store`, since pages show keys and account data.
pub async fn ensure_cookie(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let existing = cookie(req.headers(), COOKIE)
        .filter(|t| well_formed(t))
        .map(str::to_owned);
    let (token, fresh) = match existing {
        Some(t) => (t, false),
        None => match random_token() {
            Ok(t) => (t, true),
            Err(e) => return axum::response::IntoResponse::into_response(e),
        },
    };
    req.extensions_mut().insert(CsrfToken(token.clone()));
    let brand = state.config.dashboard.brand.clone();
    let mut response = BRAND.scope(brand, next.run(req)).await;
    if fresh {
        response
            .headers_mut()
            .append(header::SET_COOKIE, set_cookie(&state, COOKIE, &token, None));
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

impl<S: Send + Sync> FromRequestParts<S> for CsrfToken {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, PageError> {
        parts.extensions.get::<CsrfToken>().cloned().ok_or_else(|| {
            PageError::Internal(anyhow::anyhow!(
                "no CSRF token: the dashboard middleware did not run"
            ))
        })
    }
}

/// A submitted form (`application/x-www-form-urlencoded`), accepted only with the right CSRF
/// token. The form type never sees the `csrf` field.
pub struct Form<T>(pub T);

#[derive(Deserialize)]
struct TokenField {
    csrf: Option<String>,
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Form<T> {
    type Rejection = PageError;

    async fn from_request(req: Request, state: &S) -> Result<Self, PageError> {
        let cross_site = req
            .headers()
            .get("sec-fetch-site")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"));
        if cross_site {
            return Err(PageError::Csrf);
        }
        let expected = cookie(req.headers(), COOKIE).map(str::to_owned);
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|_| PageError::BadRequest("The form could not be read.".into()))?;
        let sent: TokenField = serde_urlencoded::from_bytes(&bytes).map_err(|_| PageError::Csrf)?;
        let matches = match (expected.as_deref(), sent.csrf.as_deref()) {
            (Some(c), Some(f)) if well_formed(c) => {
                aws_lc_rs::constant_time::verify_slices_are_equal(c.as_bytes(), f.as_bytes())
                    .is_ok()
            }
            _ => false,
        };
        if !matches {
            return Err(PageError::Csrf);
        }
        serde_urlencoded::from_bytes(&bytes)
            .map(Form)
            .map_err(|e| PageError::BadRequest(format!("The form is incomplete: {e}.")))
    }
}
