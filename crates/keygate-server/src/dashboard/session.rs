//! Login sessions. The cookie `kg_session` holds 32 random bytes; the store keeps only their
//! SHA-256, with the user, the account and an expiry. Logging out deletes the row, so a copied
//! cookie stops working at once; a password reset deletes all of the user's rows.
//!
//! [`DashboardUser`] is how a handler (a dashboard page, or later the OAuth consent page) asks
//! for a signed-in user: without a valid session the request is answered with a redirect to
//! `/login?next=<this page>`, and the login page sends the user back there.

use std::net::IpAddr;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::HeaderValue;
use keygate_store::{Account, AccountStatus, Role, Session, StoreError, User};
use sha2::Digest as _;
use time::OffsetDateTime;

use super::csrf::{cookie, random_token, set_cookie};
use super::page::PageError;
use crate::http::ApiError;
use crate::state::AppState;

pub const COOKIE: &str = "kg_session";

/// The SHA-256 (hex) under which a secret (a session token, a mailed link's token) is stored.
pub fn secret_hash(secret: &str) -> String {
    hex::encode(sha2::Sha256::digest(secret.as_bytes()))
}

/// Starts a session for `user`; the `Set-Cookie` that carries it.
pub async fn start(state: &AppState, user: &User) -> Result<HeaderValue, PageError> {
    let token = random_token()?;
    let now = crate::service::now();
    let ttl = state.config.dashboard.session_ttl;
    // Expired sessions and links are dropped here, now and then, rather than by a timer.
    if let Err(err) = state.store.prune_dashboard(now).await {
        tracing::warn!(error = %err, "pruning expired dashboard sessions failed");
    }
    state
        .store
        .create_session(&Session {
            token_hash: secret_hash(&token),
            account_id: user.account_id.clone(),
            user_id: user.id.clone(),
            created_at: now,
            expires_at: now + ttl,
        })
        .await?;
    tracing::info!(user_id = %user.id, "dashboard login");
    Ok(set_cookie(state, COOKIE, &token, Some(ttl.as_secs())))
}

/// Ends the session the request carries (if any); the `Set-Cookie` that deletes the cookie.
pub async fn end(state: &AppState, parts_cookie: Option<&str>) -> Result<HeaderValue, PageError> {
    if let Some(token) = parts_cookie {
        state.store.delete_session(&secret_hash(token)).await?;
    }
    Ok(set_cookie(state, COOKIE, "", Some(0)))
}

/// A signed-in user of the dashboard, with their account and session.
pub struct DashboardUser {
    pub user: User,
    pub account: Account,
    pub session: Session,
}

impl DashboardUser {
    /// The scope this user may grant or manage keys up to (as their own credentials carry).
    pub fn scope(&self) -> keygate_core::Scope {
        crate::http::auth::user_scope(self.user.role)
    }

    pub fn is_admin(&self) -> bool {
        self.user.role >= Role::Admin
    }
}

/// Where a login should return to: a path of this site, never another host.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.starts_with("/\\")
                && n.len() <= 2000
                && !n.chars().any(|c| c.is_control()) =>
        {
            n.to_owned()
        }
        _ => "/keys".to_owned(),
    }
}

impl FromRequestParts<AppState> for DashboardUser {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, PageError> {
        let here = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let login = || PageError::Login { next: here.clone() };
        let Some(token) = cookie(&parts.headers, COOKIE) else {
            return Err(login());
        };
        let session = match state
            .store
            .find_session(&secret_hash(token), OffsetDateTime::now_utc())
            .await
        {
            Ok(s) => s,
            Err(StoreError::NotFound) => return Err(login()),
            Err(err) => return Err(err.into()),
        };
        let entry = match crate::http::auth::load_user(state, &session.account_id, &session.user_id)
            .await
        {
            Ok(e) => e,
            Err(ApiError::Unauthorized(_)) => return Err(login()),
            Err(err) => return Err(err.into()),
        };
        if entry.account.status != AccountStatus::Active {
            return Err(PageError::Forbidden("This account is disabled.".into()));
        }
        // What this user does through the services is audited as theirs.
        crate::http::request_id::set_principal(&crate::http::auth::Principal {
            scope: crate::http::auth::user_scope(entry.user.role),
            account_id: Some(entry.account.id.clone()),
            user_id: Some(entry.user.id.clone()),
            key: None,
            user: Some(entry.clone()),
            token: None,
            oauth: None,
        });
        Ok(DashboardUser {
            user: entry.user.clone(),
            account: entry.account.clone(),
            session,
        })
    }
}

/// A signed-in owner or admin of their account.
pub struct DashboardAdmin(pub DashboardUser);

impl FromRequestParts<AppState> for DashboardAdmin {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, PageError> {
        let me = DashboardUser::from_request_parts(parts, state).await?;
        if !me.is_admin() {
            return Err(PageError::Forbidden(
                "Only the account's owner and admins can do this.".into(),
            ));
        }
        Ok(DashboardAdmin(me))
    }
}

/// The client's address, for throttling: the one `http::client` decided (the TCP peer, or what
/// a trusted proxy says), so a forged `X-Forwarded-For` cannot dodge the login limit.
pub struct ClientIp(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(Some(crate::http::client::of_parts(parts).addr)))
    }
}

/// The raw session cookie of a request, for logging out.
pub struct SessionCookie(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for SessionCookie {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(SessionCookie(
            cookie(&parts.headers, COOKIE).map(str::to_owned),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_returns_only_to_a_path_of_this_site() {
        assert_eq!(safe_next(Some("/usage?days=7")), "/usage?days=7");
        assert_eq!(
            safe_next(Some("/oauth/authorize?client_id=x")),
            "/oauth/authorize?client_id=x"
        );
        for bad in [
            "https://evil.example",
            "//evil.example",
            "/\\evil.example",
            "keys",
            "",
        ] {
            assert_eq!(safe_next(Some(bad)), "/keys", "{bad}");
        }
        assert_eq!(safe_next(None), "/keys");
    }
}
