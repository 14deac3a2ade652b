//! Outgoing webhooks, the pure parts: Standard Webhooks signing (and a reference verifier), the
//! retry schedule, and the SSRF rules for destinations.
//!
//! Signing follows the Standard Webhooks specification (standardwebhooks.com, spec
//! `spec/standard-webhooks.md` in the `standard-webhooks/standard-webhooks` repository):
//!
//! - `webhook-id`: `msg_…`, the same on every attempt of one message (receivers dedupe on it);
//! - `webhook-timestamp`: Unix seconds of *this attempt*, so a retry is never a stale replay;
//! - `webhook-signature`: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, one per
//!   active secret, space-separated: for [`ROTATION_OVERLAP`] after a rotation both the new and
//!   the old secret sign, so receivers can switch over without dropping a delivery;
//! - secrets are shown to users as `whsec_<base64>` of 24 to 64 random bytes (we make 32).
//!
//! Nothing here does I/O: the worker supplies the clock, the randomness for jitter, and the
//! resolved addresses of a destination, and asks this module what to do with them.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::Sha256;
use subtle::ConstantTimeEq;

// ---------------------------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------------------------

/// The prefix that marks a symmetric Standard Webhooks secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// The specification's bounds on a symmetric secret: at least 192 bits, at most 512.
pub const MIN_SECRET_LEN: usize = 24;
pub const MAX_SECRET_LEN: usize = 64;
/// What [`WebhookSecret::generate`] draws.
pub const GENERATED_SECRET_LEN: usize = 32;

/// An endpoint's signing secret. `Debug` is redacted; equality is constant-time.
#[derive(Clone)]
pub struct WebhookSecret(Vec<u8>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("a webhook secret is `whsec_` followed by base64")]
    NotBase64,
    #[error("a webhook secret must be 24 to 64 bytes")]
    WrongLength,
}

impl WebhookSecret {
    /// 32 bytes from the thread-local CSPRNG (seeded from the OS, as API keys are).
    pub fn generate() -> Self {
        let mut bytes = [0u8; GENERATED_SECRET_LEN];
        rand::rng().fill(&mut bytes[..]);
        Self(bytes.to_vec())
    }

    /// Raw secret bytes (for example after opening them from storage); 24 to 64 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SecretError> {
        if (MIN_SECRET_LEN..=MAX_SECRET_LEN).contains(&bytes.len()) {
            Ok(Self(bytes.to_vec()))
        } else {
            Err(SecretError::WrongLength)
        }
    }

    /// `whsec_<base64>` or bare base64 (padded or not), with surrounding whitespace ignored.
    pub fn parse_whsec(s: &str) -> Result<Self, SecretError> {
        let s = s.trim();
        let encoded = s.strip_prefix(SECRET_PREFIX).unwrap_or(s);
        let bytes = STANDARD
            .decode(encoded)
            .or_else(|_| STANDARD_NO_PAD.decode(encoded))
            .map_err(|_| SecretError::NotBase64)?;
        Self::from_bytes(&bytes)
    }

    /// The form shown to users once, and accepted by every Standard Webhooks library.
    pub fn to_whsec(&self) -> String {
        format!("{SECRET_PREFIX}{}", STANDARD.encode(&self.0))
    }

    /// The raw bytes, for sealing at rest. Named so that a call site reads as what it is.
    pub fn expose_bytes(&self) -> &[u8] {
        &self.0
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes keys of any length; this cannot fail.
        Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC accepts keys of any length")
    }

    fn tag(&self, msg_id: &str, timestamp: &str, body: &[u8]) -> [u8; 32] {
        let mut mac = self.mac();
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.finalize().into_bytes().into()
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

impl PartialEq for WebhookSecret {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for WebhookSecret {}

// ---------------------------------------------------------------------------------------------
// Signing and verifying
// ---------------------------------------------------------------------------------------------

/// How long the previous secret keeps signing after a rotation.
pub const ROTATION_OVERLAP: Duration = Duration::from_secs(24 * 60 * 60);
/// The reference verifier's default clock-skew allowance, both ways.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// A new `webhook-id`: `msg_` and a UUIDv7 in lowercase hex, so ids sort by creation and never
/// contain the `.` that separates the signed fields.
pub fn message_id() -> String {
    format!("msg_{}", uuid::Uuid::now_v7().simple())
}

/// One `v1,<base64>` signature of `{msg_id}.{timestamp_secs}.{body}`.
///
/// `msg_id` must not contain `.` (ours never do, see [`message_id`]).
pub fn sign(secret: &WebhookSecret, msg_id: &str, timestamp_secs: i64, body: &[u8]) -> String {
    let tag = secret.tag(msg_id, &timestamp_secs.to_string(), body);
    format!("v1,{}", STANDARD.encode(tag))
}

/// The `webhook-signature` header: one signature per secret, space-separated.
pub fn signature_header(
    secrets: &[&WebhookSecret],
    msg_id: &str,
    timestamp_secs: i64,
    body: &[u8],
) -> String {
    secrets
        .iter()
        .map(|secret| sign(secret, msg_id, timestamp_secs, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The secrets that sign an attempt made at `now_secs`: the current one, and the previous one
/// while less than [`ROTATION_OVERLAP`] has passed since `rotated_at_secs`.
pub fn signing_secrets<'a>(
    current: &'a WebhookSecret,
    previous: Option<(&'a WebhookSecret, i64)>,
    now_secs: i64,
) -> Vec<&'a WebhookSecret> {
    let overlap = ROTATION_OVERLAP.as_secs() as i64;
    let mut secrets = vec![current];
    if let Some((old, rotated_at_secs)) = previous {
        if now_secs.saturating_sub(rotated_at_secs) < overlap {
            secrets.push(old);
        }
    }
    secrets
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("webhook-timestamp is not a Unix time in seconds")]
    InvalidTimestamp,
    #[error("webhook-timestamp is too old")]
    TimestampTooOld,
    #[error("webhook-timestamp is too far in the future")]
    TimestampTooNew,
    #[error("no signature in webhook-signature matches")]
    NoMatchingSignature,
}

/// The reference verifier, as a receiver should write it: checks the timestamp against
/// `now_secs` (± `tolerance`, see [`DEFAULT_TOLERANCE`]), then accepts if any `v1` signature in
/// the header matches, compared in constant time. Other versions (`v1a`, …) are skipped.
pub fn verify(
    secret: &WebhookSecret,
    msg_id: &str,
    timestamp_header: &str,
    signature_header: &str,
    body: &[u8],
    now_secs: i64,
    tolerance: Duration,
) -> Result<(), VerifyError> {
    if timestamp_header.is_empty() || !timestamp_header.bytes().all(|b| b.is_ascii_digit()) {
        return Err(VerifyError::InvalidTimestamp);
    }
    let timestamp: i64 = timestamp_header
        .parse()
        .map_err(|_| VerifyError::InvalidTimestamp)?;
    let tolerance = i64::try_from(tolerance.as_secs()).unwrap_or(i64::MAX);
    if timestamp < now_secs.saturating_sub(tolerance) {
        return Err(VerifyError::TimestampTooOld);
    }
    if timestamp > now_secs.saturating_add(tolerance) {
        return Err(VerifyError::TimestampTooNew);
    }

    let expected = secret.tag(msg_id, timestamp_header, body);
    let matched = signature_header
        .split_ascii_whitespace()
        .filter_map(|candidate| candidate.split_once(','))
        .filter(|(version, _)| *version == "v1")
        .filter_map(|(_, encoded)| STANDARD.decode(encoded).ok())
        .any(|given| bool::from(given.ct_eq(&expected)));
    if matched {
        Ok(())
    } else {
        Err(VerifyError::NoMatchingSignature)
    }
}

// ---------------------------------------------------------------------------------------------
// Retries
// ---------------------------------------------------------------------------------------------

/// The wait before each retry: the first retry 5 s after the first attempt fails, and so on.
pub const RETRY_DELAYS: [Duration; 7] = [
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 60 * 60),
    Duration::from_secs(5 * 60 * 60),
    Duration::from_secs(10 * 60 * 60),
    Duration::from_secs(10 * 60 * 60),
];
/// The first attempt and one per retry.
pub const MAX_ATTEMPTS: u32 = RETRY_DELAYS.len() as u32 + 1;
/// A receiver's `Retry-After` is honoured up to this long.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 60 * 60);
/// Scheduled delays are spread by up to this fraction either way.
pub const JITTER: f64 = 0.10;

/// How long to wait after attempt number `attempt_number` (1 = the first delivery) failed, or
/// `None` when it was the last one and the message should be given up on.
///
/// `jitter_unit` is a uniform draw in `[0, 1]` from the caller's RNG; it moves the scheduled
/// delay by up to ±10 % (values outside the range are clamped, NaN counts as 0.5). A
/// `retry_after` longer than the jittered delay replaces it, capped at [`MAX_RETRY_AFTER`]; a
/// shorter one is ignored, so a receiver cannot speed the schedule up. Attempt 0 is treated as
/// attempt 1.
pub fn next_attempt_delay(
    attempt_number: u32,
    retry_after: Option<Duration>,
    jitter_unit: f64,
) -> Option<Duration> {
    let index = attempt_number.max(1) as usize - 1;
    let scheduled = *RETRY_DELAYS.get(index)?;
    let unit = if jitter_unit.is_nan() {
        0.5
    } else {
        jitter_unit.clamp(0.0, 1.0)
    };
    let factor = 1.0 - JITTER + 2.0 * JITTER * unit;
    // Whole milliseconds: the delays are at most 10 h, far inside f64's exact integers.
    let delay = Duration::from_millis((scheduled.as_millis() as f64 * factor).round() as u64);
    Some(match retry_after {
        Some(asked) if asked > delay => asked.min(MAX_RETRY_AFTER),
        _ => delay,
    })
}

/// A `Retry-After` header value (RFC 9110 §10.2.3): delay-seconds, or an IMF-fixdate such as
/// `Sun, 06 Nov 1994 08:49:37 GMT` (a date in the past is zero). Anything else is `None`.
pub fn parse_retry_after(value: &str, now_secs: i64) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // More digits than a u64 holds is still "a very long time".
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let at = parse_imf_fixdate(value)?;
    Some(Duration::from_secs(
        u64::try_from(at.saturating_sub(now_secs)).unwrap_or(0),
    ))
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` → Unix seconds. The day name is checked for shape only.
fn parse_imf_fixdate(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if !s.is_ascii() || b.len() != 29 || &b[3..5] != b", " || &b[25..] != b" GMT" {
        return None;
    }
    if !b[..3].iter().all(u8::is_ascii_alphabetic) {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = &s[range];
        digits
            .bytes()
            .all(|d| d.is_ascii_digit())
            .then(|| digits.parse().ok())?
    };
    let separators = [(7, b' '), (11, b' '), (16, b' '), (19, b':'), (22, b':')];
    if separators.iter().any(|&(i, c)| b[i] != c) {
        return None;
    }
    let day = number(5..7)?;
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| *m == &s[8..11])? as i64 + 1;
    let year = number(12..16)?;
    let (hour, minute, second) = (number(17..19)?, number(20..22)?, number(23..25)?);
    if !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    // Days from 1970-01-01 to the civil date (H. Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hour * 3_600 + minute * 60 + second)
}

// ---------------------------------------------------------------------------------------------
// Destinations (SSRF)
// ---------------------------------------------------------------------------------------------

/// Cloud instance-metadata services. Most already sit in a refused range (link-local, CGNAT);
/// they are listed so that stays true whatever the ranges become.
pub const METADATA_ADDRESSES: [Ipv4Addr; 3] = [
    Ipv4Addr::new(169, 254, 169, 254), // AWS, GCP, Azure, OCI, DigitalOcean, …
    Ipv4Addr::new(168, 63, 129, 16),   // Azure wire server
    Ipv4Addr::new(100, 100, 100, 200), // Alibaba Cloud
];

/// Whether a delivery must not connect to `ip` (unless the operator allowed private
/// destinations). Call it on every address a destination resolves to, at delivery time, and
/// connect to the checked address itself, so a DNS answer cannot change in between.
///
/// IPv4: 0.0.0.0/8, 10/8, 100.64/10 (CGNAT), 127/8, 169.254/16, 172.16/12, 192.0.0/24,
/// 192.0.2/24, 192.88.99/24, 192.168/16, 198.18/15, 198.51.100/24, 203.0.113/24, 224/4
/// (multicast), 240/4 (reserved, with the broadcast address) and [`METADATA_ADDRESSES`].
///
/// IPv6: only global unicast (2000::/3) is ever allowed, which refuses ::, ::1, the deprecated
/// IPv4-compatible ::/96, fc00::/7 (with AWS's fd00:ec2::254), fe80::/10, fec0::/10, ff00::/8
/// and 100::/64; inside it, 2001::/23 (protocol assignments, Teredo), 2001:db8::/32 and
/// 3fff::/20 (documentation) are refused. IPv4-mapped (::ffff:0:0/96), NAT64 (64:ff9b::/96) and
/// 6to4 (2002::/16) addresses are judged by the IPv4 address they carry.
pub fn is_forbidden_destination(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_forbidden_v4(v4),
        IpAddr::V6(v6) => is_forbidden_v6(v6),
    }
}

fn is_forbidden_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    a == 0
        || a == 10
        || (a == 100 && (64..=127).contains(&b))
        || a == 127
        || (a == 169 && b == 254)
        || (a == 172 && (16..=31).contains(&b))
        || (a == 192 && b == 0 && (c == 0 || c == 2))
        || (a == 192 && b == 88 && c == 99)
        || (a == 192 && b == 168)
        || (a == 198 && (b == 18 || b == 19))
        || (a == 198 && b == 51 && c == 100)
        || (a == 203 && b == 0 && c == 113)
        || a >= 224
        || METADATA_ADDRESSES.contains(&ip)
}

fn is_forbidden_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    let v4 = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    if let Some(mapped) = ip.to_ipv4_mapped() {
        return is_forbidden_v4(mapped);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return is_forbidden_v4(v4(s[6], s[7]));
    }
    if s[0] == 0x2002 {
        return is_forbidden_v4(v4(s[1], s[2]));
    }
    s[0] & 0xe000 != 0x2000
        || (s[0] == 0x2001 && s[1] < 0x0200)
        || (s[0] == 0x2001 && s[1] == 0x0db8)
        || (s[0] == 0x3fff && s[1] < 0x1000)
}

/// Longest destination URL accepted.
pub const MAX_URL_LEN: usize = 2048;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// A destination's host: a literal address (check it with [`is_forbidden_destination`] right
/// away) or a lowercase domain name (resolve it, then check every address).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    Domain(String),
    Ip(IpAddr),
}

/// A destination URL taken apart. `path` is what goes on the request line: the path and query,
/// at least `/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedDestination {
    pub scheme: Scheme,
    pub host: Host,
    pub port: u16,
    pub path: String,
}

impl ParsedDestination {
    /// The `Host` header value: IPv6 in brackets, the port only when it is not the default.
    pub fn authority(&self) -> String {
        let host = match &self.host {
            Host::Domain(name) => name.clone(),
            Host::Ip(IpAddr::V4(ip)) => ip.to_string(),
            Host::Ip(IpAddr::V6(ip)) => format!("[{ip}]"),
        };
        if self.port == self.scheme.default_port() {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UrlError {
    #[error("the URL is longer than 2048 characters")]
    TooLong,
    #[error(
        "the URL may contain only printable ASCII, no spaces, and valid %-escapes \
         (write international domain names in punycode)"
    )]
    InvalidCharacter,
    #[error("only http:// and https:// URLs are accepted")]
    UnsupportedScheme,
    #[error("credentials in the URL (user@host) are not accepted")]
    UserInfo,
    #[error("the URL has no host")]
    MissingHost,
    #[error("the URL's host is not a valid domain name or IP address")]
    InvalidHost,
    #[error("the URL's port must be a number from 1 to 65535")]
    InvalidPort,
    #[error("the URL may not have a fragment (#…)")]
    Fragment,
}

/// Checks a destination URL when it is registered and again before each delivery. Strict on
/// purpose: only the RFC 3986 characters, no userinfo, no fragment, IPv6 only in brackets, and
/// a host whose last label is numeric must be a canonical dotted-quad IPv4 address (so
/// `2130706433`, `127.1` or `0x7f.0.0.1` cannot reach a resolver that reads them as 127.0.0.1).
/// Whether the host may be contacted is decided later, on the resolved addresses.
pub fn check_url(url: &str) -> Result<ParsedDestination, UrlError> {
    if url.len() > MAX_URL_LEN {
        return Err(UrlError::TooLong);
    }
    if !url.bytes().all(is_url_byte) || !valid_percent_escapes(url) {
        return Err(UrlError::InvalidCharacter);
    }
    let (scheme, rest) = url.split_once("://").ok_or(UrlError::UnsupportedScheme)?;
    let scheme = if scheme.eq_ignore_ascii_case("http") {
        Scheme::Http
    } else if scheme.eq_ignore_ascii_case("https") {
        Scheme::Https
    } else {
        return Err(UrlError::UnsupportedScheme);
    };

    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if tail.contains('#') {
        return Err(UrlError::Fragment);
    }
    if authority.contains('@') {
        return Err(UrlError::UserInfo);
    }
    if authority.is_empty() {
        return Err(UrlError::MissingHost);
    }

    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (inside, after) = bracketed.split_once(']').ok_or(UrlError::InvalidHost)?;
        let ip: Ipv6Addr = inside.parse().map_err(|_| UrlError::InvalidHost)?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or(UrlError::InvalidHost)?),
        };
        (Host::Ip(IpAddr::V6(ip)), port)
    } else {
        let (name, port) = match authority.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (authority, None),
        };
        if port.is_some_and(|p| p.contains(':')) {
            // An unbracketed IPv6 address, or two ports.
            return Err(UrlError::InvalidHost);
        }
        if name.is_empty() {
            return Err(UrlError::MissingHost);
        }
        (parse_host_name(name)?, port)
    };

    let port = match port {
        None => scheme.default_port(),
        Some(p) => {
            if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(UrlError::InvalidPort);
            }
            match p.parse::<u16>() {
                Ok(port) if port != 0 => port,
                _ => return Err(UrlError::InvalidPort),
            }
        }
    };

    let path = if tail.starts_with('/') {
        tail.to_owned()
    } else {
        format!("/{tail}")
    };
    Ok(ParsedDestination {
        scheme,
        host,
        port,
        path,
    })
}

/// RFC 3986's characters: unreserved, reserved and `%`.
fn is_url_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~:/?#[]@!$&'()*+,;=%".contains(&b)
}

fn valid_percent_escapes(url: &str) -> bool {
    let b = url.as_bytes();
    b.iter().enumerate().all(|(i, &c)| {
        c != b'%'
            || (b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
    })
}

fn parse_host_name(name: &str) -> Result<Host, UrlError> {
    let lower = name.to_ascii_lowercase();
    let bare = lower.strip_suffix('.').unwrap_or(&lower);
    if bare.is_empty() || bare.len() > 253 {
        return Err(UrlError::InvalidHost);
    }
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    };
    if !bare.split('.').all(label_ok) {
        return Err(UrlError::InvalidHost);
    }
    let last = bare.rsplit('.').next().unwrap_or(bare);
    let numeric = last.bytes().all(|b| b.is_ascii_digit())
        || last
            .strip_prefix("0x")
            .is_some_and(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()));
    if numeric {
        // std's parser accepts only four decimal parts without leading zeros.
        let ip: Ipv4Addr = bare.parse().map_err(|_| UrlError::InvalidHost)?;
        return Ok(Host::Ip(IpAddr::V4(ip)));
    }
    Ok(Host::Domain(lower))
}

// ---------------------------------------------------------------------------------------------
// Event types and endpoint filters
// ---------------------------------------------------------------------------------------------

/// The longest event type accepted.
pub const MAX_EVENT_TYPE_LEN: usize = 128;

/// Event types are dotted names such as `post.created` or `key.revoked`: ASCII letters, digits,
/// `_` and `-` in segments separated by single dots.
pub fn is_valid_event_type(event_type: &str) -> bool {
    !event_type.is_empty()
        && event_type.len() <= MAX_EVENT_TYPE_LEN
        && event_type.split('.').all(|segment| {
            !segment.is_empty()
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
}

/// An endpoint's filter entry: an event type, `prefix.*` (every type under that prefix) or `*`.
pub fn is_valid_event_filter(filter: &str) -> bool {
    match filter.strip_suffix(".*") {
        _ if filter == "*" => true,
        Some(prefix) => is_valid_event_type(prefix),
        None => is_valid_event_type(filter),
    }
}

/// Whether an endpoint with these filters receives `event_type`. No filters: every event.
pub fn subscribes(filters: &[String], event_type: &str) -> bool {
    filters.is_empty()
        || filters.iter().any(|f| {
            f == "*"
                || f == event_type
                || f.strip_suffix('*')
                    .is_some_and(|prefix| prefix.ends_with('.') && event_type.starts_with(prefix))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    // The test vector published with the Standard Webhooks reference libraries:
    // standard-webhooks/standard-webhooks, libraries/javascript/src/webhook.test.ts,
    // test "sign function works" (the same values appear in the other languages' tests).
    const VECTOR_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const VECTOR_MSG_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const VECTOR_TIMESTAMP: i64 = 1_614_265_330;
    const VECTOR_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const VECTOR_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn vector_secret() -> WebhookSecret {
        WebhookSecret::parse_whsec(VECTOR_SECRET).expect("the published secret parses")
    }

    fn verify_at(
        secret: &WebhookSecret,
        ts: &str,
        header: &str,
        now: i64,
    ) -> Result<(), VerifyError> {
        verify(
            secret,
            VECTOR_MSG_ID,
            ts,
            header,
            VECTOR_BODY,
            now,
            DEFAULT_TOLERANCE,
        )
    }

    #[test]
    fn the_published_standard_webhooks_vector_signs_to_the_published_signature() {
        let secret = vector_secret();
        assert_eq!(
            sign(&secret, VECTOR_MSG_ID, VECTOR_TIMESTAMP, VECTOR_BODY),
            VECTOR_SIGNATURE
        );
        assert_eq!(
            signature_header(&[&secret], VECTOR_MSG_ID, VECTOR_TIMESTAMP, VECTOR_BODY),
            VECTOR_SIGNATURE
        );
    }

    #[test]
    fn the_published_vector_verifies_with_and_without_the_whsec_prefix() {
        let ts = VECTOR_TIMESTAMP.to_string();
        for secret in [VECTOR_SECRET, &VECTOR_SECRET["whsec_".len()..]] {
            let secret = WebhookSecret::parse_whsec(secret).expect("parse");
            assert_eq!(
                verify_at(&secret, &ts, VECTOR_SIGNATURE, VECTOR_TIMESTAMP),
                Ok(())
            );
        }
    }

    #[test]
    fn a_header_with_foreign_and_bogus_signatures_verifies_if_one_matches() {
        // Mirrors the reference libraries' "multi sig payload is valid" test.
        let header = format!(
            "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= \
             v2,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= \
             {VECTOR_SIGNATURE} v1a,hnO3f9T8Ytu9HwrXslvumlUpqtNVqkhqw/enGzPCXe5B"
        );
        let ts = VECTOR_TIMESTAMP.to_string();
        assert_eq!(
            verify_at(&vector_secret(), &ts, &header, VECTOR_TIMESTAMP),
            Ok(())
        );
    }

    #[test]
    fn generated_secrets_are_32_random_bytes_and_round_trip_through_whsec() {
        let a = WebhookSecret::generate();
        let b = WebhookSecret::generate();
        assert_eq!(a.expose_bytes().len(), GENERATED_SECRET_LEN);
        assert_ne!(a, b);
        let shown = a.to_whsec();
        assert!(shown.starts_with("whsec_"));
        assert_eq!(WebhookSecret::parse_whsec(&shown).expect("parse"), a);
        assert_eq!(
            WebhookSecret::parse_whsec(&format!(" {shown}\n")).expect("parse"),
            a
        );
        let unpadded = format!("whsec_{}", STANDARD_NO_PAD.encode(a.expose_bytes()));
        assert_eq!(WebhookSecret::parse_whsec(&unpadded).expect("parse"), a);
        assert_eq!(
            WebhookSecret::from_bytes(a.expose_bytes()).expect("bytes"),
            a
        );
    }

    #[test]
    fn secrets_that_are_too_short_too_long_or_not_base64_are_refused() {
        assert_eq!(
            WebhookSecret::parse_whsec(&format!("whsec_{}", STANDARD.encode([7u8; 23]))),
            Err(SecretError::WrongLength)
        );
        assert_eq!(
            WebhookSecret::parse_whsec(&STANDARD.encode([7u8; 65])),
            Err(SecretError::WrongLength)
        );
        assert!(WebhookSecret::parse_whsec(&STANDARD.encode([7u8; 24])).is_ok());
        for bad in [
            "",
            "whsec_",
            "whsec_!!!!",
            "whsec_MfKQ9r8G KYqrTwjU",
            "whsk_abc",
        ] {
            assert!(WebhookSecret::parse_whsec(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn secret_debug_output_is_redacted() {
        let secret = vector_secret();
        let debug = format!("{secret:?}");
        assert_eq!(debug, "WebhookSecret(<redacted>)");
        assert!(!debug.contains("MfKQ"));
    }

    #[test]
    fn both_secrets_sign_during_a_rotation_and_either_verifies_the_header() {
        let (new, old) = (WebhookSecret::generate(), WebhookSecret::generate());
        let id = message_id();
        let header = signature_header(&[&new, &old], &id, 1_700_000_000, b"{}");
        let parts: Vec<_> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| p.starts_with("v1,")));
        for secret in [&new, &old] {
            let result = verify(
                secret,
                &id,
                "1700000000",
                &header,
                b"{}",
                1_700_000_000,
                DEFAULT_TOLERANCE,
            );
            assert_eq!(result, Ok(()));
        }
        let stranger = WebhookSecret::generate();
        let result = verify(
            &stranger,
            &id,
            "1700000000",
            &header,
            b"{}",
            1_700_000_000,
            DEFAULT_TOLERANCE,
        );
        assert_eq!(result, Err(VerifyError::NoMatchingSignature));
    }

    #[test]
    fn the_previous_secret_signs_only_for_24_hours_after_a_rotation() {
        let (new, old) = (WebhookSecret::generate(), WebhookSecret::generate());
        let rotated = 1_700_000_000;
        let day = 24 * 60 * 60;
        assert_eq!(signing_secrets(&new, None, rotated), vec![&new]);
        assert_eq!(
            signing_secrets(&new, Some((&old, rotated)), rotated),
            vec![&new, &old]
        );
        assert_eq!(
            signing_secrets(&new, Some((&old, rotated)), rotated + day - 1),
            vec![&new, &old]
        );
        assert_eq!(
            signing_secrets(&new, Some((&old, rotated)), rotated + day),
            vec![&new]
        );
    }

    #[test]
    fn a_changed_body_id_or_timestamp_fails_verification() {
        let secret = vector_secret();
        let ts = VECTOR_TIMESTAMP.to_string();
        let now = VECTOR_TIMESTAMP;
        let tol = DEFAULT_TOLERANCE;
        let other_ts = (VECTOR_TIMESTAMP + 1).to_string();
        let results = [
            verify(
                &secret,
                VECTOR_MSG_ID,
                &ts,
                VECTOR_SIGNATURE,
                b"{\"test\": 1}",
                now,
                tol,
            ),
            verify(
                &secret,
                "msg_other",
                &ts,
                VECTOR_SIGNATURE,
                VECTOR_BODY,
                now,
                tol,
            ),
            verify(
                &secret,
                VECTOR_MSG_ID,
                &other_ts,
                VECTOR_SIGNATURE,
                VECTOR_BODY,
                now,
                tol,
            ),
        ];
        for result in results {
            assert_eq!(result, Err(VerifyError::NoMatchingSignature));
        }
    }

    #[test]
    fn timestamps_outside_the_tolerance_are_refused_both_ways() {
        let secret = vector_secret();
        let ts = VECTOR_TIMESTAMP.to_string();
        let five_min = 5 * 60;
        assert_eq!(
            verify_at(&secret, &ts, VECTOR_SIGNATURE, VECTOR_TIMESTAMP + five_min),
            Ok(())
        );
        assert_eq!(
            verify_at(&secret, &ts, VECTOR_SIGNATURE, VECTOR_TIMESTAMP - five_min),
            Ok(())
        );
        assert_eq!(
            verify_at(
                &secret,
                &ts,
                VECTOR_SIGNATURE,
                VECTOR_TIMESTAMP + five_min + 1
            ),
            Err(VerifyError::TimestampTooOld)
        );
        assert_eq!(
            verify_at(
                &secret,
                &ts,
                VECTOR_SIGNATURE,
                VECTOR_TIMESTAMP - five_min - 1
            ),
            Err(VerifyError::TimestampTooNew)
        );
    }

    #[test]
    fn malformed_timestamps_and_signature_headers_are_errors_not_panics() {
        let secret = vector_secret();
        let now = VECTOR_TIMESTAMP;
        for ts in [
            "",
            "hello",
            "-1614265330",
            "+1614265330",
            " 1614265330",
            "99999999999999999999",
        ] {
            assert_eq!(
                verify_at(&secret, ts, VECTOR_SIGNATURE, now),
                Err(VerifyError::InvalidTimestamp),
                "{ts:?}"
            );
        }
        let ts = VECTOR_TIMESTAMP.to_string();
        let partial = &VECTOR_SIGNATURE[..8];
        let truncated = &VECTOR_SIGNATURE[..VECTOR_SIGNATURE.len() - 4];
        let wrong_version = VECTOR_SIGNATURE.replacen("v1,", "v2,", 1);
        let no_comma = VECTOR_SIGNATURE.replacen(',', "", 1);
        for header in [
            "",
            " ",
            "v1,",
            "v1,dawfeoifkpqwoekfpqoekf",
            partial,
            truncated,
            &wrong_version,
            &no_comma,
            ",,,",
        ] {
            assert_eq!(
                verify_at(&secret, &ts, header, now),
                Err(VerifyError::NoMatchingSignature),
                "{header:?}"
            );
        }
    }

    #[test]
    fn message_ids_are_unique_sortable_and_free_of_dots() {
        let a = message_id();
        let b = message_id();
        assert_ne!(a, b);
        assert!(a.starts_with("msg_") && a.len() == 4 + 32);
        assert!(!a.contains('.'));
        assert!(a < b);
    }

    #[test]
    fn the_retry_schedule_is_5s_5min_30min_2h_5h_10h_10h_then_gives_up() {
        let expected = [5, 300, 1_800, 7_200, 18_000, 36_000, 36_000];
        for (i, secs) in expected.into_iter().enumerate() {
            let attempt = i as u32 + 1;
            assert_eq!(
                next_attempt_delay(attempt, None, 0.5),
                Some(Duration::from_secs(secs)),
                "after attempt {attempt}"
            );
        }
        assert_eq!(MAX_ATTEMPTS, 8);
        assert_eq!(next_attempt_delay(8, None, 0.5), None);
        assert_eq!(
            next_attempt_delay(u32::MAX, Some(Duration::from_secs(1)), 0.5),
            None
        );
        assert_eq!(
            next_attempt_delay(0, None, 0.5),
            Some(Duration::from_secs(5))
        );
    }

    #[test]
    fn jitter_moves_a_delay_by_at_most_ten_percent_either_way() {
        let at = |unit| next_attempt_delay(3, None, unit).expect("scheduled");
        assert_eq!(at(0.0), Duration::from_secs(1_620));
        assert_eq!(at(1.0), Duration::from_secs(1_980));
        assert_eq!(at(-3.0), at(0.0));
        assert_eq!(at(7.0), at(1.0));
        assert_eq!(at(f64::NAN), Duration::from_secs(1_800));
        assert_eq!(at(f64::INFINITY), at(1.0));
        for i in 0..=100 {
            let d = at(f64::from(i) / 100.0);
            assert!(d >= Duration::from_secs(1_620) && d <= Duration::from_secs(1_980));
        }
    }

    #[test]
    fn a_longer_retry_after_wins_up_to_24_hours_and_a_shorter_one_is_ignored() {
        let hour = Duration::from_secs(3_600);
        assert_eq!(next_attempt_delay(1, Some(hour), 0.5), Some(hour));
        assert_eq!(
            next_attempt_delay(4, Some(Duration::from_secs(1)), 0.5),
            Some(2 * hour)
        );
        assert_eq!(
            next_attempt_delay(1, Some(100 * hour), 0.5),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(
            next_attempt_delay(7, Some(Duration::MAX), 0.0),
            Some(24 * hour)
        );
    }

    #[test]
    fn retry_after_is_read_as_seconds_or_as_an_http_date() {
        let now = 784_111_777; // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(Duration::from_secs(u64::MAX))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:51:37 GMT", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after("Sat, 05 Nov 1994 08:49:37 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after("Thu, 29 Feb 2024 00:00:00 GMT", 1_709_164_800 - 10),
            Some(Duration::from_secs(10))
        );
        for bad in [
            "",
            "-5",
            "1.5",
            "soon",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 32 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
        ] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
    }

    fn forbidden(s: &str) -> bool {
        is_forbidden_destination(s.parse().expect("an IP address"))
    }

    #[test]
    fn private_loopback_link_local_and_special_ipv4_ranges_are_forbidden() {
        for ip in
            "0.0.0.0 0.1.2.3 10.0.0.1 10.255.255.255 100.64.0.1 100.127.255.254 100.100.100.200 \
             127.0.0.1 127.255.255.254 169.254.0.1 169.254.169.254 172.16.0.1 172.31.255.255 \
             192.0.0.8 192.0.2.1 192.88.99.1 192.168.1.1 198.18.0.1 198.19.255.255 198.51.100.7 \
             203.0.113.9 224.0.0.1 239.255.255.250 240.0.0.1 255.255.255.255 168.63.129.16"
                .split_whitespace()
        {
            assert!(forbidden(ip), "{ip} should be forbidden");
        }
    }

    #[test]
    fn public_ipv4_addresses_next_to_the_forbidden_ranges_are_allowed() {
        for ip in
            "1.1.1.1 8.8.8.8 9.255.255.255 11.0.0.0 100.63.255.255 100.128.0.0 126.255.255.255 \
             128.0.0.1 169.253.255.255 169.255.0.0 172.15.255.255 172.32.0.0 192.0.1.1 192.0.3.1 \
             192.167.255.255 192.169.0.0 198.17.255.255 198.20.0.0 203.0.112.1 223.255.255.255 \
             168.63.129.17"
                .split_whitespace()
        {
            assert!(!forbidden(ip), "{ip} should be allowed");
        }
    }

    #[test]
    fn non_global_ipv6_ranges_are_forbidden() {
        for ip in ":: ::1 ::127.0.0.1 ::8.8.8.8 100::1 64:ff9b:1::1 fc00::1 fd00:ec2::254 fdff::1 \
             fe80::1 febf::1 fec0::1 ff02::1 ff0e::1 2001::1 2001:0:4136:e378:8000:63bf:3fff:fdd2 \
             2001:1ff::1 2001:db8::1 3fff::1 3fff:fff::1 ::ffff:0:7f00:1"
            .split_whitespace()
        {
            assert!(forbidden(ip), "{ip} should be forbidden");
        }
    }

    #[test]
    fn global_ipv6_addresses_are_allowed() {
        for ip in "2606:4700:4700::1111 2001:4860:4860::8888 2001:200::1 2a00:1450::1 3fff:1000::1"
            .split_whitespace()
        {
            assert!(!forbidden(ip), "{ip} should be allowed");
        }
    }

    #[test]
    fn ipv4_mapped_nat64_and_6to4_addresses_are_judged_by_their_embedded_ipv4() {
        for ip in "::ffff:127.0.0.1 ::ffff:10.1.2.3 ::ffff:169.254.169.254 ::ffff:7f00:1 \
             64:ff9b::127.0.0.1 64:ff9b::a9fe:a9fe 2002:7f00:1:: 2002:c0a8:101::1"
            .split_whitespace()
        {
            assert!(forbidden(ip), "{ip} should be forbidden");
        }
        for ip in "::ffff:8.8.8.8 64:ff9b::1.1.1.1 2002:808:808::1".split_whitespace() {
            assert!(!forbidden(ip), "{ip} should be allowed");
        }
    }

    fn destination(scheme: Scheme, host: Host, port: u16, path: &str) -> ParsedDestination {
        ParsedDestination {
            scheme,
            host,
            port,
            path: path.to_owned(),
        }
    }

    fn domain(name: &str) -> Host {
        Host::Domain(name.to_owned())
    }

    #[test]
    fn ordinary_urls_are_taken_apart_with_default_ports() {
        let cases = [
            (
                "https://example.com",
                destination(Scheme::Https, domain("example.com"), 443, "/"),
            ),
            (
                "http://example.com/",
                destination(Scheme::Http, domain("example.com"), 80, "/"),
            ),
            (
                "https://Hooks.Example.COM:8443/a/b?x=1&y=%2F",
                destination(
                    Scheme::Https,
                    domain("hooks.example.com"),
                    8443,
                    "/a/b?x=1&y=%2F",
                ),
            ),
            (
                "HTTPS://example.com?q=1",
                destination(Scheme::Https, domain("example.com"), 443, "/?q=1"),
            ),
            (
                "hTtP://example.com./x",
                destination(Scheme::Http, domain("example.com."), 80, "/x"),
            ),
            (
                "https://a.example/p@q",
                destination(Scheme::Https, domain("a.example"), 443, "/p@q"),
            ),
            (
                "http://1.2.3.4:8080/h",
                destination(
                    Scheme::Http,
                    Host::Ip("1.2.3.4".parse().expect("ip")),
                    8080,
                    "/h",
                ),
            ),
            (
                "https://[2001:db8::1]/h",
                destination(
                    Scheme::Https,
                    Host::Ip("2001:db8::1".parse().expect("ip")),
                    443,
                    "/h",
                ),
            ),
            (
                "http://[::ffff:127.0.0.1]:81",
                destination(
                    Scheme::Http,
                    Host::Ip("::ffff:127.0.0.1".parse().expect("ip")),
                    81,
                    "/",
                ),
            ),
            (
                "https://my_host.internal",
                destination(Scheme::Https, domain("my_host.internal"), 443, "/"),
            ),
        ];
        for (url, expected) in cases {
            assert_eq!(check_url(url), Ok(expected), "{url}");
        }
    }

    #[test]
    fn the_authority_brackets_ipv6_and_omits_default_ports() {
        let parse = |url| check_url(url).expect("valid").authority();
        assert_eq!(parse("https://example.com:443/"), "example.com");
        assert_eq!(parse("http://example.com:443/"), "example.com:443");
        assert_eq!(parse("https://[::1]:8443"), "[::1]:8443");
        assert_eq!(parse("http://[::1]"), "[::1]");
    }

    #[test]
    fn tricky_urls_are_refused_with_the_right_error() {
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        let cases: &[(&str, UrlError)] = &[
            (&long, UrlError::TooLong),
            ("https://user:pass@example.com/", UrlError::UserInfo),
            ("https://good.com@evil.com/", UrlError::UserInfo),
            ("https://user@[::1]/", UrlError::UserInfo),
            ("https://evil.com\\@good.com/", UrlError::InvalidCharacter),
            ("https://exa mple.com/", UrlError::InvalidCharacter),
            (" https://example.com/", UrlError::InvalidCharacter),
            ("https://example.com/a b", UrlError::InvalidCharacter),
            ("https://example.com/\t", UrlError::InvalidCharacter),
            ("https://exämple.com/", UrlError::InvalidCharacter),
            ("https://example.com/ü", UrlError::InvalidCharacter),
            ("https://example.com/%zz", UrlError::InvalidCharacter),
            ("https://example.com/%4", UrlError::InvalidCharacter),
            ("https://%31%32%37.0.0.1/", UrlError::InvalidHost),
            ("ftp://example.com/", UrlError::UnsupportedScheme),
            ("file:///etc/passwd", UrlError::UnsupportedScheme),
            ("gopher://127.0.0.1:6379/", UrlError::UnsupportedScheme),
            ("https:/example.com", UrlError::UnsupportedScheme),
            ("example.com", UrlError::UnsupportedScheme),
            ("//example.com", UrlError::UnsupportedScheme),
            ("", UrlError::UnsupportedScheme),
            ("https://", UrlError::MissingHost),
            ("https:///path", UrlError::MissingHost),
            ("https://:443/", UrlError::MissingHost),
            ("https://?q", UrlError::MissingHost),
            ("https://example.com:/", UrlError::InvalidPort),
            ("https://example.com:0/", UrlError::InvalidPort),
            ("https://example.com:65536/", UrlError::InvalidPort),
            ("https://example.com:000443/", UrlError::InvalidPort),
            ("https://example.com:+80/", UrlError::InvalidPort),
            ("https://example.com:http/", UrlError::InvalidPort),
            ("https://example.com:80:80/", UrlError::InvalidHost),
            ("https://::1/", UrlError::InvalidHost),
            ("https://fe80::1/", UrlError::InvalidHost),
            ("https://[fe80::1%25eth0]/", UrlError::InvalidHost),
            ("https://[::1/", UrlError::InvalidHost),
            ("https://[::1]x/", UrlError::InvalidHost),
            ("https://[]/", UrlError::InvalidHost),
            ("https://[127.0.0.1]/", UrlError::InvalidHost),
            ("https://2130706433/", UrlError::InvalidHost),
            ("https://127.1/", UrlError::InvalidHost),
            ("https://0x7f.0.0.1/", UrlError::InvalidHost),
            ("https://0177.0.0.1/", UrlError::InvalidHost),
            ("https://example.0x1f/", UrlError::InvalidHost),
            ("https://1.2.3.4.5/", UrlError::InvalidHost),
            ("https://a..b/", UrlError::InvalidHost),
            ("https://-a.example/", UrlError::InvalidHost),
            ("https://a!.example/", UrlError::InvalidHost),
            ("https://.", UrlError::InvalidHost),
            ("https://example.com/#frag", UrlError::Fragment),
            ("https://good.com#@evil.com", UrlError::Fragment),
        ];
        for (url, expected) in cases {
            assert_eq!(check_url(url).as_ref(), Err(expected), "{url:?}");
        }
        let label = "a".repeat(64);
        assert_eq!(
            check_url(&format!("https://{label}.com/")),
            Err(UrlError::InvalidHost)
        );
        let name = ["a"; 128].join(".");
        assert_eq!(
            check_url(&format!("https://{name}/")),
            Err(UrlError::InvalidHost)
        );
    }

    #[test]
    fn a_url_of_exactly_the_maximum_length_is_accepted() {
        let prefix = "https://example.com/";
        let url = format!("{prefix}{}", "a".repeat(MAX_URL_LEN - prefix.len()));
        assert_eq!(url.len(), MAX_URL_LEN);
        assert!(check_url(&url).is_ok());
    }

    #[test]
    fn event_types_are_dotted_names() {
        for ok in ["post.created", "key.revoked", "a", "campaign_2.started-now"] {
            assert!(is_valid_event_type(ok), "{ok}");
        }
        for bad in [
            "",
            ".a",
            "a.",
            "a..b",
            "a b",
            "a/b",
            "é.x",
            &"x".repeat(129),
        ] {
            assert!(!is_valid_event_type(bad), "{bad}");
        }
        assert!(is_valid_event_filter("*"));
        assert!(is_valid_event_filter("key.*"));
        assert!(!is_valid_event_filter("key*"));
        assert!(!is_valid_event_filter(".*"));
    }

    #[test]
    fn filters_match_exact_types_prefixes_and_everything() {
        let filters = |f: &[&str]| f.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(subscribes(&[], "post.created"));
        assert!(subscribes(&filters(&["*"]), "post.created"));
        assert!(subscribes(&filters(&["post.created"]), "post.created"));
        assert!(!subscribes(&filters(&["post.created"]), "post.published"));
        assert!(subscribes(&filters(&["key.*"]), "key.revoked"));
        assert!(!subscribes(&filters(&["key.*"]), "keys.revoked"));
        assert!(!subscribes(&filters(&["key.*"]), "key"));
    }
}
