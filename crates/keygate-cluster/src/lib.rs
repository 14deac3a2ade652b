//! State that the nodes of a Keygate deployment share: rate-limit counters (and, later, the event
//! bus for revocations and cache invalidation).
//!
//! Each piece has one trait and two implementations: in-process, for the single binary, and over
//! Redis, for several nodes. The Redis ones degrade to the in-process ones while Redis is away,
//! so a Redis outage loosens limits to per-node limits instead of failing requests.

mod bus;
mod limiter;
mod local_limiter;
mod redis_limiter;

pub use bus::RedisBus;
pub use keygate_core::gcra::{Decision, Quota};
pub use limiter::{LimiterStatus, RateLimiter};
pub use local_limiter::LocalLimiter;
pub use redis_limiter::{RedisLimiter, RedisLimiterError, RedisLimiterOptions};
