//! What the developer dashboard stores: browser sessions, and the one-time links it mails
//! (email verification, password reset, invitations). Both are found by the SHA-256 of their
//! secret, never by the secret itself, so a copy of the database opens no session and follows
//! no link.

use keygate_core::{AccountId, UserId};
use time::OffsetDateTime;

use crate::Role;

/// A signed-in browser. The cookie holds a random token; only its SHA-256 (hex) is kept.
#[derive(Clone, Debug, PartialEq)]
pub struct Session {
    pub token_hash: String,
    pub account_id: AccountId,
    pub user_id: UserId,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

/// What a mailed link lets its holder do, once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkPurpose {
    /// Proves that the user reads mail at `email`.
    VerifyEmail,
    /// Sets a new password for `user_id`.
    ResetPassword,
    /// Joins `account_id` as a new user with `email` and `role`.
    Invite,
}

impl LinkPurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkPurpose::VerifyEmail => "verify_email",
            LinkPurpose::ResetPassword => "reset_password",
            LinkPurpose::Invite => "invite",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "verify_email" => LinkPurpose::VerifyEmail,
            "reset_password" => LinkPurpose::ResetPassword,
            "invite" => LinkPurpose::Invite,
            _ => return None,
        })
    }
}

/// A one-time link as stored: the SHA-256 (hex) of the secret in its URL, and what it is for.
#[derive(Clone, Debug, PartialEq)]
pub struct EmailLink {
    pub token_hash: String,
    pub purpose: LinkPurpose,
    pub account_id: AccountId,
    /// The user it concerns; `None` for an invitation (the user does not exist yet).
    pub user_id: Option<UserId>,
    /// Where it was sent.
    pub email: String,
    /// For an invitation: the role the new user gets.
    pub role: Option<Role>,
    pub created_by: Option<UserId>,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub used_at: Option<OffsetDateTime>,
}
