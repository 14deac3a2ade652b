//! The rate limiter every request goes through, whatever holds the counters.

use async_trait::async_trait;
use keygate_core::gcra::{Decision, Quota};

/// Admits or denies requests by key under a [`Quota`], with GCRA (see `keygate_core::gcra`).
///
/// Hot path: `check` runs on every limited request. Implementations must not hold a lock across
/// an `.await`, must not grow without bound, and must answer even when their backing store is
/// away (a Redis limiter falls back to local limits rather than failing the request).
#[async_trait]
pub trait RateLimiter: Send + Sync {
    /// Spends `cost` from `key`'s bucket if it holds enough; a denied check spends nothing.
    /// The quota is passed on every call so that a plan change applies at once; a key's state is
    /// only its TAT, so changing the quota of a key needs no migration.
    async fn check(&self, key: &str, quota: &Quota, cost: u64) -> Decision;

    /// The same decision as [`RateLimiter::check`], made at once, for a limiter whose counters
    /// are in the process; `None` for one that has to ask elsewhere (Redis), whose caller then
    /// awaits `check`. It spares the hot path the boxed future every `check` call costs.
    fn check_in_process(&self, _key: &str, _quota: &Quota, _cost: u64) -> Option<Decision> {
        None
    }

    /// For health endpoints and logs; cheap, never waits on the backend.
    fn status(&self) -> LimiterStatus;
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimiterStatus {
    /// `"local"` or `"redis"`.
    pub backend: &'static str,
    /// False while a shared backend is unreachable and limits are per node.
    pub healthy: bool,
    /// Why it is not healthy, in words for an operator.
    pub detail: Option<String>,
}
