//! The in-process rate limiter: exact GCRA with one integer of state per active key.
//!
//! Keys are spread over [`SHARDS`] independently locked maps so that concurrent requests for
//! different keys rarely wait on each other. A lock is held only to read and write one TAT,
//! never across an `.await` (nothing here is async).
//!
//! Memory stays bounded without a background task: an entry whose TAT is in the past says
//! nothing that a missing entry does not (the bucket is full either way; `decide` treats both
//! alike), so it can be dropped at any time without changing a decision. Each shard drops them
//! when it has doubled in size since its last sweep, which costs O(1) per insert amortised and
//! keeps a shard at most about twice the number of its keys active within the last period;
//! [`LocalLimiter::sweep`] does the same for all shards and also returns spare capacity.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use async_trait::async_trait;
use keygate_core::gcra::{decide, Decision, Quota};

use crate::limiter::{LimiterStatus, RateLimiter};

/// A power of two, well above the number of cores, so that two hot keys seldom share a lock.
const SHARDS: usize = 64;

/// Below this many entries a shard does not bother to sweep itself.
const MIN_SWEEP_LEN: usize = 1024;

pub struct LocalLimiter {
    shards: Box<[Shard]>,
    /// Picks a key's shard. Separate from the maps' own hashers: if the shard came from the same
    /// hash bits the maps use, every key of a shard would share those bits and collide.
    shard_hasher: RandomState,
    /// The origin of this limiter's monotonic clock: TATs are nanoseconds since then, so a change
    /// of the wall clock cannot free or block anyone.
    epoch: Instant,
}

/// One lock's worth of keys, on its own cache line so that neighbouring locks do not contend.
#[repr(align(64))]
struct Shard(Mutex<ShardMap>);

struct ShardMap {
    /// Key → TAT (ns since `epoch`). Only keys whose TAT may still be in the future.
    tats: HashMap<Box<str>, i64>,
    /// The size at which the next insert sweeps this shard.
    sweep_at_len: usize,
}

impl ShardMap {
    fn drop_expired(&mut self, now_ns: i64) -> usize {
        let before = self.tats.len();
        self.tats.retain(|_, tat| *tat > now_ns);
        self.sweep_at_len = (2 * self.tats.len()).max(MIN_SWEEP_LEN);
        before - self.tats.len()
    }
}

impl Default for LocalLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalLimiter {
    pub fn new() -> Self {
        let shards = (0..SHARDS)
            .map(|_| {
                Shard(Mutex::new(ShardMap {
                    tats: HashMap::new(),
                    sweep_at_len: MIN_SWEEP_LEN,
                }))
            })
            .collect();
        LocalLimiter {
            shards,
            shard_hasher: RandomState::new(),
            epoch: Instant::now(),
        }
    }

    /// Decides at the current time; the same as [`RateLimiter::check`], without `async`.
    pub fn check_now(&self, key: &str, quota: &Quota, cost: u64) -> Decision {
        self.check_at(key, quota, cost, self.now_ns())
    }

    /// Decides at `now_ns` on this limiter's clock ([`LocalLimiter::now_ns`]): for simulations
    /// and tests that need exact times. Do not mix with `check_now` on other clocks.
    ///
    /// Hot path: one hash, one short lock on one shard, no allocation unless the key is new, no
    /// `.await` (so no lock can be held across one).
    pub fn check_at(&self, key: &str, quota: &Quota, cost: u64, now_ns: i64) -> Decision {
        let mut shard = self.shard(key);
        if let Some(tat) = shard.tats.get_mut(key) {
            let (decision, new_tat) = decide(quota, Some(*tat), now_ns, cost);
            if let Some(new_tat) = new_tat {
                *tat = new_tat;
            }
            return decision;
        }
        let (decision, new_tat) = decide(quota, None, now_ns, cost);
        // A cost of 0 leaves a new key's bucket full, which needs no entry.
        if let Some(new_tat) = new_tat.filter(|&tat| tat > now_ns) {
            shard.tats.insert(key.into(), new_tat);
            if shard.tats.len() > shard.sweep_at_len {
                shard.drop_expired(now_ns);
            }
        }
        decision
    }

    /// Nanoseconds since this limiter was created, on a monotonic clock.
    pub fn now_ns(&self) -> i64 {
        i64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(i64::MAX)
    }

    /// Forgets every key whose bucket is full again, and returns how many it forgot. Optional:
    /// shards also sweep themselves as they grow; calling this now and then (say every minute)
    /// also gives back the memory of a past spike of keys.
    pub fn sweep(&self) -> usize {
        self.sweep_at(self.now_ns())
    }

    /// [`LocalLimiter::sweep`] at a time of the caller's choice (see [`LocalLimiter::check_at`]).
    pub fn sweep_at(&self, now_ns: i64) -> usize {
        self.shards
            .iter()
            .map(|shard| {
                let mut shard = lock(shard);
                let dropped = shard.drop_expired(now_ns);
                let len = shard.tats.len();
                if shard.tats.capacity() > 4 * len.max(MIN_SWEEP_LEN) {
                    shard.tats.shrink_to(2 * len);
                }
                dropped
            })
            .sum()
    }

    /// How many keys are held, including any not yet swept.
    pub fn tracked_keys(&self) -> usize {
        self.shards.iter().map(|shard| lock(shard).tats.len()).sum()
    }

    fn shard(&self, key: &str) -> MutexGuard<'_, ShardMap> {
        let index = self.shard_hasher.hash_one(key) as usize & (SHARDS - 1);
        lock(&self.shards[index])
    }
}

/// A panic while a shard was locked cannot leave it half-updated (each update is one integer
/// store), so a poisoned lock is used as it is.
fn lock(shard: &Shard) -> MutexGuard<'_, ShardMap> {
    shard.0.lock().unwrap_or_else(PoisonError::into_inner)
}

#[async_trait]
impl RateLimiter for LocalLimiter {
    async fn check(&self, key: &str, quota: &Quota, cost: u64) -> Decision {
        self.check_now(key, quota, cost)
    }

    fn check_in_process(&self, key: &str, quota: &Quota, cost: u64) -> Option<Decision> {
        Some(self.check_now(key, quota, cost))
    }

    fn status(&self) -> LimiterStatus {
        LimiterStatus {
            backend: "local",
            healthy: true,
            detail: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    const MS: i64 = 1_000_000;
    const SEC: i64 = 1_000 * MS;

    fn quota(s: &str) -> Quota {
        Quota::parse(s).expect("a valid quota")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_thousand_concurrent_checks_admit_the_burst_plus_only_what_elapsed_time_refills() {
        let limiter = Arc::new(LocalLimiter::new());
        let q = quota("100/minute");
        let started = Instant::now();
        let tasks: Vec<_> = (0..1000)
            .map(|_| {
                let limiter = limiter.clone();
                tokio::spawn(async move { limiter.check("key", &q, 1).await.allowed })
            })
            .collect();
        let mut admitted = 0u128;
        for task in tasks {
            admitted += u128::from(task.await.expect("task ran"));
        }
        let refilled = started.elapsed().as_nanos() / q.emission_interval().as_nanos();
        assert!(
            (100..=100 + refilled).contains(&admitted),
            "admitted {admitted}, refill allows {refilled}"
        );
    }

    #[test]
    fn after_exhausting_ten_per_second_one_more_fits_each_tenth_of_a_second() {
        let limiter = LocalLimiter::new();
        let q = quota("10/second");
        let t0 = 42 * SEC;
        let burst: Vec<u64> = (0..12)
            .map(|_| limiter.check_at("k", &q, 1, t0))
            .filter(|d| d.allowed)
            .map(|d| d.remaining)
            .collect();
        assert_eq!(burst, (0..10).rev().collect::<Vec<_>>());

        let denied = limiter.check_at("k", &q, 1, t0 + 99 * MS);
        assert!(!denied.allowed);
        assert_eq!(denied.retry_after, Some(Duration::from_millis(1)));
        assert_eq!(denied.reset_after, Duration::from_millis(901));

        let admitted = (0..5)
            .filter(|_| limiter.check_at("k", &q, 1, t0 + 100 * MS).allowed)
            .count();
        assert_eq!(admitted, 1);
        let admitted = (0..20)
            .filter(|_| limiter.check_at("k", &q, 1, t0 + 1100 * MS).allowed)
            .count();
        assert_eq!(admitted, 10);
    }

    #[test]
    fn keys_are_limited_independently() {
        let limiter = LocalLimiter::new();
        let q = quota("2/minute");
        for key in ["a", "b", "c"] {
            assert!(limiter.check_at(key, &q, 2, 0).allowed);
            assert!(!limiter.check_at(key, &q, 1, 0).allowed);
        }
    }

    #[test]
    fn a_denied_check_leaves_the_key_as_it_was() {
        let limiter = LocalLimiter::new();
        let q = quota("5/second");
        limiter.check_at("k", &q, 4, 0);
        let before = limiter.check_at("k", &q, 0, 10 * MS);
        assert!(!limiter.check_at("k", &q, 3, 10 * MS).allowed);
        assert!(!limiter.check_at("k", &q, 6, 10 * MS).allowed);
        assert_eq!(limiter.check_at("k", &q, 0, 10 * MS), before);
    }

    #[test]
    fn keys_whose_bucket_has_refilled_are_forgotten_by_a_sweep() {
        let limiter = LocalLimiter::new();
        let q = quota("10/second");
        limiter.check_at("short", &q, 1, 0);
        limiter.check_at("long", &q, 10, 0);
        limiter.check_at("peek", &q, 0, 0);
        assert_eq!(limiter.tracked_keys(), 2);
        assert_eq!(limiter.sweep_at(100 * MS), 1);
        assert_eq!(limiter.tracked_keys(), 1);
        // Forgetting changed nothing: the remaining key is still limited, the other is fresh.
        assert!(!limiter.check_at("long", &q, 10, 100 * MS).allowed);
        assert_eq!(limiter.check_at("short", &q, 1, 100 * MS).remaining, 9);
        assert_eq!(limiter.sweep_at(SEC), 2);
        assert_eq!(limiter.tracked_keys(), 0);
    }

    #[test]
    fn a_stream_of_one_off_keys_does_not_grow_memory_without_a_sweep() {
        let limiter = LocalLimiter::new();
        let q = quota("10/second");
        // Each key is used once and refills 100 ms later, so at most ~10 ms × 10 keys/ms are live.
        for i in 0..200_000i64 {
            limiter.check_at(&format!("key-{i}"), &q, 1, i * 100_000);
        }
        let bound = SHARDS * (2 * MIN_SWEEP_LEN + 1);
        assert!(
            limiter.tracked_keys() <= bound,
            "{}",
            limiter.tracked_keys()
        );
        assert!(limiter.tracked_keys() < 200_000);
    }

    #[tokio::test]
    async fn the_local_limiter_always_reports_itself_healthy() {
        let status = LocalLimiter::new().status();
        assert_eq!(
            (status.backend, status.healthy, status.detail),
            ("local", true, None)
        );
    }
}
