//! The revocation feed: how a change made on one node reaches the caches of every other node
//! (and of a gateway sharing the database) without Redis. A change is written to the
//! `revocations` table and applied locally at once; every node polls the table twice a second
//! and applies what it has not seen. Applying is idempotent (dropping a cache entry, denying a
//! token id), so the poll re-reads a small window of recent ids: on PostgreSQL, ids taken by
//! concurrent transactions can become visible out of order.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use keygate_core::{KeyHash, KeyId, UserId};
use keygate_store::{Revocation, RevocationKind, StoreResult};
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::state::AppState;

pub const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// The Redis channel that says "the feed has news": other nodes read it at once.
pub const CHANNEL: &str = "keygate:revocations";
/// How many ids below the highest seen are read again, for late-visible rows.
const OVERLAP: i64 = 256;
/// Signing keys are re-read this often, so keys retired long enough ago leave the JWKS.
const RELOAD_EVERY: Duration = Duration::from_secs(300);
/// Old entries are deleted this often.
const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// Entries without an expiry are useful only to nodes that are running; a day is ample.
const KEEP_UNEXPIRING: time::Duration = time::Duration::days(1);

#[derive(Default)]
pub struct FeedCursor {
    inner: Mutex<CursorState>,
}

#[derive(Default)]
struct CursorState {
    highest: i64,
    /// Ids applied within the overlap window, so re-read rows are not applied twice.
    applied: BTreeSet<i64>,
}

impl FeedCursor {
    fn start_at(&self, id: i64) {
        let mut s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        s.highest = id;
    }

    fn read_from(&self) -> i64 {
        let s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        (s.highest - OVERLAP).max(0)
    }

    /// Whether `id` is new; records it.
    fn first_sight(&self, id: i64) -> bool {
        let mut s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if id <= s.highest - OVERLAP || !s.applied.insert(id) {
            return false;
        }
        s.highest = s.highest.max(id);
        let floor = s.highest - OVERLAP;
        s.applied = s.applied.split_off(&floor);
        true
    }
}

pub fn key_subject(hash: &KeyHash, id: &KeyId) -> String {
    format!("{id}:{}", hash.to_hex())
}

/// Writes a change to the feed and applies it here at once.
pub async fn publish(
    state: &AppState,
    kind: RevocationKind,
    subject: String,
    expires_at: Option<OffsetDateTime>,
) -> StoreResult<()> {
    let entry = Revocation {
        id: 0,
        kind,
        subject,
        expires_at,
        created_at: crate::service::now(),
    };
    apply(state, &entry).await;
    state.store.publish_revocation(&entry).await?;
    // Wakes the other nodes now; without it they read the entry at their next poll.
    if let Some(bus) = &state.bus {
        bus.publish(CHANNEL, kind.as_str()).await;
    }
    Ok(())
}

/// What an entry means for this node's caches.
pub async fn apply(state: &AppState, r: &Revocation) {
    match r.kind {
        RevocationKind::Token => state.tokens.deny(&r.subject),
        RevocationKind::Key => {
            if let Some((id, hash)) = r.subject.split_once(':') {
                if let (Some(id), Some(hash)) = (KeyId::parse(id), KeyHash::from_hex(hash)) {
                    state.caches.invalidate_key(&hash, &id);
                }
            }
        }
        RevocationKind::User => {
            if let Some(id) = UserId::parse(&r.subject) {
                state.caches.invalidate_user(&id);
            }
        }
        RevocationKind::Account => state.caches.invalidate_all(),
        RevocationKind::SigningKeys => {
            if let Err(err) = state.tokens.reload(state.store.as_ref()).await {
                tracing::error!(error = %format!("{err:#}"), "reloading signing keys failed");
            }
        }
    }
}

/// Called at start: follow the feed from its current end, and deny the logged-out tokens
/// that are still unexpired.
pub async fn prime(state: &AppState) -> StoreResult<()> {
    state
        .feed
        .start_at(state.store.latest_revocation_id().await?);
    for r in state
        .store
        .active_token_revocations(OffsetDateTime::now_utc())
        .await?
    {
        state.tokens.deny(&r.subject);
    }
    Ok(())
}

/// Polls the feed until `stopped`; prunes old entries now and then.
pub async fn follow(state: AppState, mut stopped: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_reload = std::time::Instant::now();
    let mut last_prune = std::time::Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            // Another node published: read now rather than at the next tick.
            _ = state.feed_wakeup.notified() => tracing::debug!("revocation feed woken by the bus"),
            _ = stopped.wait_for(|s| *s) => return,
        }
        match state
            .store
            .revocations_after(state.feed.read_from(), 1000)
            .await
        {
            Ok(entries) => {
                for e in entries {
                    if state.feed.first_sight(e.id) {
                        apply(&state, &e).await;
                    }
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "reading the revocation feed failed; will retry")
            }
        }
        // Every five minutes: keys retired long enough ago leave the JWKS.
        if last_reload.elapsed() >= RELOAD_EVERY {
            last_reload = std::time::Instant::now();
            if let Err(err) = state.tokens.reload(state.store.as_ref()).await {
                tracing::warn!(error = %format!("{err:#}"), "reloading signing keys failed");
            }
        }
        if last_prune.elapsed() >= PRUNE_EVERY {
            last_prune = std::time::Instant::now();
            let now = OffsetDateTime::now_utc();
            if let Err(err) = state
                .store
                .prune_revocations(now, now - KEEP_UNEXPIRING)
                .await
            {
                tracing::warn!(error = %err, "pruning the revocation feed failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_seen_once_are_applied_once_even_when_read_again() {
        let c = FeedCursor::default();
        c.start_at(10);
        assert!(c.first_sight(11));
        assert!(!c.first_sight(11));
        assert!(c.first_sight(13));
        // 12 became visible late: still applied.
        assert!(c.first_sight(12));
        assert!(!c.first_sight(12));
        assert_eq!(c.read_from(), 0);
    }

    #[test]
    fn ids_below_the_window_are_ignored() {
        let c = FeedCursor::default();
        c.start_at(1000);
        assert!(!c.first_sight(1000 - OVERLAP));
        assert!(c.first_sight(1001));
        assert_eq!(c.read_from(), 1001 - OVERLAP);
    }
}
