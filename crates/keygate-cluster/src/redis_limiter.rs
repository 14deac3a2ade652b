//! The rate limiter shared by several nodes: the same GCRA as the local limiter, run by Redis.
//!
//! Each check is one atomic Lua script (`gcra.lua`, sent by EVALSHA, and by EVAL when the server
//! does not have it yet): it reads the key's TAT, decides, and writes the new TAT in one step,
//! so concurrent checks from any number of nodes are serialised and the cluster as a whole
//! admits no more than the quota. The script reads the time with `TIME`, so every node uses the
//! Redis server's clock and skew between nodes does not matter. It stores the TAT with an expiry
//! at the TAT itself: past it the key would read as a full bucket, so idle keys simply vanish.
//!
//! When Redis is unreachable, errors, or does not answer within `timeout`, the limiter does not
//! fail the request: it answers from an embedded [`LocalLimiter`], so each node then enforces the
//! quota on its own (a cluster of N nodes admits up to N times the quota until Redis is back).
//! A circuit breaker keeps requests off Redis during the outage; a background task probes Redis
//! every `retry_interval` and closes the breaker when it answers again. One warning is logged
//! when an outage starts and one line when it ends.
//!
//! Assumes Redis 5 or later (or Valkey), where scripts replicate their effects, so a script that
//! reads `TIME` may write.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use keygate_core::gcra::{decide, Decision, Quota};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, RedisError, Script};
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use crate::limiter::{LimiterStatus, RateLimiter};
use crate::local_limiter::LocalLimiter;

#[derive(Clone, Debug)]
pub struct RedisLimiterOptions {
    /// Put before every key name, so that Keygate's keys are recognisable in a shared Redis.
    pub key_prefix: String,
    /// The longest a check waits for Redis before answering locally (and opening the breaker).
    pub timeout: Duration,
    /// How often Redis is probed while it is away.
    pub retry_interval: Duration,
}

impl Default for RedisLimiterOptions {
    fn default() -> Self {
        RedisLimiterOptions {
            key_prefix: "keygate:rl:".to_owned(),
            timeout: Duration::from_millis(250),
            retry_interval: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RedisLimiterError {
    #[error("not a usable Redis URL: {0}")]
    InvalidUrl(#[source] RedisError),
    #[error("could not set up the Redis client: {0}")]
    Client(#[source] RedisError),
}

pub struct RedisLimiter {
    shared: Arc<Shared>,
    /// The prober task holds `shared` too; it is stopped when the limiter is dropped.
    prober: AbortHandle,
}

/// What the limiter and its prober task both use.
struct Shared {
    /// Multiplexed: one connection carries every concurrent check. It reconnects by itself after
    /// an I/O error, and is cheap to clone (an `Arc`).
    conn: ConnectionManager,
    script: Script,
    key_prefix: String,
    /// Written by probes only, so that probing never touches a real key's bucket.
    probe_key: String,
    timeout: Duration,
    retry_interval: Duration,
    /// Answers while Redis is away. It knows only what this node spent during outages and is not
    /// merged into Redis when it returns: outages are rare and short, and either view is valid.
    fallback: LocalLimiter,
    breaker: Breaker,
    /// Wakes the prober when a check opens the breaker.
    tripped: Notify,
}

/// Whether checks go to Redis. Read on every check (one atomic load); written only when Redis
/// goes away or comes back.
struct Breaker {
    healthy: AtomicBool,
    /// Since when and why Redis is away, while it is. Locked only on those transitions and by
    /// `status`, never on the hot path.
    outage: Mutex<Option<Outage>>,
}

struct Outage {
    since: Instant,
    reason: String,
}

#[derive(Debug)]
enum Failure {
    Redis(RedisError),
    Timeout(Duration),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Redis(e) => write!(f, "{e}"),
            Failure::Timeout(t) => write!(f, "no answer within {} ms", t.as_millis()),
        }
    }
}

impl RedisLimiter {
    /// Connects with the default options. See [`RedisLimiter::connect_with`].
    pub async fn connect(url: &str) -> Result<Self, RedisLimiterError> {
        Self::connect_with(url, RedisLimiterOptions::default()).await
    }

    /// Sets up the client and tries Redis once (waiting at most `options.timeout`). A malformed
    /// URL is an error; an unreachable Redis is not: the limiter then starts on local limits and
    /// switches to Redis once it answers. Must be called within a Tokio runtime, which runs the
    /// prober task.
    pub async fn connect_with(
        url: &str,
        options: RedisLimiterOptions,
    ) -> Result<Self, RedisLimiterError> {
        let client = Client::open(url).map_err(RedisLimiterError::InvalidUrl)?;
        // No retries inside the connection manager: a check must not wait for reconnection;
        // the breaker and the prober pace the retries instead.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.timeout))
            .set_response_timeout(Some(options.timeout))
            .set_number_of_retries(0);
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(RedisLimiterError::Client)?;
        let shared = Arc::new(Shared {
            conn,
            script: Script::new(include_str!("gcra.lua")),
            probe_key: format!("{}\0probe", options.key_prefix),
            key_prefix: options.key_prefix,
            timeout: options.timeout,
            retry_interval: options.retry_interval,
            fallback: LocalLimiter::new(),
            breaker: Breaker {
                healthy: AtomicBool::new(true),
                outage: Mutex::new(None),
            },
            tripped: Notify::new(),
        });
        if let Err(failure) = shared.probe().await {
            shared.breaker.trip(&failure);
        }
        let prober = tokio::spawn(probe_while_degraded(shared.clone())).abort_handle();
        Ok(RedisLimiter { shared, prober })
    }
}

impl Drop for RedisLimiter {
    fn drop(&mut self) {
        self.prober.abort();
    }
}

#[async_trait]
impl RateLimiter for RedisLimiter {
    /// Hot path: one script call with a deadline, or, while Redis is away, the local limiter
    /// without touching the network. No lock is held across the `.await`; nothing is retried.
    async fn check(&self, key: &str, quota: &Quota, cost: u64) -> Decision {
        let shared = &self.shared;
        if shared.breaker.is_healthy() {
            match shared.check_in_redis(key, quota, cost).await {
                Ok(decision) => return decision,
                Err(failure) => {
                    if shared.breaker.trip(&failure) {
                        shared.tripped.notify_one();
                    }
                }
            }
        }
        shared.fallback.check_now(key, quota, cost)
    }

    fn status(&self) -> LimiterStatus {
        let outage = self.shared.breaker.outage();
        LimiterStatus {
            backend: "redis",
            healthy: outage.is_none(),
            detail: outage.as_ref().map(|outage| {
                format!(
                    "Redis unreachable for {} s ({}); rate limits are per node meanwhile",
                    outage.since.elapsed().as_secs(),
                    outage.reason
                )
            }),
        }
    }
}

impl Shared {
    async fn check_in_redis(
        &self,
        key: &str,
        quota: &Quota,
        cost: u64,
    ) -> Result<Decision, Failure> {
        let redis_key = format!("{}{key}", self.key_prefix);
        let emission = quota.emission_interval().as_nanos() as u64;
        let capacity = quota.capacity().as_nanos() as u64;
        let (allowed, used) = self
            .run_script(&redis_key, emission, capacity, cost)
            .await?;
        // The script returned the state before this request, relative to the server's now; the
        // same maths at now = 0 gives the same decision, with every field the headers need.
        let (mut decision, _) = decide(quota, Some(used), 0, cost);
        if decision.allowed != allowed {
            tracing::error!(%quota, used, "gcra.lua and decide disagree; trusting the script");
            decision.allowed = allowed;
        }
        Ok(decision)
    }

    /// Runs the whole script path (EVALSHA, loading the script if needed) on a key of its own.
    async fn probe(&self) -> Result<(), Failure> {
        const ONE_MS: u64 = 1_000_000;
        self.run_script(&self.probe_key, ONE_MS, ONE_MS, 1)
            .await
            .map(|_| ())
    }

    async fn run_script(
        &self,
        redis_key: &str,
        emission_ns: u64,
        capacity_ns: u64,
        cost: u64,
    ) -> Result<(bool, i64), Failure> {
        let mut conn = self.conn.clone();
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(redis_key)
            .arg(emission_ns)
            .arg(capacity_ns)
            .arg(cost);
        let reply: (i64, i64) =
            tokio::time::timeout(self.timeout, invocation.invoke_async(&mut conn))
                .await
                .map_err(|_| Failure::Timeout(self.timeout))?
                .map_err(Failure::Redis)?;
        Ok((reply.0 == 1, reply.1))
    }
}

/// Sleeps until a check opens the breaker, then probes Redis every `retry_interval` until it
/// answers, and closes the breaker. Runs for the limiter's whole life.
async fn probe_while_degraded(shared: Arc<Shared>) {
    loop {
        if shared.breaker.is_healthy() {
            // A trip between the load above and this wait is not lost: `notify_one` leaves a
            // permit when nobody waits.
            shared.tripped.notified().await;
            continue;
        }
        tokio::time::sleep(shared.retry_interval).await;
        match shared.probe().await {
            Ok(()) => shared.breaker.close(),
            Err(failure) => {
                tracing::debug!(error = %failure, "Redis is still unreachable");
                shared.breaker.trip(&failure);
            }
        }
    }
}

impl Breaker {
    fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Records a failure; returns whether it started an outage (and so logged it).
    fn trip(&self, failure: &Failure) -> bool {
        let mut outage = self.outage();
        let was_healthy = self.healthy.swap(false, Ordering::AcqRel);
        match outage.as_mut() {
            Some(outage) if !was_healthy => outage.reason = failure.to_string(),
            _ => {
                tracing::warn!(
                    error = %failure,
                    "Redis is unreachable: rate limits fall back to per-node limits until it is back"
                );
                *outage = Some(Outage {
                    since: Instant::now(),
                    reason: failure.to_string(),
                });
            }
        }
        was_healthy
    }

    fn close(&self) {
        let mut outage = self.outage();
        if let Some(ended) = outage.take() {
            tracing::info!(
                down_for_ms = ended.since.elapsed().as_millis() as u64,
                "Redis is reachable again: rate limits are shared across nodes again"
            );
        }
        self.healthy.store(true, Ordering::Release);
    }

    fn outage(&self) -> MutexGuard<'_, Option<Outage>> {
        self.outage.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
