//! Usage counting off the hot path: each authenticated request adds one to an in-memory counter
//! per key and day; a background task writes the counters and `last_used_at` in one batch every
//! few seconds, and once more at shutdown. The request itself never writes to the database.

use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::Duration;

use hashbrown::HashMap;
use keygate_core::KeyHash;
use keygate_store::{KeyWithAccount, Store, UsageIncrement};
use time::OffsetDateTime;

/// Rows per usage transaction in a paced flush.
pub const FLUSH_CHUNK: usize = 200;

/// Shards of the pending counts. Every request takes one shard's lock, so with one map the
/// serving threads met on a single lock: when the thread holding it lost its core (to the
/// load, or to a page fault), the others waited for a whole time slice (4-6 ms waits seen with
/// `perf trace`, several a second), and a map of half a million keys that had to grow was
/// rehashed under that lock (a 106 ms wait). Sharded, a thread waits only for the same
/// shard, and a shard grows at a sixteenth of the size.
///
/// One key can still be counted by every request: the operator key of a service that calls
/// `POST /api/v1/keys/verify` for each of its own requests. So a request whose shard is held
/// counts in another one (see [`UsageRecorder::record`]) rather than wait, and a flush adds up
/// the entries a key has in several shards.
const SHARDS: usize = 16;

type Counts = HashMap<(KeyHash, i32), Pending>;

pub struct UsageRecorder {
    /// Keyed by the key's hash (a `Copy` array), so counting a request allocates only the first
    /// time a key is seen in a batch; hashed with foldhash (hashbrown's default), not SipHash:
    /// the keys are digests nobody can choose to collide. The shard is the hash's first byte
    /// (uniform: it is a digest). A lock is held for a map update, never across `.await`.
    shards: Box<[Mutex<Counts>]>,
    /// What the last flush emptied, kept with its memory for the next one (see [`Spare`]).
    spare: Mutex<Spare>,
}

/// The maps a flush swapped out, emptied, and the vector it sorted them into, empty: the next
/// flush swaps these maps in and sorts into this vector. Made anew each time, with a million
/// keys they were hundreds of MB that the allocator returned to the system after each flush
/// and that came back as fresh pages, each faulted in and zeroed by the kernel: a tenth of
/// the flush's CPU went to marking a new map's slots empty. Kept, they cost no more memory
/// than a flush already needs at its peak; one far larger than needed is let go (see
/// [`oversized`]).
#[derive(Default)]
struct Spare {
    maps: Vec<Counts>,
    sorted: Sorted,
}

/// Whether kept memory for `capacity` entries is far more than `needed` calls for: usage fell,
/// and the memory is better returned.
fn oversized(capacity: usize, needed: usize) -> bool {
    capacity > needed.saturating_mul(4).max(1024)
}

impl Default for UsageRecorder {
    fn default() -> Self {
        UsageRecorder {
            shards: (0..SHARDS).map(|_| Mutex::new(Counts::new())).collect(),
            spare: Mutex::new(Spare::default()),
        }
    }
}

struct Pending {
    /// The key counted, as the key cache holds it: shared, not copied. Copying its id and its
    /// account's id made two allocations for nearly every request over a million keys, where
    /// most requests are a key's first in the period; the record is kept (even once the cache
    /// has let it go) until the flush has written its count, at most a period.
    key: Arc<KeyWithAccount>,
    requests: u64,
    last_used_at: OffsetDateTime,
}

pub fn day_of(t: OffsetDateTime) -> i32 {
    (t.unix_timestamp().div_euclid(86_400)) as i32
}

impl UsageRecorder {
    /// Hot path: one short critical section, never a wait for a shard another thread holds:
    /// when the key's own shard is held, the count goes to a second shard (taken with a
    /// wait only if that one is held too). Two serving threads counting one hot key then
    /// each take one of its two shards instead of queueing on one, and a thread that loses its
    /// core while it holds a shard does not stall the other with every connection it serves.
    pub fn record(&self, hash: KeyHash, key: &Arc<KeyWithAccount>, now: OffsetDateTime) {
        let home = shard_index(&hash);
        let mut pending = match self.shards[home].try_lock() {
            Ok(pending) => pending,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => lock(&self.shards[(home + SHARDS / 2) % SHARDS]),
        };
        pending
            .entry((hash, day_of(now)))
            .and_modify(|p| {
                p.requests += 1;
                p.last_used_at = now;
            })
            .or_insert_with(|| Pending {
                key: key.clone(),
                requests: 1,
                last_used_at: now,
            });
    }

    /// Writes what has accumulated, all at once (tests, and the last flush at shutdown).
    pub async fn flush(&self, store: &dyn Store) -> anyhow::Result<usize> {
        self.flush_paced(store, Duration::ZERO).await
    }

    /// Writes what has accumulated in transactions of at most [`FLUSH_CHUNK`] rows, pausing
    /// `pause` between them. A busy deployment sees most of its keys between two flushes, and
    /// one transaction for them all would hold a core for its whole length, which requests
    /// waiting for that core would feel; chunks with pauses spread the same work out. On
    /// failure, what was not written is put back, so a database outage delays usage figures
    /// but does not lose them (the chunks already committed stay counted, once).
    pub async fn flush_paced(&self, store: &dyn Store, pause: Duration) -> anyhow::Result<usize> {
        // Each shard swapped out, not drained, under its lock: requests wait for a pointer
        // swap, not for the copying of every entry. The map swapped in holds the old one's
        // size and a quarter, so the next period's requests seldom have to grow it (rehashing
        // under the lock); it is the last flush's emptied map when that one is large enough,
        // and otherwise made before the lock is taken: making a large map (its control bytes
        // set) would otherwise be waited for by every request on that shard, and longer when
        // this thread, at a lower priority, loses its core meanwhile.
        let Spare {
            maps: mut spare_maps,
            sorted,
        } = std::mem::take(&mut *self.spare.lock().unwrap_or_else(|p| p.into_inner()));
        let mut drained = Vec::with_capacity(SHARDS);
        for shard in self.shards.iter() {
            let len = lock(shard).len();
            if len == 0 {
                continue;
            }
            let needed = len + len / 4;
            let fresh = match spare_maps.pop() {
                Some(kept) if kept.capacity() >= needed && !oversized(kept.capacity(), needed) => {
                    kept
                }
                _ => Counts::with_capacity(needed),
            };
            drained.push(std::mem::replace(&mut *lock(shard), fresh));
        }
        // The period's size, which decides what is worth keeping for the next one.
        let largest = drained.iter().map(Counts::len).max().unwrap_or(0);
        let total: usize = drained.iter().map(Counts::len).sum();
        if drained.is_empty() {
            self.keep(spare_maps, sorted, largest, total);
            return Ok(0);
        }
        // In key order, so that each transaction covers a run of neighbouring keys: their rows
        // share pages (the stores' usage tables are keyed by key id, and key ids grow with
        // time), and a transaction writes each page it touched once. Chunks of keys in hash
        // order would each touch a page per row, a thousand pages where a dozen do.
        let started = std::time::Instant::now();
        let (mut sorted, emptied) = sort_in_background(drained, sorted).await?;
        spare_maps.extend(emptied);
        let sorted_in = started.elapsed();
        let written = self.write_sorted(store, pause, &mut sorted).await;
        self.keep(spare_maps, sorted, largest, total);
        tracing::debug!(
            rows = written.as_ref().ok().copied().unwrap_or(0),
            sort_ms = sorted_in.as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            pause_ms = pause.as_millis() as u64,
            "usage flush"
        );
        written
    }

    /// Writes `sorted` in chunks (see [`Self::flush_paced`]), leaving it empty with its memory.
    async fn write_sorted(
        &self,
        store: &dyn Store,
        pause: Duration,
        sorted: &mut Sorted,
    ) -> anyhow::Result<usize> {
        let mut written = 0;
        while written < sorted.len() {
            let chunk = &sorted[written..sorted.len().min(written + FLUSH_CHUNK)];
            let batch: Vec<UsageIncrement> = chunk
                .iter()
                .map(|((_, day), p)| UsageIncrement {
                    key_id: p.key.key.id.clone(),
                    account_id: p.key.key.account_id.clone(),
                    day: *day,
                    requests: p.requests,
                    last_used_at: p.last_used_at,
                })
                .collect();
            if let Err(err) = store.record_usage(&batch).await {
                self.put_back(sorted.drain(written..));
                sorted.clear();
                return Err(err.into());
            }
            written += batch.len();
            if !pause.is_zero() && written < sorted.len() {
                tokio::time::sleep(pause).await;
            }
        }
        sorted.clear();
        Ok(written)
    }

    /// Keeps what a flush emptied for the next one, except what is far larger than this
    /// period needed (`largest` entries in a shard, `total` in all): usage fell, and that
    /// memory is better returned.
    fn keep(&self, mut maps: Vec<Counts>, mut sorted: Sorted, largest: usize, total: usize) {
        maps.retain(|m| !oversized(m.capacity(), largest + largest / 4));
        if oversized(sorted.capacity(), total) {
            sorted = Sorted::new();
        }
        *self.spare.lock().unwrap_or_else(|p| p.into_inner()) = Spare { maps, sorted };
    }

    fn put_back(&self, unwritten: impl Iterator<Item = ((KeyHash, i32), Pending)>) {
        for (slot, p) in unwritten {
            self.shard(&slot.0)
                .entry(slot)
                .and_modify(|q| {
                    q.requests += p.requests;
                    q.last_used_at = q.last_used_at.max(p.last_used_at);
                })
                .or_insert(p);
        }
    }
}

impl UsageRecorder {
    fn shard(&self, hash: &KeyHash) -> MutexGuard<'_, Counts> {
        lock(&self.shards[shard_index(hash)])
    }
}

/// A key's own shard: its hash's first byte (uniform: it is a digest).
fn shard_index(hash: &KeyHash) -> usize {
    usize::from(hash.0[0]) % SHARDS
}

fn lock(shard: &Mutex<Counts>) -> MutexGuard<'_, Counts> {
    shard.lock().unwrap_or_else(|p| p.into_inner())
}

/// What a flush writes, in key order.
type Sorted = Vec<((KeyHash, i32), Pending)>;

/// Moves the drained maps' entries into `sorted` (empty) and sorts them; the maps come back
/// empty, their memory kept.
fn sort(mut drained: Vec<Counts>, mut sorted: Sorted) -> (Sorted, Vec<Counts>) {
    // Sized once: collected from the shards in turn, the vector (a hundred MB with a million
    // keys) would grow by doubling, copying itself each time.
    sorted.clear();
    sorted.reserve(drained.iter().map(Counts::len).sum());
    for shard in &mut drained {
        sorted.extend(shard.drain());
    }
    sorted.sort_unstable_by(|(a_slot, a), (b_slot, b)| {
        (a.key.key.id.as_str(), a_slot.1).cmp(&(b.key.key.id.as_str(), b_slot.1))
    });
    // A key counted in two shards (see `UsageRecorder::record`) is one row: the stores write
    // a batch as one statement, which may not touch a row twice (PostgreSQL refuses).
    sorted.dedup_by(|(slot, later), (kept_slot, kept)| {
        if slot != kept_slot {
            return false;
        }
        kept.requests += later.requests;
        kept.last_used_at = kept.last_used_at.max(later.last_used_at);
        true
    });
    (sorted, drained)
}

/// Sorts on a thread of its own at a lower CPU priority (nice 10, as the SQLite usage writer):
/// with hundreds of thousands of keys the sort takes a good part of a second of CPU, which on a
/// loaded machine would otherwise be taken from the serving threads at their own priority (it
/// showed in the verify p99 with 1,000,000 keys). If the thread cannot be started, the sort
/// runs here: what was counted is never dropped.
async fn sort_in_background(
    drained: Vec<Counts>,
    into: Sorted,
) -> anyhow::Result<(Sorted, Vec<Counts>)> {
    let (give, take) = std::sync::mpsc::channel::<(Vec<Counts>, Sorted)>();
    let (done, sorted) = tokio::sync::oneshot::channel();
    let started = std::thread::Builder::new()
        .name("keygate-usage-sort".into())
        .spawn(move || {
            keygate_store_sql::lower_thread_priority();
            if let Ok((drained, into)) = take.recv() {
                let _ = done.send(sort(drained, into));
            }
        });
    if started.is_err() {
        return Ok(sort(drained, into));
    }
    if let Err(std::sync::mpsc::SendError((drained, into))) = give.send((drained, into)) {
        return Ok(sort(drained, into));
    }
    // Only a panic in the sort itself fails here (the map went with it).
    sorted
        .await
        .map_err(|_| anyhow::anyhow!("sorting the usage to write failed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(recorder: &UsageRecorder) -> Sorted {
        let drained = recorder
            .shards
            .iter()
            .map(|s| std::mem::take(&mut *lock(s)))
            .collect();
        sort(drained, Sorted::new()).0
    }

    /// An operator key's record (no account), as the key cache would hold it.
    fn cached(hash: KeyHash) -> Arc<KeyWithAccount> {
        Arc::new(KeyWithAccount {
            key: keygate_store::ApiKey {
                id: keygate_core::KeyId::generate(),
                account_id: None,
                created_by: None,
                name: String::new(),
                description: String::new(),
                scope: keygate_core::Scope::Admin,
                environment: keygate_core::Environment::Live,
                hash,
                start: String::new(),
                last4: String::new(),
                expires_at: None,
                revoked_at: None,
                rolled_to: None,
                rate_limit: None,
                permissions: Vec::new(),
                metadata: serde_json::Value::Null,
                created_at: OffsetDateTime::UNIX_EPOCH,
                last_used_at: None,
            },
            account: None,
        })
    }

    #[test]
    fn a_key_whose_shard_is_held_is_counted_without_waiting_and_written_as_one_row() {
        let recorder = UsageRecorder::default();
        let hash = KeyHash([7; 32]);
        let key = cached(hash);
        let now = OffsetDateTime::now_utc();
        recorder.record(hash, &key, now);
        let held = lock(&recorder.shards[shard_index(&hash)]);
        let (sent, counted) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| {
                for _ in 0..3 {
                    recorder.record(hash, &key, now + Duration::from_secs(1));
                }
                sent.send(()).ok();
            });
            // Waiting for the held shard, the thread would only finish after `held` is dropped.
            assert_eq!(counted.recv_timeout(Duration::from_secs(10)), Ok(()));
            drop(held);
        });
        // Another key, counted once.
        recorder.record(KeyHash([8; 32]), &cached(KeyHash([8; 32])), now);
        let rows = drain(&recorder);
        let ours: Vec<_> = rows.iter().filter(|(slot, _)| slot.0 == hash).collect();
        assert_eq!(ours.len(), 1, "one row for one key and day");
        assert_eq!(ours[0].1.requests, 4);
        assert_eq!(ours[0].1.last_used_at, now + Duration::from_secs(1));
        assert_eq!(rows.len(), 2);
    }
}
