//! The caches of the hot path, bounded in size and in age:
//! - key hash → the key with its account (API-key requests);
//! - key id → the same (token requests: a token names the key it was minted from);
//! - user id → the user with their account (tokens from `user_auth`, OAuth user tokens);
//! - account id → the account (OAuth client credentials tokens, which name no key or user).
//!
//! A change invalidates its entries at once on this node, and on the others through the
//! revocation feed (see `revocation.rs`). A read that missed the cache and went to the database
//! may race with a revocation: it could read the key before the revocation is written and insert
//! it after the invalidation. The epoch closes that gap: every invalidation bumps it, and a miss
//! that sees the epoch move while it was reading removes what it inserted.
//!
//! Each cache is a [`BoundedCache`] (see `bounded.rs`), whose read is one hash and one short
//! lock on a shard, with no housekeeping run by the reader.

pub mod bounded;

pub use bounded::BoundedCache;

use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keygate_core::{AccountId, KeyHash, KeyId, UserId};
use keygate_store::{Account, KeyWithAccount, User};

pub struct UserWithAccount {
    pub user: User,
    pub account: Account,
}

pub struct Caches {
    by_hash: BoundedCache<KeyHash, Arc<KeyWithAccount>>,
    by_id: BoundedCache<KeyId, Arc<KeyWithAccount>>,
    users: BoundedCache<UserId, Arc<UserWithAccount>>,
    accounts: BoundedCache<AccountId, Arc<Account>>,
    /// Hashes the database did not know, for a few seconds: a client retrying a wrong key, or
    /// a scan of invented ones, costs one lookup per hash, not one per request.
    unknown: BoundedCache<KeyHash, ()>,
    epoch: AtomicU64,
}

/// How long an unknown key's hash is remembered. Keys are random, so a key created meanwhile
/// is never one a client tried before; the bound is for safety, not correctness.
pub const UNKNOWN_KEY_TTL: Duration = Duration::from_secs(5);

impl Caches {
    pub fn new(capacity: u64, ttl: Duration) -> Self {
        Caches {
            by_hash: BoundedCache::new(capacity, ttl),
            by_id: BoundedCache::new(capacity, ttl),
            users: BoundedCache::new(capacity, ttl),
            accounts: BoundedCache::new(capacity, ttl),
            unknown: BoundedCache::new(capacity, UNKNOWN_KEY_TTL),
            epoch: AtomicU64::new(0),
        }
    }

    /// Hot path: a hash lookup, no allocation.
    pub fn key_by_hash(&self, hash: &KeyHash) -> Option<Arc<KeyWithAccount>> {
        self.by_hash.get(hash)
    }

    pub fn key_by_id(&self, id: &KeyId) -> Option<Arc<KeyWithAccount>> {
        self.by_id.get(id)
    }

    pub fn is_unknown(&self, hash: &KeyHash) -> bool {
        self.unknown.contains_key(hash)
    }

    pub fn remember_unknown(&self, hash: KeyHash) {
        self.unknown.insert(hash, ());
    }

    /// A key was created: its hash is known from now on.
    pub fn forget_unknown(&self, hash: &KeyHash) {
        self.unknown.invalidate(hash);
    }

    pub fn user(&self, id: &UserId) -> Option<Arc<UserWithAccount>> {
        self.users.get(id)
    }

    pub fn account(&self, id: &AccountId) -> Option<Arc<Account>> {
        self.accounts.get(id)
    }

    /// Call before reading the database on a miss; pass the value to an `insert_*`.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    fn insert<K: Hash + Eq + Clone, V: Clone>(
        &self,
        cache: &BoundedCache<K, V>,
        k: K,
        v: V,
        epoch_before_read: u64,
    ) {
        if self.epoch() != epoch_before_read {
            return;
        }
        cache.insert(k.clone(), v);
        if self.epoch() != epoch_before_read {
            cache.invalidate(&k);
        }
    }

    pub fn insert_by_hash(&self, hash: KeyHash, v: Arc<KeyWithAccount>, epoch: u64) {
        self.insert(&self.by_hash, hash, v, epoch);
    }

    pub fn insert_by_id(&self, id: KeyId, v: Arc<KeyWithAccount>, epoch: u64) {
        self.insert(&self.by_id, id, v, epoch);
    }

    pub fn insert_user(&self, id: UserId, v: Arc<UserWithAccount>, epoch: u64) {
        self.insert(&self.users, id, v, epoch);
    }

    pub fn insert_account(&self, id: AccountId, v: Arc<Account>, epoch: u64) {
        self.insert(&self.accounts, id, v, epoch);
    }

    /// A key just read from the database, before it is cached: its account becomes the copy
    /// the account cache holds when that is the same account as just read, so that the keys of
    /// one account share one copy (1,000,000 keys of one account held 1,000,000 copies, about
    /// a fifth of the memory they took). When the cache has none, the one just read is cached;
    /// one that differs (read before a change) is left alone.
    pub fn share_account(&self, mut found: KeyWithAccount, epoch: u64) -> KeyWithAccount {
        if let Some(account) = found.account.as_mut() {
            match self.accounts.get(&account.id) {
                Some(shared) if *shared == **account => *account = shared,
                Some(_) => {}
                None => self.insert_account(account.id.clone(), account.clone(), epoch),
            }
        }
        found
    }

    pub fn invalidate_key(&self, hash: &KeyHash, id: &KeyId) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.by_hash.invalidate(hash);
        self.by_id.invalidate(id);
    }

    pub fn invalidate_user(&self, id: &UserId) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.users.invalidate(id);
    }

    /// After a change that touches many entries (an account disabled or deleted).
    pub fn invalidate_all(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.by_hash.invalidate_all();
        self.by_id.invalidate_all();
        self.users.invalidate_all();
        self.accounts.invalidate_all();
        self.unknown.invalidate_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keygate_core::{Environment, Scope};
    use keygate_store::ApiKey;

    fn entry() -> (KeyHash, KeyId, Arc<KeyWithAccount>) {
        let (hash, id, key) = key_of("k", None);
        (hash, id, Arc::new(KeyWithAccount { key, account: None }))
    }

    fn account(name: &str) -> Account {
        let now = time::OffsetDateTime::now_utc();
        Account {
            id: AccountId::generate(),
            name: name.into(),
            email: "owner@example.com".into(),
            plan: "free".into(),
            status: keygate_store::AccountStatus::Active,
            api_key_id: None,
            created_at: now,
            updated_at: now,
        }
    }

    /// What the database gives for a key of `account`.
    fn read(caches: &Caches, plaintext: &str, account: &Account) -> KeyWithAccount {
        let (_, _, key) = key_of(plaintext, Some(account.id.clone()));
        let found = KeyWithAccount {
            key,
            account: Some(Arc::new(account.clone())),
        };
        caches.share_account(found, caches.epoch())
    }

    #[test]
    fn keys_of_one_account_share_one_copy_of_it_and_a_changed_account_is_not_mixed_in() {
        let caches = Caches::new(10, Duration::from_secs(60));
        let acme = account("acme");
        let first = read(&caches, "k1", &acme);
        let second = read(&caches, "k2", &acme);
        let (a, b) = (first.account.expect("a"), second.account.expect("b"));
        assert!(Arc::ptr_eq(&a, &b), "one copy for both keys");
        assert_eq!(*a, acme);
        // Read after a change that has not reached the cache yet: kept as read, not replaced.
        let mut renamed = acme.clone();
        renamed.name = "acme-renamed".into();
        let third = read(&caches, "k3", &renamed).account.expect("c");
        assert_eq!(*third, renamed);
        assert!(!Arc::ptr_eq(&a, &third));
        // Another account is never given this one's copy.
        let other = account("other");
        let fourth = read(&caches, "k4", &other).account.expect("d");
        assert_eq!(*fourth, other);
        // After the change invalidates the caches, keys read from then on share the new copy.
        caches.invalidate_all();
        let fifth = read(&caches, "k5", &renamed).account.expect("e");
        let sixth = read(&caches, "k6", &renamed).account.expect("f");
        assert_eq!(*fifth, renamed);
        assert!(Arc::ptr_eq(&fifth, &sixth));
    }

    fn key_of(plaintext: &str, account_id: Option<AccountId>) -> (KeyHash, KeyId, ApiKey) {
        let hash = KeyHash::of(plaintext);
        let id = KeyId::generate();
        let now = time::OffsetDateTime::now_utc();
        let key = ApiKey {
            id: id.clone(),
            account_id,
            created_by: None,
            name: "n".into(),
            description: String::new(),
            scope: Scope::Read,
            environment: Environment::Live,
            hash,
            start: "ak_live_abcd".into(),
            last4: "wxyz".into(),
            expires_at: None,
            revoked_at: None,
            rolled_to: None,
            rate_limit: None,
            permissions: Vec::new(),
            metadata: serde_json::json!({}),
            created_at: now,
            last_used_at: None,
        };
        (hash, id, key)
    }

    #[test]
    fn a_read_that_raced_with_an_invalidation_is_not_cached() {
        let caches = Caches::new(10, Duration::from_secs(60));
        let (hash, id, value) = entry();
        let before = caches.epoch();
        // The key is revoked while the miss is reading the database…
        caches.invalidate_key(&hash, &id);
        // …so what the miss read must not be cached.
        caches.insert_by_hash(hash, value.clone(), before);
        assert!(caches.key_by_hash(&hash).is_none());
        let now = caches.epoch();
        caches.insert_by_hash(hash, value, now);
        assert!(caches.key_by_hash(&hash).is_some());
    }

    #[test]
    fn invalidating_a_key_drops_it_by_hash_and_by_id() {
        let caches = Caches::new(10, Duration::from_secs(60));
        let (hash, id, value) = entry();
        let e = caches.epoch();
        caches.insert_by_hash(hash, value.clone(), e);
        caches.insert_by_id(id.clone(), value, e);
        caches.invalidate_key(&hash, &id);
        assert!(caches.key_by_hash(&hash).is_none());
        assert!(caches.key_by_id(&id).is_none());
    }
}
