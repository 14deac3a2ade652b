//! One-time links sent by mail: email verification, password reset and invitations. The link
//! carries 32 random bytes; the store keeps their SHA-256 with the purpose, the account, the
//! user and an expiry, and gives a link out once (`use_email_link`). The messages are written
//! here, in one place.

use keygate_core::{AccountId, UserId};
use keygate_store::{EmailLink, LinkPurpose, Role};
use time::Duration;

use super::page::PageError;
use super::session::secret_hash;
use crate::mailer::Mail;
use crate::state::AppState;

pub const VERIFY_TTL: Duration = Duration::hours(48);
pub const RESET_TTL: Duration = Duration::hours(1);
pub const INVITE_TTL: Duration = Duration::days(7);

/// The dashboard's address for links: the configured public URL, else the listen address.
pub fn base_url(state: &AppState) -> String {
    match &state.config.dashboard.public_url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => format!("http://{}", state.config.listen),
    }
}

pub struct NewLink<'a> {
    pub purpose: LinkPurpose,
    pub account: &'a AccountId,
    pub user: Option<&'a UserId>,
    pub email: &'a str,
    pub role: Option<Role>,
    pub created_by: Option<&'a UserId>,
}

/// Stores a new link and returns its URL (`<base>/<path>?token=…`).
pub async fn issue(state: &AppState, link: NewLink<'_>, path: &str) -> Result<String, PageError> {
    let token = super::csrf::random_token()?;
    let now = crate::service::now();
    let ttl = match link.purpose {
        LinkPurpose::VerifyEmail => VERIFY_TTL,
        LinkPurpose::ResetPassword => RESET_TTL,
        LinkPurpose::Invite => INVITE_TTL,
    };
    state
        .store
        .create_email_link(&EmailLink {
            token_hash: secret_hash(&token),
            purpose: link.purpose,
            account_id: link.account.clone(),
            user_id: link.user.cloned(),
            email: link.email.to_owned(),
            role: link.role,
            created_by: link.created_by.cloned(),
            created_at: now,
            expires_at: now + ttl,
            used_at: None,
        })
        .await?;
    Ok(format!("{}{path}?token={token}", base_url(state)))
}

async fn send(state: &AppState, to: &str, subject: String, text: String) -> Result<(), PageError> {
    state
        .mailer
        .send(Mail {
            to: to.to_owned(),
            subject,
            text,
        })
        .await
        .map_err(|e| PageError::Internal(e.context("sending mail")))
}

pub async fn send_verification(
    state: &AppState,
    account: &AccountId,
    user: &UserId,
    email: &str,
) -> Result<(), PageError> {
    let brand = &state.config.dashboard.brand;
    let url = issue(
        state,
        NewLink {
            purpose: LinkPurpose::VerifyEmail,
            account,
            user: Some(user),
            email,
            role: None,
            created_by: None,
        },
        "/verify-email",
    )
    .await?;
    send(
        state,
        email,
        format!("Verify your email address for {brand}"),
        format!(
            "Welcome to {brand}!\n\nOpen this link to verify your email address and finish signing up:\n\n{url}\n\nThe link works once, for 48 hours. If you did not sign up, ignore this message.\n"
        ),
    )
    .await
}

pub async fn send_already_registered(state: &AppState, email: &str) -> Result<(), PageError> {
    let brand = &state.config.dashboard.brand;
    let base = base_url(state);
    send(
        state,
        email,
        format!("Your {brand} account"),
        format!(
            "Someone (hopefully you) tried to sign up for {brand} with this address, which already has an account.\n\nLog in: {base}/login\nForgot your password? {base}/forgot-password\n\nIf it was not you, ignore this message: nothing changed.\n"
        ),
    )
    .await
}

pub async fn send_reset(
    state: &AppState,
    account: &AccountId,
    user: &UserId,
    email: &str,
) -> Result<(), PageError> {
    let brand = &state.config.dashboard.brand;
    let url = issue(
        state,
        NewLink {
            purpose: LinkPurpose::ResetPassword,
            account,
            user: Some(user),
            email,
            role: None,
            created_by: None,
        },
        "/reset-password",
    )
    .await?;
    send(
        state,
        email,
        format!("Reset your {brand} password"),
        format!(
            "Open this link to choose a new password:\n\n{url}\n\nThe link works once, for one hour. If you did not ask for it, ignore this message: your password has not changed.\n"
        ),
    )
    .await
}

pub async fn send_invite(
    state: &AppState,
    account: &keygate_store::Account,
    inviter: &keygate_store::User,
    email: &str,
    role: Role,
) -> Result<(), PageError> {
    let brand = &state.config.dashboard.brand;
    let url = issue(
        state,
        NewLink {
            purpose: LinkPurpose::Invite,
            account: &account.id,
            user: None,
            email,
            role: Some(role),
            created_by: Some(&inviter.id),
        },
        "/invite",
    )
    .await?;
    let who = format!("{} {}", inviter.first_name, inviter.last_name)
        .trim()
        .to_owned();
    let who = if who.is_empty() {
        inviter.email.clone()
    } else {
        who
    };
    send(
        state,
        email,
        format!("{who} invited you to {} on {brand}", account.name),
        format!(
            "{who} invited you to join {} on {brand} as {}.\n\nAccept the invitation and choose your password:\n\n{url}\n\nThe link works once, for 7 days.\n",
            account.name,
            super::page::role_label(role).to_lowercase()
        ),
    )
    .await
}
