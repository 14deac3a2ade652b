//! The developer dashboard, `/`: server-rendered pages (askama templates in
//! `templates/dashboard/`) for signing up, verifying an email address, logging in and out,
//! resetting a password, accepting an invitation, and the signed-in pages: API Keys, Usage,
//! Webhooks, OAuth Apps and Account. Every page works without JavaScript; `app.js` only adds
//! the copy button. Pages use no inline script or style, so they work under a strict CSP
//! (`default-src 'self'`).
//!
//! Authorization is an extractor, as on the API: a handler that takes [`DashboardUser`] only
//! runs for a signed-in user (others are sent to `/login?next=…`), [`DashboardAdmin`] only
//! for an account's owner or admins. Every form is checked against CSRF by [`csrf::Form`].
//! The rules themselves (keys, users, accounts, passwords) are the services the API uses.

mod account;
mod assets;
mod auth;
pub mod csrf;
mod keys;
mod links;
mod oauth_apps;
pub mod page;
pub mod session;
mod usage;
mod webhooks;

use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;

pub use page::PageError;
pub use session::{DashboardAdmin, DashboardUser};

use crate::state::AppState;

/// Who may sign up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignupMode {
    /// Anyone may create an account from `/signup`.
    Open,
    /// Only people invited by an account's admin (and accounts made by an operator).
    Invite,
}

impl SignupMode {
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "open" => Some(SignupMode::Open),
            "invite" | "invite-only" | "invite_only" => Some(SignupMode::Invite),
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct DashboardConfig {
    pub signup: SignupMode,
    /// The dashboard's address as users reach it, for the links in mail, e.g.
    /// `https://my.example.com`. `None`: `http://<listen address>`. Never taken from a request's
    /// `Host`, which a client chooses (a reset link must not point to an attacker's host).
    pub public_url: Option<String>,
    /// Marks the session and CSRF cookies `Secure` (behind a TLS-terminating proxy; with `tls`
    /// configured they always are).
    pub cookie_secure: bool,
    /// How long a login lasts.
    pub session_ttl: Duration,
    /// Login attempts allowed per email address and client address.
    pub login_limit: keygate_core::gcra::Quota,
    /// The product name the pages and mail show.
    pub brand: String,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        DashboardConfig {
            signup: SignupMode::Open,
            public_url: None,
            cookie_secure: false,
            session_ttl: Duration::from_secs(12 * 3600),
            login_limit: keygate_core::gcra::Quota::new(5, Duration::from_secs(60))
                .unwrap_or_else(|_| unreachable!()),
            brand: "Keygate".into(),
        }
    }
}

/// One entry of the sidebar. The layout renders [`NAV`] in order; a new page (webhooks, say)
/// is one more entry here and a route below.
pub struct NavItem {
    pub label: &'static str,
    pub href: &'static str,
    /// The `d` of the icon's SVG path (24×24, stroked).
    pub icon: &'static str,
}

pub const NAV: &[NavItem] = &[
    NavItem {
        label: "API Keys",
        href: "/keys",
        icon: "M15 7a2 2 0 0 1 2 2m4 0a6 6 0 0 1-7.743 5.743L11 17H9v2H7v2H4a1 1 0 0 1-1-1v-2.586a1 1 0 0 1 .293-.707l5.964-5.964A6 6 0 1 1 21 9z",
    },
    NavItem {
        label: "Usage",
        href: "/usage",
        icon: "M9 19v-6a2 2 0 0 0-2-2H5a2 2 0 0 0-2 2v6a2 2 0 0 0 2 2h2a2 2 0 0 0 2-2zm0 0V9a2 2 0 0 1 2-2h2a2 2 0 0 1 2 2v10m-6 0a2 2 0 0 0 2 2h2a2 2 0 0 0 2-2m0 0V5a2 2 0 0 1 2-2h2a2 2 0 0 1 2 2v14a2 2 0 0 1-2 2h-2a2 2 0 0 1-2-2z",
    },
    NavItem {
        label: "Webhooks",
        href: "/webhooks",
        icon: "M13 10V3L4 14h7v7l9-11h-7z",
    },
    NavItem {
        label: "OAuth Apps",
        href: "/oauth-apps",
        icon: "M12 15v2m-6 4h12a2 2 0 0 0 2-2v-6a2 2 0 0 0-2-2H6a2 2 0 0 0-2 2v6a2 2 0 0 0 2 2zm10-10V7a4 4 0 0 0-8 0v4h8z",
    },
    NavItem {
        label: "Account",
        href: "/account",
        icon: "M17 20h5v-2a3 3 0 0 0-5.356-1.857M17 20H7m10 0v-2c0-.656-.126-1.283-.356-1.857M7 20H2v-2a3 3 0 0 1 5.356-1.857M7 20v-2c0-.656.126-1.283.356-1.857m0 0a5.002 5.002 0 0 1 9.288 0M15 7a3 3 0 1 1-6 0 3 3 0 0 1 6 0z",
    },
];

pub fn routes(state: &AppState) -> Router<AppState> {
    let pages = Router::new()
        .route("/", get(auth::home))
        .route("/signup", get(auth::signup_page).post(auth::signup))
        .route("/verify-email", get(auth::verify_email))
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/logout", post(auth::logout))
        .route(
            "/forgot-password",
            get(auth::forgot_page).post(auth::forgot),
        )
        .route("/reset-password", get(auth::reset_page).post(auth::reset))
        .route("/invite", get(auth::invite_page).post(auth::accept_invite))
        .route("/keys", get(keys::list_keys).post(keys::create_key))
        .route("/keys/new", get(keys::new_key))
        .route(
            "/keys/{id}/revoke",
            get(keys::confirm_revoke).post(keys::revoke_key),
        )
        .route(
            "/keys/{id}/roll",
            get(keys::confirm_roll).post(keys::roll_key),
        )
        .route("/usage", get(usage::usage_page))
        .route("/webhooks", get(webhooks::list).post(webhooks::create))
        .route("/webhooks/new", get(webhooks::new_endpoint))
        .route("/webhooks/{id}", get(webhooks::show))
        .route("/webhooks/{id}/test", post(webhooks::send_test))
        .route("/webhooks/{id}/enable", post(webhooks::enable))
        .route("/webhooks/{id}/disable", post(webhooks::disable))
        .route(
            "/webhooks/{id}/rotate",
            get(webhooks::confirm_rotate).post(webhooks::rotate),
        )
        .route(
            "/webhooks/{id}/delete",
            get(webhooks::confirm_delete).post(webhooks::delete),
        )
        .route(
            "/webhooks/{id}/deliveries/{delivery}/replay",
            post(webhooks::replay),
        )
        .route(
            "/oauth-apps",
            get(oauth_apps::list).post(oauth_apps::create),
        )
        .route("/oauth-apps/new", get(oauth_apps::new_app))
        .route(
            "/oauth-apps/{id}/delete",
            get(oauth_apps::confirm_delete).post(oauth_apps::delete),
        )
        .route(
            "/oauth-apps/consents/{client_id}/revoke",
            post(oauth_apps::revoke_consent),
        )
        .route("/account", get(account::account_page))
        .route("/account/invites", post(account::invite_user))
        .route("/account/users/{id}/role", post(account::change_role))
        .route(
            "/account/users/{id}/remove",
            get(account::confirm_remove).post(account::remove_user),
        )
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            csrf::ensure_cookie,
        ));
    pages.merge(assets::routes())
}
