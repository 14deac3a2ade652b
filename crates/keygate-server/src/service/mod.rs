//! The business rules of accounts, users and keys, shared by every surface: the native API,
//! the Crossbar `/v2` adapter, the admin commands and the dashboard. Handlers parse and
//! authorize; these functions validate, build records, store them and keep the cache true.

pub mod accounts;
pub mod audit;
pub mod credits;
pub mod keys;
pub mod passwords;
pub mod users;

use time::OffsetDateTime;

/// Timestamps are kept at millisecond precision, as the stores keep them, so a record reads
/// back equal to what was written.
pub fn now() -> OffsetDateTime {
    let t = OffsetDateTime::now_utc();
    t.replace_nanosecond(t.nanosecond() / 1_000_000 * 1_000_000)
        .unwrap_or(t)
}

pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
