//! Rate limits, failed-authentication limits and per-call credit costs, applied once per
//! request right after authentication (in the auth extractors), and the rate-limit headers
//! every limited answer carries.
//!
//! Hot path. Limits are GCRA (exact, O(1) state per key) in the process, or one atomic Redis
//! script when several nodes share Redis (see `keygate-cluster`). A request is limited by its
//! account's plan and, when its key has one, by the key's own lower limit; the headers report
//! the tighter of the two. Headers travel through the request's context, because the extractor
//! that decides cannot touch the response: the frame writes them.

use std::net::IpAddr;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use bytes::BytesMut;
use keygate_core::gcra::{Decision, Quota};

use keygate_store::{Account, ApiKey};

use crate::http::auth::Principal;
use crate::http::ApiError;
use crate::state::AppState;

/// What the headers of one answer say.
#[derive(Clone, Debug)]
pub struct RateLimitInfo {
    /// The policy's name in `RateLimit-Policy`: the plan, or `key` for a key's own limit.
    pub policy: ShortStr<POLICY_INLINE>,
    pub quota: Quota,
    pub decision: Decision,
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Plan names this long or shorter travel with the request without an allocation.
pub const POLICY_INLINE: usize = 32;
/// The same for limiter buckets' names (`acct:` and an id).
const BUCKET_INLINE: usize = 64;

const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// `X-RateLimit-*` as seed 002 shows them (the reset as Unix seconds), and the IETF
/// `RateLimit-Policy` / `RateLimit` fields (draft-ietf-httpapi-ratelimit-headers).
pub fn write_headers(h: &mut HeaderMap, info: &RateLimitInfo, now_unix: i64) {
    let d = &info.decision;
    let reset_in = ceil_secs(d.reset_after);
    let window = info.quota.period().as_secs().max(1);
    let name = info.policy.as_str();
    let policy: std::borrow::Cow<'_, str> = if name.contains(['"', '\\']) {
        name.replace(['"', '\\'], "").into()
    } else {
        name.into()
    };
    // Every value is written into one buffer and split off it: the five share one allocation
    // (each formatted on its own, they took five or more, and as many copies).
    let mut buf = BytesMut::with_capacity(2 * policy.len() + 112);
    put_decimal(&mut buf, d.limit);
    let limit = buf.split().freeze();
    put_decimal(&mut buf, d.remaining);
    let remaining = buf.split().freeze();
    put_decimal(&mut buf, now_unix.max(0) as u64 + reset_in);
    let reset = buf.split().freeze();
    put_policy(&mut buf, &policy, (b";q=", d.limit), (b";w=", window));
    let policy_value = buf.split().freeze();
    put_policy(&mut buf, &policy, (b";r=", d.remaining), (b";t=", reset_in));
    let state = buf.split().freeze();
    h.reserve(5);
    for (name, value) in [
        (X_RATELIMIT_LIMIT, limit),
        (X_RATELIMIT_REMAINING, remaining),
        (X_RATELIMIT_RESET, reset),
        (RATELIMIT_POLICY, policy_value),
        (RATELIMIT, state),
    ] {
        if let Ok(v) = HeaderValue::from_maybe_shared(value) {
            h.insert(name, v);
        }
    }
}

/// `"policy";a=1;b=2`: a structured-field item with two integer parameters.
fn put_policy(buf: &mut BytesMut, policy: &str, a: (&[u8], u64), b: (&[u8], u64)) {
    buf.extend_from_slice(b"\"");
    buf.extend_from_slice(policy.as_bytes());
    buf.extend_from_slice(b"\"");
    for (name, n) in [a, b] {
        buf.extend_from_slice(name);
        put_decimal(buf, n);
    }
}

/// Appends `n` in decimal.
fn put_decimal(buf: &mut BytesMut, n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[at..]);
}

/// Applies the caller's rate limits and debits the call's credit `cost`. Operators are not
/// limited.
pub async fn enforce(
    state: &AppState,
    who: &Principal,
    call: (&str, &str),
    cost: u64,
    idempotency_key: Option<&str>,
) -> Result<(), ApiError> {
    apply_limits(state, who).await?;
    charge(state, who, call, cost, idempotency_key).await
}

/// Counts one request against a key's own limit (if it has one), then its account's plan.
/// `Ok` carries the tighter of the two for the headers; `Err` the limit that refused it.
///
/// Hot path: the buckets' names and the policy's are made on the stack, and an in-process
/// limiter is asked without a future (see `RateLimiter::check_in_process`).
pub async fn check_limits(
    state: &AppState,
    key: Option<&ApiKey>,
    account: &Account,
) -> Result<Option<RateLimitInfo>, RateLimitInfo> {
    let key_limit = key.and_then(|k| {
        let q = k.rate_limit.as_deref()?.parse::<Quota>().ok()?;
        Some((
            ShortStr::<BUCKET_INLINE>::concat(&["key:", k.id.as_str()]),
            q,
            ShortStr::from("key"),
        ))
    });
    let plan_limit = state.config.plans.get(&account.plan).map(|p| {
        (
            ShortStr::<BUCKET_INLINE>::concat(&["acct:", account.id.as_str()]),
            p.rate_limit,
            ShortStr::from(account.plan.as_str()),
        )
    });
    let mut tightest: Option<RateLimitInfo> = None;
    for (bucket, quota, policy) in key_limit.into_iter().chain(plan_limit) {
        let decision = match state.limiter.check_in_process(bucket.as_str(), &quota, 1) {
            Some(decision) => decision,
            None => state.limiter.check(bucket.as_str(), &quota, 1).await,
        };
        let info = RateLimitInfo {
            policy,
            quota,
            decision,
        };
        if !decision.allowed {
            return Err(info);
        }
        if tightest
            .as_ref()
            .is_none_or(|t| decision.remaining < t.decision.remaining)
        {
            tightest = Some(info);
        }
    }
    Ok(tightest)
}

/// A short string (a bucket's or a policy's name) kept inline, without an allocation, when it
/// fits in `N` bytes; a longer one goes to the heap.
#[derive(Clone, Debug)]
pub enum ShortStr<const N: usize> {
    Inline { bytes: [u8; N], len: usize },
    Heap(Box<str>),
}

impl<const N: usize> ShortStr<N> {
    /// The parts one after the other.
    pub fn concat(parts: &[&str]) -> Self {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len > N {
            return ShortStr::Heap(parts.concat().into_boxed_str());
        }
        let mut bytes = [0u8; N];
        let mut at = 0;
        for part in parts {
            bytes[at..at + part.len()].copy_from_slice(part.as_bytes());
            at += part.len();
        }
        ShortStr::Inline { bytes, len }
    }

    pub fn as_str(&self) -> &str {
        match self {
            // Whole `str`s laid end to end: always UTF-8, so the empty fallback is never taken.
            ShortStr::Inline { bytes, len } => std::str::from_utf8(&bytes[..*len]).unwrap_or(""),
            ShortStr::Heap(s) => s,
        }
    }
}

impl<const N: usize> From<&str> for ShortStr<N> {
    fn from(s: &str) -> Self {
        ShortStr::concat(&[s])
    }
}

/// The caller's rate limits (see [`check_limits`]). Operators are not limited. The limit the
/// request was counted against goes to the request's context, whose frame writes it as the
/// answer's headers, refused or not.
pub async fn apply_limits(state: &AppState, who: &Principal) -> Result<(), ApiError> {
    if who.is_operator() || !state.config.rate_limits_enabled {
        return Ok(());
    }
    let Some(account) = who.account() else {
        return Ok(());
    };
    let outcome = check_limits(state, who.key.as_ref().map(|k| &k.key), account).await;
    let (info, denied) = match outcome {
        Ok(info) => (info, false),
        Err(info) => (Some(info), true),
    };
    let retry_after = info
        .as_ref()
        .map(|i| i.decision.retry_after.unwrap_or(i.quota.period()));
    if denied {
        if let Some(info) = &info {
            crate::webhooks::events::rate_limit_exceeded(
                state,
                &account.id,
                who.key_id().map(|k| k.as_str()),
                info.quota.limit(),
            );
        }
    }
    if let Some(info) = info {
        crate::http::request_id::set_ratelimit(info);
    }
    match (denied, retry_after) {
        (true, Some(retry_after)) => Err(ApiError::RateLimited { retry_after }),
        _ => Ok(()),
    }
}

/// Debits a call's credit `cost` (none for operators); 402 when the balance is short.
pub async fn charge(
    state: &AppState,
    who: &Principal,
    call: (&str, &str),
    cost: u64,
    idempotency_key: Option<&str>,
) -> Result<(), ApiError> {
    let (method, path) = call;
    if who.is_operator() || cost == 0 {
        return Ok(());
    }
    let Some(account) = who.account() else {
        return Ok(());
    };
    {
        let idem = match idempotency_key {
            Some(k) => format!("call:{k}"),
            None => format!(
                "call:{}",
                crate::http::request_id::current()
                    .unwrap_or_else(crate::http::request_id::new_request_id)
            ),
        };
        crate::service::credits::debit(
            state,
            &account.id,
            &account.plan,
            cost,
            idem,
            who.key_id(),
            format!("{method} {path}"),
        )
        .await?;
    }
    Ok(())
}

fn failure_bucket(ip: IpAddr) -> String {
    format!("authfail:{ip}")
}

/// Whether `ip` has used up its failed authentications: its next unknown key is refused with
/// 429 before any database lookup.
pub async fn failures_exhausted(state: &AppState, ip: Option<IpAddr>) -> bool {
    let Some(ip) = ip else { return false };
    if !state.config.rate_limits_enabled {
        return false;
    }
    let q = state.config.auth_failure_limit;
    state
        .limiter
        .check(&failure_bucket(ip), &q, 0)
        .await
        .remaining
        == 0
}

/// Counts a failed authentication against `ip`; the error to answer with (401, or 429 once the
/// address has failed too often).
pub async fn authentication_failed(
    state: &AppState,
    ip: Option<IpAddr>,
    err: ApiError,
) -> ApiError {
    let Some(ip) = ip else { return err };
    if !state.config.rate_limits_enabled {
        return err;
    }
    let q = state.config.auth_failure_limit;
    let d = state.limiter.check(&failure_bucket(ip), &q, 1).await;
    if d.allowed {
        err
    } else {
        tracing::warn!(client = %ip, "too many failed authentications from one address");
        ApiError::RateLimited {
            retry_after: d.retry_after.unwrap_or(q.period()),
        }
    }
}

/// Whether a key's own limit stays within its account's plan, by rate.
pub fn within_plan(key_limit: &Quota, plan: &Quota) -> bool {
    // limit/period ≤ plan.limit/plan.period, in integers.
    (key_limit.limit() as u128) * plan.period().as_nanos()
        <= (plan.limit() as u128) * key_limit.period().as_nanos()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_headers_carry_the_decision_in_every_form() {
        let quota: Quota = "100/minute".parse().expect("quota");
        let info = RateLimitInfo {
            policy: "pro\"plan".into(),
            quota,
            decision: Decision {
                allowed: true,
                limit: 100,
                remaining: 0,
                reset_after: Duration::from_millis(59_001),
                retry_after: None,
            },
        };
        let mut h = HeaderMap::new();
        write_headers(&mut h, &info, 1_700_000_000);
        assert_eq!(h[X_RATELIMIT_LIMIT], "100");
        assert_eq!(h[X_RATELIMIT_REMAINING], "0");
        assert_eq!(h[X_RATELIMIT_RESET], "1700000060");
        assert_eq!(h[RATELIMIT_POLICY], "\"proplan\";q=100;w=60");
        assert_eq!(h[RATELIMIT], "\"proplan\";r=0;t=60");
    }

    #[test]
    fn a_short_name_reads_back_whole_inline_or_on_the_heap() {
        let id = "acct_01a2470403e17393b14648c7b02253d2";
        let inline = ShortStr::<BUCKET_INLINE>::concat(&["acct:", id]);
        assert!(matches!(inline, ShortStr::Inline { .. }));
        assert_eq!(inline.as_str(), format!("acct:{id}"));
        let long = "é".repeat(40);
        let heap = ShortStr::<POLICY_INLINE>::from(long.as_str());
        assert!(matches!(heap, ShortStr::Heap(_)));
        assert_eq!(heap.as_str(), long);
        assert_eq!(ShortStr::<4>::concat(&["ke", "y"]).as_str(), "key");
    }

    #[test]
    fn decimals_are_written_whole() {
        for n in [0, 7, 10, 99, 1_000_000, u64::MAX] {
            let mut buf = BytesMut::new();
            put_decimal(&mut buf, n);
            assert_eq!(&buf[..], n.to_string().as_bytes());
        }
    }
}
