//! Usage counting off the hot path: each authenticated request adds one to an in-memory counter
//! per key and day; a background task writes the counters and `last_used_at` in one batch every
//! few seconds, and once more at shutdown. The request itself never writes to the database.

use std::collections::HashMap;
use std::sync::Mutex;

use keygate_core::{AccountId, KeyHash, KeyId};
use keygate_store::{Store, UsageIncrement};
use time::OffsetDateTime;

#[derive(Default)]
pub struct UsageRecorder {
    /// Keyed by the key's hash (a `Copy` array), so counting a request allocates only the first
    /// time a key is seen in a batch. The lock is held for a map update, never across `.await`.
    pending: Mutex<HashMap<(KeyHash, i32), Pending>>,
}

struct Pending {
    key_id: KeyId,
    account_id: Option<AccountId>,
    requests: u64,
    last_used_at: OffsetDateTime,
}

pub fn day_of(t: OffsetDateTime) -> i32 {
    (t.unix_timestamp().div_euclid(86_400)) as i32
}

impl UsageRecorder {
    /// Hot path: one short critical section.
    pub fn record(
        &self,
        hash: KeyHash,
        key_id: &KeyId,
        account_id: Option<&AccountId>,
        now: OffsetDateTime,
    ) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending
            .entry((hash, day_of(now)))
            .and_modify(|p| {
                p.requests += 1;
                p.last_used_at = now;
            })
            .or_insert_with(|| Pending {
                key_id: key_id.clone(),
                account_id: account_id.cloned(),
                requests: 1,
                last_used_at: now,
            });
    }

    /// Writes what has accumulated. On failure the counts are put back, so a database outage
    /// delays usage figures but does not lose them.
    pub async fn flush(&self, store: &dyn Store) -> anyhow::Result<usize> {
        let drained: Vec<((KeyHash, i32), Pending)> = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            pending.drain().collect()
        };
        if drained.is_empty() {
            return Ok(0);
        }
        let batch: Vec<UsageIncrement> = drained
            .iter()
            .map(|((_, day), p)| UsageIncrement {
                key_id: p.key_id.clone(),
                account_id: p.account_id.clone(),
                day: *day,
                requests: p.requests,
                last_used_at: p.last_used_at,
            })
            .collect();
        if let Err(err) = store.record_usage(&batch).await {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            for (slot, p) in drained {
                pending
                    .entry(slot)
                    .and_modify(|q| {
                        q.requests += p.requests;
                        q.last_used_at = q.last_used_at.max(p.last_used_at);
                    })
                    .or_insert(p);
            }
            return Err(err.into());
        }
        Ok(batch.len())
    }
}
