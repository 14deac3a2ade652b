//! Keygate's storage boundary: the models every backend stores and the [`Store`] trait they
//! implement. The server depends on this crate only; a backend is picked at start from the
//! database URL. [`conformance`] is the suite every backend must pass, so SQLite and PostgreSQL
//! behave the same.

pub mod conformance;
mod dashboard;
mod models;
mod oauth;
mod webhooks;

use async_trait::async_trait;
use keygate_core::{AccountId, KeyHash, KeyId, UserId};
use time::OffsetDateTime;

pub use dashboard::*;
pub use models::*;
pub use oauth::*;
pub use webhooks::*;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// A uniqueness rule was broken; the string names the rule (e.g. `users_username`).
    #[error("conflict on {0}")]
    Conflict(&'static str),
    #[error("storage backend error: {0}")]
    Backend(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Where a page starts and how long it is. Pages walk ids in ascending (creation) order; the
/// cursor is the last id of the previous page.
#[derive(Clone, Debug, Default)]
pub struct PageRequest {
    pub after: Option<String>,
    pub limit: u32,
}

#[derive(Clone, Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Matching rows in all pages, for `X-Total-Count`.
    pub total: u64,
    /// Whether rows follow the last item of this page.
    pub has_more: bool,
}

/// Usage aggregated in memory and written in one batch (see the server's usage recorder).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageIncrement {
    pub key_id: KeyId,
    pub account_id: Option<AccountId>,
    /// Days since the Unix epoch, UTC.
    pub day: i32,
    pub requests: u64,
    pub last_used_at: OffsetDateTime,
}

#[async_trait]
pub trait Store: WebhookStore + OAuthStore + Send + Sync + 'static {
    /// Which backend this is, for logs and `/readyz`.
    fn backend_name(&self) -> &'static str;
    /// Applies the migrations this binary knows and the database has not seen.
    async fn migrate(&self) -> StoreResult<()>;
    /// A round trip to the database, for `/readyz`.
    async fn ping(&self) -> StoreResult<()>;

    // Accounts.
    /// Creates an account, its owner and the owner's first key in one transaction.
    async fn create_account(
        &self,
        account: &Account,
        owner: &User,
        first_key: &ApiKey,
    ) -> StoreResult<()>;
    async fn get_account(&self, id: &AccountId) -> StoreResult<Account>;
    async fn find_account_by_name(&self, name: &str) -> StoreResult<Account>;
    async fn update_account(&self, account: &Account) -> StoreResult<()>;
    /// Deletes the account with its users and keys.
    async fn delete_account(&self, id: &AccountId) -> StoreResult<()>;
    async fn list_accounts(&self, page: &PageRequest) -> StoreResult<Page<Account>>;

    // Users.
    async fn create_user(&self, user: &User) -> StoreResult<()>;
    async fn get_user(&self, account: &AccountId, id: &UserId) -> StoreResult<User>;
    /// `username` is compared lower-cased.
    async fn find_user_by_username(&self, account: &AccountId, username: &str)
        -> StoreResult<User>;
    /// The user whose Crossbar credential lookup value (see [`PasswordVerifiers`]) is `lookup`.
    async fn find_user_by_credential(
        &self,
        account: &AccountId,
        digest: CredentialDigest,
        lookup: &str,
    ) -> StoreResult<User>;
    async fn update_user(&self, user: &User) -> StoreResult<()>;
    async fn delete_user(&self, account: &AccountId, id: &UserId) -> StoreResult<()>;
    async fn list_users(&self, account: &AccountId, page: &PageRequest) -> StoreResult<Page<User>>;

    // API keys.
    async fn create_key(&self, key: &ApiKey) -> StoreResult<()>;
    /// Creates many keys in one transaction: all of them or, on any error, none (bulk set-up,
    /// e.g. the benchmarks' 1,000,000 keys).
    async fn create_keys(&self, keys: &[ApiKey]) -> StoreResult<()>;
    /// `account: None` addresses operator keys.
    async fn get_key(&self, account: Option<&AccountId>, id: &KeyId) -> StoreResult<ApiKey>;
    /// The hot path's database read, on a cache miss: the key with its account's state.
    async fn find_key_by_hash(&self, hash: &KeyHash) -> StoreResult<KeyWithAccount>;
    /// The token path's read on a cache miss: the key a token was minted from.
    async fn find_key_by_id(&self, id: &KeyId) -> StoreResult<KeyWithAccount>;
    async fn list_keys(
        &self,
        account: Option<&AccountId>,
        filter: KeyFilter,
        now: OffsetDateTime,
        page: &PageRequest,
    ) -> StoreResult<Page<ApiKey>>;
    /// Writes the mutable fields of a key (name, description, scope, expiry, metadata, limit,
    /// revocation).
    async fn update_key(&self, key: &ApiKey) -> StoreResult<()>;
    /// Rolling: the new key is created and the old one updated (expiry or revocation) together.
    async fn roll_key(&self, old: &ApiKey, new: &ApiKey) -> StoreResult<()>;

    // Signing keys.
    async fn insert_signing_key(&self, key: &SigningKeyRecord) -> StoreResult<()>;
    async fn list_signing_keys(&self) -> StoreResult<Vec<SigningKeyRecord>>;
    /// Marks retired at `at` every key but `kid` that is not retired yet and is not newer than
    /// `kid`.
    async fn retire_signing_keys_except(&self, kid: &str, at: OffsetDateTime) -> StoreResult<()>;

    // The revocation feed.
    async fn publish_revocation(&self, revocation: &Revocation) -> StoreResult<()>;
    /// Entries with an id above `after_id`, in id order, at most `limit`.
    async fn revocations_after(&self, after_id: i64, limit: u32) -> StoreResult<Vec<Revocation>>;
    /// The highest id in the feed (0 when empty): where a starting node begins to follow it.
    async fn latest_revocation_id(&self) -> StoreResult<i64>;
    /// Deletes entries that expired, or that have no expiry and are older than `before`.
    async fn prune_revocations(
        &self,
        now: OffsetDateTime,
        before: OffsetDateTime,
    ) -> StoreResult<u64>;
    /// Token revocations still in force: loaded at start, so a restarted node keeps refusing
    /// logged-out tokens.
    async fn active_token_revocations(&self, now: OffsetDateTime) -> StoreResult<Vec<Revocation>>;

    // Credits.
    /// Applies a grant (`amount` ≥ 0) or a debit (`amount` < 0, never taking the balance below
    /// zero) and its ledger entry in one transaction; `balance_after` is filled in.
    async fn apply_credit(&self, entry: &CreditEntry) -> StoreResult<CreditOutcome>;
    async fn credit_state(&self, account: &AccountId) -> StoreResult<CreditState>;
    async fn list_credit_entries(
        &self,
        account: &AccountId,
        page: &PageRequest,
    ) -> StoreResult<Page<CreditEntry>>;
    /// Once per `period` (`YYYY-MM`): tops the balance up to `allowance` (never lowers it) with
    /// a `refill` entry, whose id and time `entry` gives. `None` when this period was refilled
    /// already or nothing was missing.
    async fn refill_credits(
        &self,
        account: &AccountId,
        period: &str,
        allowance: i64,
        entry: &CreditEntry,
    ) -> StoreResult<Option<CreditEntry>>;

    // Usage.
    /// Adds each increment to its (key, day) row and moves the key's `last_used_at` forward,
    /// never back: batches from several nodes may arrive out of order. A key's `last_used_at`
    /// is the latest of the times its batches carried (an increment's time falls on its day).
    async fn record_usage(&self, batch: &[UsageIncrement]) -> StoreResult<()>;
    /// The account's rows with `from_day <= day <= to_day`, ordered by day, then key id.
    async fn usage_by_day(
        &self,
        account: &AccountId,
        from_day: i32,
        to_day: i32,
    ) -> StoreResult<Vec<UsageRow>>;

    // The developer dashboard.
    /// An account and its owner, without a first key: a dashboard sign-up, whose owner makes
    /// the keys they want (and sees each once).
    async fn create_account_with_owner(&self, account: &Account, owner: &User) -> StoreResult<()>;
    /// The users with this email address, in any account (compared ASCII-lower-cased), oldest
    /// first, at most `limit`.
    async fn find_users_by_email(&self, email: &str, limit: u32) -> StoreResult<Vec<User>>;
    /// Records that the user proved they read mail at their current address.
    async fn mark_email_verified(
        &self,
        account: &AccountId,
        user: &UserId,
        at: OffsetDateTime,
    ) -> StoreResult<()>;
    async fn create_session(&self, session: &Session) -> StoreResult<()>;
    /// The session whose token hashes to `token_hash`, unless it expired before `now`.
    async fn find_session(&self, token_hash: &str, now: OffsetDateTime) -> StoreResult<Session>;
    /// Logging out; deleting a session that is gone already is not an error.
    async fn delete_session(&self, token_hash: &str) -> StoreResult<()>;
    /// Ends every session of a user (after a password reset); returns how many there were.
    async fn delete_user_sessions(&self, account: &AccountId, user: &UserId) -> StoreResult<u64>;
    /// Deletes the sessions and links that expired before `now`; returns how many.
    async fn prune_dashboard(&self, now: OffsetDateTime) -> StoreResult<u64>;
    async fn create_email_link(&self, link: &EmailLink) -> StoreResult<()>;
    /// The unused link whose secret hashes to `token_hash`, unless it expired before `now`,
    /// without using it (to show the form it leads to).
    async fn find_email_link(
        &self,
        token_hash: &str,
        purpose: LinkPurpose,
        now: OffsetDateTime,
    ) -> StoreResult<EmailLink>;
    /// Marks the link used at `now` and returns it: once. A second use, or one after expiry,
    /// is `NotFound`, even when two arrive at the same moment.
    async fn use_email_link(
        &self,
        token_hash: &str,
        purpose: LinkPurpose,
        now: OffsetDateTime,
    ) -> StoreResult<EmailLink>;

    // The audit log.
    async fn record_audit(&self, entry: &AuditEntry) -> StoreResult<()>;
    /// Newest first; the page's cursor is the last id of the previous page, and the page holds
    /// the entries with smaller ids.
    async fn list_audit(
        &self,
        filter: &AuditFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<AuditEntry>>;
    /// Deletes the entries older than `before`; returns how many.
    async fn purge_audit(&self, before: OffsetDateTime) -> StoreResult<u64>;
}
