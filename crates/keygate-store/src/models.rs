//! The stored records. Timestamps are UTC; backends keep them as Unix milliseconds so the same
//! SQL sorts and compares them on SQLite and PostgreSQL alike.

use std::sync::Arc;

use keygate_core::{AccountId, Environment, KeyHash, KeyId, Scope, UserId};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccountStatus {
    Active,
    Disabled,
}

impl AccountStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountStatus::Active => "active",
            AccountStatus::Disabled => "disabled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(AccountStatus::Active),
            "disabled" => Some(AccountStatus::Disabled),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Account {
    pub id: AccountId,
    /// Unique, case-insensitively: `/v2/user_auth` finds an account by it.
    pub name: String,
    pub email: String,
    pub plan: String,
    pub status: AccountStatus,
    /// The account's own API key: the one `/v2/accounts/{id}/api_key` shows and re-creates.
    pub api_key_id: Option<KeyId>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Member,
    Admin,
    Owner,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Member => "member",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "member" => Some(Role::Member),
            "admin" => Some(Role::Admin),
            "owner" => Some(Role::Owner),
            _ => None,
        }
    }
}

/// Password verifiers. `password` is a PHC string (Argon2id) of the password itself (dashboard
/// login). `md5` and `sha1` are lookup values for Crossbar's `credentials` (the hex digest of
/// `"username:password"`): an HMAC of the digest under a secret derived from the master key, so
/// `user_auth` finds the user by an index, and the database alone reveals nothing to search.
#[derive(Clone, Default, PartialEq)]
pub struct PasswordVerifiers {
    pub password: Option<String>,
    pub md5: Option<String>,
    pub sha1: Option<String>,
}

impl std::fmt::Debug for PasswordVerifiers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PasswordVerifiers(set: {})", self.password.is_some())
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct User {
    pub id: UserId,
    pub account_id: AccountId,
    pub email: String,
    /// Lower-cased; unique within the account.
    pub username: String,
    pub first_name: String,
    pub last_name: String,
    pub role: Role,
    pub verifiers: PasswordVerifiers,
    /// When the user last proved they read mail at `email` (a dashboard link); a new address
    /// clears it.
    pub email_verified_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ApiKey {
    pub id: KeyId,
    /// `None` for an operator key, which acts across all accounts.
    pub account_id: Option<AccountId>,
    pub created_by: Option<UserId>,
    pub name: String,
    pub description: String,
    pub scope: Scope,
    pub environment: Environment,
    pub hash: KeyHash,
    /// `ak_live_AbCd`: shown in lists so a person can tell keys apart.
    pub start: String,
    pub last4: String,
    pub expires_at: Option<OffsetDateTime>,
    pub revoked_at: Option<OffsetDateTime>,
    /// The key that replaced this one, when it was rolled.
    pub rolled_to: Option<KeyId>,
    /// A per-key limit such as `"10/second"`, below the account's plan.
    pub rate_limit: Option<String>,
    /// Permissions beside the scope, such as `verify` (the verification API).
    pub permissions: Vec<String>,
    pub metadata: serde_json::Value,
    pub created_at: OffsetDateTime,
    pub last_used_at: Option<OffsetDateTime>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyStatus {
    Active,
    Revoked,
    Expired,
}

impl ApiKey {
    pub fn status_at(&self, now: OffsetDateTime) -> KeyStatus {
        if self.revoked_at.is_some_and(|t| t <= now) {
            KeyStatus::Revoked
        } else if self.expires_at.is_some_and(|t| t <= now) {
            KeyStatus::Expired
        } else {
            KeyStatus::Active
        }
    }

    pub fn is_operator(&self) -> bool {
        self.account_id.is_none()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum KeyFilter {
    #[default]
    All,
    Active,
    Revoked,
    Expired,
}

/// What authentication needs to know about a key, read in one query.
#[derive(Clone, Debug)]
pub struct KeyWithAccount {
    pub key: ApiKey,
    /// `None` for operator keys. Shared: a server caching many keys of one account can hold
    /// one copy of it for all of them (see the server's key cache).
    pub account: Option<Arc<Account>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UsageRow {
    pub key_id: KeyId,
    pub day: i32,
    pub requests: u64,
}

/// A token signing key as stored: the private half sealed with the master key (JSON of
/// `keygate_token::SealedKey`). The newest key without `retired_at` signs.
#[derive(Clone, Debug, PartialEq)]
pub struct SigningKeyRecord {
    pub kid: String,
    pub alg: String,
    pub sealed: String,
    pub created_at: OffsetDateTime,
    pub retired_at: Option<OffsetDateTime>,
}

/// What a revocation entry invalidates on every node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevocationKind {
    /// `subject` is a token id (`jti`) logged out.
    Token,
    /// `subject` is the hex hash of a key that changed (revoked, rolled, patched).
    Key,
    /// `subject` is a user id that changed or was deleted.
    User,
    /// `subject` is an account id that changed or was deleted.
    Account,
    /// The signing keys changed: reload them.
    SigningKeys,
}

impl RevocationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RevocationKind::Token => "token",
            RevocationKind::Key => "key",
            RevocationKind::User => "user",
            RevocationKind::Account => "account",
            RevocationKind::SigningKeys => "signing_keys",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "token" => RevocationKind::Token,
            "key" => RevocationKind::Key,
            "user" => RevocationKind::User,
            "account" => RevocationKind::Account,
            "signing_keys" => RevocationKind::SigningKeys,
            _ => return None,
        })
    }
}

/// An entry of the revocation feed every node polls (see the server's `revocation.rs`).
#[derive(Clone, Debug, PartialEq)]
pub struct Revocation {
    /// Assigned by the store (ascending); ignored when publishing.
    pub id: i64,
    pub kind: RevocationKind,
    pub subject: String,
    /// After this the entry no longer matters (a token's expiry) and may be pruned.
    pub expires_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
}

/// Which Crossbar digest a `user_auth` credential is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialDigest {
    Md5,
    Sha1,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CreditKind {
    /// Credits added by an operator.
    Grant,
    /// Credits spent by a request.
    Debit,
    /// The plan's monthly allowance topping the balance up.
    Refill,
}

impl CreditKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CreditKind::Grant => "grant",
            CreditKind::Debit => "debit",
            CreditKind::Refill => "refill",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "grant" => Some(CreditKind::Grant),
            "debit" => Some(CreditKind::Debit),
            "refill" => Some(CreditKind::Refill),
            _ => None,
        }
    }
}

/// One line of an account's credit ledger. `amount` is negative for a debit.
#[derive(Clone, Debug, PartialEq)]
pub struct CreditEntry {
    pub id: String,
    pub account_id: AccountId,
    pub amount: i64,
    /// The balance once this entry applied; set by the store.
    pub balance_after: i64,
    pub kind: CreditKind,
    /// Unique per account: applying the same key twice applies it once.
    pub idempotency_key: String,
    pub description: String,
    pub key_id: Option<KeyId>,
    pub created_at: OffsetDateTime,
}

#[derive(Clone, Debug, PartialEq)]
pub enum CreditOutcome {
    Applied(CreditEntry),
    /// An entry with this idempotency key was applied before: this is it, unchanged.
    Duplicate(CreditEntry),
    /// A debit larger than the balance; nothing changed.
    Insufficient {
        available: i64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreditState {
    pub balance: i64,
    /// The sum of all debits.
    pub used: i64,
    /// The month (`YYYY-MM`) of the last plan refill.
    pub period: Option<String>,
}

/// One entry of the audit log: a security-relevant act, who did it, from where, to what. Never
/// a secret: `details` holds names, scopes, amounts, never a key, token or password.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditEntry {
    /// `aud_` and a UUIDv7: ids sort in time order.
    pub id: String,
    pub at: OffsetDateTime,
    /// A dotted name such as `key.created` (the server lists them in `service::audit`).
    pub action: String,
    /// The account the act concerns; `None` for acts across the deployment.
    pub account_id: Option<AccountId>,
    /// The key the act was done with (an API key, or the key a token was minted from).
    pub actor_key_id: Option<KeyId>,
    /// The user the act was done by or for.
    pub actor_user_id: Option<UserId>,
    /// What was acted on: `api_key`, `user`, `account`, `credits`, `token`, …
    pub object_type: String,
    pub object_id: Option<String>,
    pub client_addr: Option<String>,
    pub request_id: Option<String>,
    pub details: serde_json::Value,
}

/// Which audit entries to list. Empty fields do not filter.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    /// `None`: every account (operators).
    pub account_id: Option<AccountId>,
    /// An exact action, or a prefix ending in `.` (`key.` for every key act).
    pub action: Option<String>,
    /// A key or user id: entries whose actor key or actor user it is.
    pub actor: Option<String>,
    pub object_id: Option<String>,
    /// `since <= at < until`.
    pub since: Option<OffsetDateTime>,
    pub until: Option<OffsetDateTime>,
}
