//! The key cache of the hot path: key hash → the key with its account, bounded in size and in
//! age. Changes to a key (revoke, roll, patch) invalidate its entry at once on this node.
//!
//! A read that missed the cache and went to the database may race with a revocation: it could
//! read the key before the revocation is written and insert it after the invalidation. The
//! epoch closes that gap: every invalidation bumps it, and a miss that sees the epoch move
//! while it was reading removes what it inserted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keygate_core::KeyHash;
use keygate_store::KeyWithAccount;

pub struct KeyCache {
    entries: moka::sync::Cache<KeyHash, Arc<KeyWithAccount>>,
    epoch: AtomicU64,
}

impl KeyCache {
    pub fn new(capacity: u64, ttl: Duration) -> Self {
        KeyCache {
            entries: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
            epoch: AtomicU64::new(0),
        }
    }

    /// Hot path: a hash lookup, no allocation.
    pub fn get(&self, hash: &KeyHash) -> Option<Arc<KeyWithAccount>> {
        self.entries.get(hash)
    }

    /// Call before reading the database on a miss; pass the value to [`Self::insert`].
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    pub fn insert(&self, hash: KeyHash, value: Arc<KeyWithAccount>, epoch_before_read: u64) {
        if self.epoch() != epoch_before_read {
            return;
        }
        self.entries.insert(hash, value);
        if self.epoch() != epoch_before_read {
            self.entries.invalidate(&hash);
        }
    }

    pub fn invalidate(&self, hash: &KeyHash) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.entries.invalidate(hash);
    }

    /// After a change that touches many keys (an account disabled or deleted).
    pub fn invalidate_all(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.entries.invalidate_all();
    }
}
