//! Rate-limit maths: quotas (`100/minute`) and the GCRA decision, with no clock and no storage.
//!
//! GCRA (the generic cell rate algorithm) keeps one number per key, the *theoretical arrival
//! time* (TAT): the instant at which the key's bucket would be full again if nothing else came.
//! A request of cost `c` is admitted when moving the TAT forward by `c` emission intervals keeps
//! it at most one capacity (`limit` × emission interval) ahead of now. So a fresh key may make
//! `limit` requests at once, then one more every emission interval: exactly a token bucket of
//! `limit` tokens refilled at `limit` per period, stored as a single integer.
//!
//! What that guarantees, and what it does not: over any interval `[a, b]` the admitted cost is at
//! most `limit + (b - a) / emission_interval`. A window of one period can therefore see up to
//! `2 × limit` (a full burst, then the refill), never more; over long runs the rate is at most
//! `limit` per period. This is the usual semantics of GCRA and of the IETF `RateLimit` fields.
//!
//! Times are integer nanoseconds on a clock of the caller's choice (the in-process limiter uses a
//! monotonic clock, the Redis limiter the Redis server's clock). [`decide`] only ever compares
//! times with each other, so it gives the same answer for the same offsets on any clock.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

const NANOS_PER_MILLI: u128 = 1_000_000;

/// Longest period a quota may have. It keeps every TAT offset, even `2 × period`, below 2^53 ns,
/// so the Redis script (Lua numbers are doubles) computes exactly what [`decide`] computes.
pub const MAX_PERIOD: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// How many requests (`limit`) a key may make per `period`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Quota {
    limit: u64,
    period: Duration,
    /// `period / limit` rounded *up* to whole nanoseconds: the refill rate may then be a hair
    /// below `limit` per period (7/second refills 7 per 1.000000001 s), never above it, and the
    /// error does not accumulate because the TAT is an integer too.
    emission_ns: i64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
pub enum QuotaError {
    #[error(
        "a quota is written LIMIT/PERIOD, e.g. 100/minute; PERIOD is second, minute, hour, day, \
         or a count of seconds or milliseconds such as 90s or 500ms"
    )]
    BadFormat,
    #[error("a quota's limit is at least 1")]
    ZeroLimit,
    #[error("a quota's period is a whole number of milliseconds, from 1 ms to 7 days")]
    BadPeriod,
    #[error("a quota may allow at most one request per nanosecond")]
    TooFine,
}

impl Quota {
    pub fn new(limit: u64, period: Duration) -> Result<Self, QuotaError> {
        if limit == 0 {
            return Err(QuotaError::ZeroLimit);
        }
        let period_ns = period.as_nanos();
        if period_ns == 0 || period > MAX_PERIOD || !period_ns.is_multiple_of(NANOS_PER_MILLI) {
            return Err(QuotaError::BadPeriod);
        }
        let limit_wide = u128::from(limit);
        if limit_wide > period_ns {
            return Err(QuotaError::TooFine);
        }
        let emission_ns = period_ns.div_ceil(limit_wide);
        Ok(Quota {
            limit,
            period,
            // At most MAX_PERIOD in nanoseconds, far below i64::MAX.
            emission_ns: emission_ns as i64,
        })
    }

    /// Parses `100/minute`, `5/second`, `1000/hour`, `10000/day`, `10/90s`, `3/500ms`.
    pub fn parse(s: &str) -> Result<Self, QuotaError> {
        let (limit, period) = s.trim().split_once('/').ok_or(QuotaError::BadFormat)?;
        let limit = parse_digits(limit).ok_or(QuotaError::BadFormat)?;
        let period = match period {
            "second" => Duration::from_secs(1),
            "minute" => Duration::from_secs(60),
            "hour" => Duration::from_secs(60 * 60),
            "day" => Duration::from_secs(24 * 60 * 60),
            other => {
                if let Some(ms) = other.strip_suffix("ms") {
                    Duration::from_millis(parse_digits(ms).ok_or(QuotaError::BadFormat)?)
                } else if let Some(secs) = other.strip_suffix('s') {
                    Duration::from_secs(parse_digits(secs).ok_or(QuotaError::BadFormat)?)
                } else {
                    return Err(QuotaError::BadFormat);
                }
            }
        };
        Quota::new(limit, period)
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    pub fn period(&self) -> Duration {
        self.period
    }

    /// Time for one request's worth of the bucket to refill: `period / limit`, rounded up to a
    /// whole nanosecond.
    pub fn emission_interval(&self) -> Duration {
        Duration::from_nanos(self.emission_ns as u64)
    }

    /// Time for an empty bucket to become full: `limit × emission_interval`, which is the period,
    /// or a few nanoseconds more when the period does not divide evenly.
    pub fn capacity(&self) -> Duration {
        Duration::from_nanos(self.capacity_ns() as u64)
    }

    fn capacity_ns(&self) -> i64 {
        // limit ≤ period_ns and emission_ns ≤ period_ns + 1 / limit, so this is below 2 × period.
        self.limit as i64 * self.emission_ns
    }
}

fn parse_digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

impl fmt::Display for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.period.as_secs();
        match (secs, self.period.subsec_nanos()) {
            (1, 0) => write!(f, "{}/second", self.limit),
            (60, 0) => write!(f, "{}/minute", self.limit),
            (3600, 0) => write!(f, "{}/hour", self.limit),
            (86400, 0) => write!(f, "{}/day", self.limit),
            (_, 0) => write!(f, "{}/{secs}s", self.limit),
            _ => write!(f, "{}/{}ms", self.limit, self.period.as_millis()),
        }
    }
}

impl FromStr for Quota {
    type Err = QuotaError;

    fn from_str(s: &str) -> Result<Self, QuotaError> {
        Quota::parse(s)
    }
}

impl TryFrom<String> for Quota {
    type Error = QuotaError;

    fn try_from(s: String) -> Result<Self, QuotaError> {
        Quota::parse(&s)
    }
}

impl From<Quota> for String {
    fn from(quota: Quota) -> String {
        quota.to_string()
    }
}

/// The answer to one request, with what the rate-limit headers need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u64,
    /// How many more requests of cost 1 would be admitted right now, after this one.
    pub remaining: u64,
    /// Until the bucket is full again (`remaining` back to `limit`) if nothing else comes.
    pub reset_after: Duration,
    /// When denied: until a request of the same cost would be admitted (at least 1 ns). `None`
    /// when allowed, and when the cost exceeds the limit, since such a request is never admitted.
    pub retry_after: Option<Duration>,
}

/// Decides one request of `cost` at `now_ns`, given the key's stored TAT (`None` for a key never
/// seen, or forgotten). Returns the decision and, when allowed, the TAT to store; a denied request
/// changes nothing. A cost of 0 is a query: always allowed, and the TAT it returns is the same
/// state.
///
/// A stored TAT more than one capacity ahead of `now_ns` can only come from a clock that went
/// backwards; it is read as an empty bucket rather than as a long ban.
pub fn decide(
    quota: &Quota,
    stored_tat_ns: Option<i64>,
    now_ns: i64,
    cost: u64,
) -> (Decision, Option<i64>) {
    let emission = quota.emission_ns;
    let capacity = quota.capacity_ns();
    let tat = stored_tat_ns
        .unwrap_or(now_ns)
        .clamp(now_ns, now_ns.saturating_add(capacity));
    // How much of the bucket is in use, in nanoseconds of refill: 0 (full) ..= capacity (empty).
    let used = tat - now_ns;
    let available = ((capacity - used) / emission) as u64;
    let denied = |retry_after: Option<i64>| Decision {
        allowed: false,
        limit: quota.limit,
        remaining: available,
        reset_after: nanos(used),
        retry_after: retry_after.map(nanos),
    };
    if cost > quota.limit {
        return (denied(None), None);
    }
    // cost ≤ limit, so this is at most the capacity.
    let used_after = used + cost as i64 * emission;
    if used_after > capacity {
        return (denied(Some(used_after - capacity)), None);
    }
    let decision = Decision {
        allowed: true,
        limit: quota.limit,
        remaining: ((capacity - used_after) / emission) as u64,
        reset_after: nanos(used_after),
        retry_after: None,
    };
    (decision, Some(now_ns + used_after))
}

fn nanos(ns: i64) -> Duration {
    Duration::from_nanos(ns.max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i64 = 1_000_000;
    const SEC: i64 = 1_000 * MS;

    fn quota(s: &str) -> Quota {
        Quota::parse(s).expect("a valid quota")
    }

    /// A client that remembers its key's TAT as a store would, at explicit times.
    struct Key {
        quota: Quota,
        tat: Option<i64>,
    }

    impl Key {
        fn new(q: &str) -> Self {
            Key {
                quota: quota(q),
                tat: None,
            }
        }

        fn hit(&mut self, now: i64, cost: u64) -> Decision {
            let (decision, tat) = decide(&self.quota, self.tat, now, cost);
            assert_eq!(decision.allowed, tat.is_some());
            if tat.is_some() {
                self.tat = tat;
            }
            decision
        }
    }

    /// xorshift64: deterministic pseudo-random sequences without a dependency.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    #[test]
    fn quotas_parse_in_every_unit_and_print_back_the_same() {
        for (text, limit, secs) in [
            ("100/minute", 100, 60),
            ("5/second", 5, 1),
            ("1000/hour", 1000, 3600),
            ("10000/day", 10000, 86400),
            ("10/90s", 10, 90),
            ("1000000000/second", 1_000_000_000, 1),
        ] {
            let q = quota(text);
            assert_eq!((q.limit(), q.period()), (limit, Duration::from_secs(secs)));
            assert_eq!(q.to_string(), text);
            assert_eq!(text.parse::<Quota>(), Ok(q));
        }
        let half = quota("3/500ms");
        assert_eq!(half.period(), Duration::from_millis(500));
        assert_eq!(half.to_string(), "3/500ms");
        assert_eq!(quota("7/60s").to_string(), "7/minute");
        assert_eq!(quota(" 100/minute\n").to_string(), "100/minute");
    }

    #[test]
    fn malformed_or_impossible_quotas_are_refused_with_a_reason() {
        for bad in [
            "",
            "100",
            "/minute",
            "100/",
            "100/week",
            "100/minutes",
            "-1/second",
            "+1/second",
            "1.5/second",
            "1 /second",
            "100/ minute",
            "1/s",
            "1/ms",
            "1/-5s",
            "99999999999999999999/second",
            "100/minute/2",
        ] {
            assert_eq!(Quota::parse(bad), Err(QuotaError::BadFormat), "{bad:?}");
        }
        assert_eq!(Quota::parse("0/minute"), Err(QuotaError::ZeroLimit));
        assert_eq!(Quota::parse("1/0s"), Err(QuotaError::BadPeriod));
        assert_eq!(Quota::parse("1/0ms"), Err(QuotaError::BadPeriod));
        assert_eq!(Quota::parse("1/604801s"), Err(QuotaError::BadPeriod));
        assert!(Quota::parse("1/604800s").is_ok());
        assert_eq!(Quota::parse("1000000001/second"), Err(QuotaError::TooFine));
        assert_eq!(
            Quota::new(1, Duration::from_micros(1500)),
            Err(QuotaError::BadPeriod)
        );
    }

    #[test]
    fn quotas_read_from_config_as_strings() {
        use serde::de::{value::Error, Deserialize, IntoDeserializer};
        let read = |s: &str| Quota::deserialize(s.into_deserializer()).map_err(|e: Error| e);
        assert_eq!(read("100/minute"), Ok(quota("100/minute")));
        assert!(read("100/fortnight").is_err());
        assert_eq!(String::from(quota("100/minute")), "100/minute");
    }

    #[test]
    fn the_emission_interval_is_the_period_over_the_limit_rounded_up() {
        assert_eq!(
            quota("100/minute").emission_interval(),
            Duration::from_millis(600)
        );
        assert_eq!(quota("100/minute").capacity(), Duration::from_secs(60));
        assert_eq!(
            quota("1000000000/second").emission_interval(),
            Duration::from_nanos(1)
        );
        assert_eq!(
            quota("7/second").emission_interval(),
            Duration::from_nanos(142_857_143)
        );
        assert_eq!(
            quota("7/second").capacity(),
            Duration::from_nanos(1_000_000_001)
        );
    }

    #[test]
    fn a_fresh_key_gets_the_whole_burst_at_once_then_one_per_emission_interval() {
        let mut key = Key::new("10/second");
        let t0 = 5 * SEC;
        for expected_remaining in (0..10).rev() {
            let d = key.hit(t0, 1);
            assert!(d.allowed);
            assert_eq!(d.limit, 10);
            assert_eq!(d.remaining, expected_remaining);
            assert_eq!(d.retry_after, None);
        }
        let denied = key.hit(t0, 1);
        assert!(!denied.allowed);
        assert_eq!(denied.remaining, 0);
        assert_eq!(denied.retry_after, Some(Duration::from_millis(100)));
        assert_eq!(denied.reset_after, Duration::from_secs(1));

        // One emission interval later exactly one more fits, a nanosecond earlier none does.
        assert!(!key.hit(t0 + 100 * MS - 1, 1).allowed);
        assert!(key.hit(t0 + 100 * MS, 1).allowed);
        assert!(!key.hit(t0 + 100 * MS, 1).allowed);
        // A full capacity after the last admission, the burst is back.
        let t1 = t0 + 100 * MS + SEC;
        for _ in 0..10 {
            assert!(key.hit(t1, 1).allowed);
        }
        assert!(!key.hit(t1, 1).allowed);
    }

    #[test]
    fn remaining_reset_and_retry_after_agree_with_each_other() {
        let q = quota("100/minute");
        let mut key = Key::new("100/minute");
        let now = 1_700_000_000 * SEC;
        let first = key.hit(now, 1);
        assert_eq!(first.remaining, 99);
        assert_eq!(first.reset_after, q.emission_interval());
        let bulk = key.hit(now, 40);
        assert_eq!(bulk.remaining, 59);
        assert_eq!(bulk.reset_after, q.emission_interval() * 41);
        // 59 left: a cost of 60 is denied and must wait exactly one emission interval.
        let over = key.hit(now, 60);
        assert!(!over.allowed);
        assert_eq!(over.remaining, 59);
        assert_eq!(over.reset_after, bulk.reset_after);
        assert_eq!(over.retry_after, Some(q.emission_interval()));
        let later = now + over.retry_after.map_or(0, |d| d.as_nanos() as i64);
        assert!(key.hit(later, 60).allowed);

        // Half an interval of refill is not a whole request.
        let mut key = Key::new("100/minute");
        key.hit(now, 100);
        let d = key.hit(now + 300 * MS, 1);
        assert!(!d.allowed);
        assert_eq!(d.remaining, 0);
        assert_eq!(d.retry_after, Some(Duration::from_millis(300)));
        assert_eq!(d.reset_after, Duration::from_millis(59_700));
    }

    #[test]
    fn a_denied_request_changes_nothing() {
        let q = quota("3/second");
        let tat = Some(SEC + 900 * MS);
        for cost in [1, 2, 3, 4, u64::MAX] {
            let (d, new_tat) = decide(&q, tat, SEC, cost);
            assert!(!d.allowed);
            assert_eq!(new_tat, None);
        }
    }

    #[test]
    fn a_cost_above_the_limit_is_never_admitted_and_has_no_retry_time() {
        let q = quota("5/second");
        let (d, tat) = decide(&q, None, 0, 6);
        assert_eq!(
            (d.allowed, d.remaining, d.retry_after, tat),
            (false, 5, None, None)
        );
        let (d, _) = decide(&q, None, 0, 5);
        assert!(d.allowed);
    }

    #[test]
    fn a_cost_of_zero_reports_the_state_without_spending() {
        let q = quota("5/second");
        let (d, tat) = decide(&q, Some(400 * MS), 0, 0);
        assert!(d.allowed);
        assert_eq!(d.remaining, 3);
        assert_eq!(tat, Some(400 * MS));
        let (d, tat) = decide(&q, None, 0, 0);
        assert_eq!(
            (d.remaining, d.reset_after, tat),
            (5, Duration::ZERO, Some(0))
        );
    }

    #[test]
    fn a_tat_in_the_past_is_the_same_as_no_tat() {
        let q = quota("5/second");
        for cost in 0..=6 {
            assert_eq!(
                decide(&q, Some(-3 * SEC), 0, cost),
                decide(&q, None, 0, cost)
            );
            assert_eq!(decide(&q, Some(0), 0, cost), decide(&q, None, 0, cost));
        }
    }

    #[test]
    fn a_tat_from_a_clock_that_went_backwards_reads_as_an_empty_bucket() {
        let q = quota("5/second");
        let (d, _) = decide(&q, Some(3600 * SEC), 0, 1);
        assert!(!d.allowed);
        assert_eq!(d.reset_after, Duration::from_secs(1));
        assert_eq!(d.retry_after, Some(Duration::from_millis(200)));
    }

    #[test]
    fn the_finest_quota_admits_one_request_per_nanosecond() {
        let mut key = Key::new("1000000000/second");
        assert!(key.hit(0, 1_000_000_000).allowed);
        assert!(!key.hit(0, 1).allowed);
        assert!(key.hit(1, 1).allowed);
        assert!(!key.hit(1, 1).allowed);
    }

    /// The continuous-state leaky bucket of ITU-T I.371, written independently of `decide`:
    /// content `x` drains one unit per nanosecond since the last conforming request.
    fn reference_leaky_bucket(q: &Quota, requests: &[(i64, u64)]) -> Vec<bool> {
        let (emission, capacity) = (q.emission_ns as i128, q.capacity_ns() as i128);
        let (mut x, mut last) = (0i128, i64::MIN);
        requests
            .iter()
            .map(|&(t, cost)| {
                let drained = if last == i64::MIN {
                    0
                } else {
                    (x - (t - last) as i128).max(0)
                };
                let conforms = drained + cost as i128 * emission <= capacity;
                if conforms {
                    x = drained + cost as i128 * emission;
                    last = t;
                }
                conforms
            })
            .collect()
    }

    #[test]
    fn decisions_match_an_independent_leaky_bucket_and_never_exceed_burst_plus_refill() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for q in [
            "1/1ms",
            "2/3ms",
            "3/second",
            "5/7ms",
            "7/second",
            "10/second",
        ] {
            let q = quota(q);
            let emission = q.emission_ns;
            for _run in 0..200 {
                let mut now = rng.below(u32::MAX as u64) as i64;
                let mut requests = Vec::new();
                for _ in 0..60 {
                    // Mostly bursts and sub-interval gaps, sometimes long idle stretches.
                    now += match rng.below(4) {
                        0 => 0,
                        1 => rng.below(emission as u64) as i64,
                        2 => rng.below(3 * emission as u64) as i64,
                        _ => rng.below(q.capacity_ns() as u64 * 2) as i64,
                    };
                    requests.push((now, rng.below(q.limit() + 2)));
                }

                let mut key = Key {
                    quota: q,
                    tat: None,
                };
                let ours: Vec<bool> = requests
                    .iter()
                    .map(|&(t, cost)| {
                        let before = key.tat;
                        let d = key.hit(t, cost);
                        if !d.allowed {
                            assert_eq!(key.tat, before, "a denial must not move the TAT");
                        }
                        d.allowed
                    })
                    .collect();
                assert_eq!(
                    ours,
                    reference_leaky_bucket(&q, &requests),
                    "{q} {requests:?}"
                );

                // Over every interval [a, b] between two admissions, the admitted cost is at
                // most one burst plus what (b - a) refills.
                let admitted: Vec<(i64, u64)> = requests
                    .iter()
                    .zip(&ours)
                    .filter(|(_, &ok)| ok)
                    .map(|(&r, _)| r)
                    .collect();
                for i in 0..admitted.len() {
                    let mut cost = 0u64;
                    for j in i..admitted.len() {
                        cost += admitted[j].1;
                        let span = admitted[j].0 - admitted[i].0;
                        assert!(
                            cost as i128 * emission as i128 <= (q.capacity_ns() + span) as i128,
                            "{q}: {cost} admitted within {span} ns"
                        );
                    }
                }
            }
        }
    }
}
