//! A concurrent cache bounded in size and in age, made for the request path: a read is one hash,
//! one short shared (read) lock on one shard, a lookup and a clone of the value (an `Arc` in
//! practice). It does no allocation, queues nothing and leaves no housekeeping to run later,
//! which is what a general-purpose cache (moka) spent several percent of a request on.
//!
//! - **Shards.** Entries are spread over a power-of-two number of shards by their hash, each an
//!   `RwLock` around a hash table of indices into a vector of slots. The hash is computed once
//!   per operation: its middle bits pick the shard, the whole of it finds the slot.
//! - **Readers do not exclude each other.** A hit takes its shard's lock shared and marks the
//!   entry used through an atomic flag, so lookups of one key from every serving thread at once
//!   (every verify authenticates the same operator key) never wait for each other; with a mutex
//!   they did, and a thread preempted while holding the hot shard stalled the others, with all
//!   their connections. Only inserts, invalidations and the removal of an expired entry take
//!   the lock exclusively.
//! - **Age.** An entry expires a fixed time after it was inserted (time to live, not to idle).
//!   An expired entry is a miss; it is removed when a lookup meets it or when eviction passes
//!   over it, not by a timer.
//! - **Size.** The capacity is split exactly between the shards, so the cache never holds more
//!   than `capacity` entries (expired ones not yet removed included). A shard that is full makes
//!   room before it inserts, with CLOCK (second chance): a hand walks the slots; a hit sets an
//!   entry's reference bit, the hand clears it and moves on, and the first entry it finds expired
//!   or unreferenced is the one that goes. Entries read since the hand last passed survive; a key
//!   read once and never again goes first. The walk is bounded so that one insert never holds a
//!   shard for long.

use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use hashbrown::{DefaultHashBuilder, HashTable};

/// Fewest entries a shard is given: a small cache has fewer shards rather than tiny ones, so its
/// capacity is not spent unevenly.
const MIN_SHARD_CAPACITY: u64 = 32;

/// Most slots one eviction looks at. When every one of them was referenced, the last is evicted
/// anyway: the hand has cleared their bits, so the next evictions find victims at once.
const SWEEP_LIMIT: usize = 64;

pub struct BoundedCache<K, V> {
    shards: Box<[ShardLock<K, V>]>,
    /// `shards.len() - 1`; the count is a power of two.
    shard_mask: u64,
    hasher: DefaultHashBuilder,
    ttl: Duration,
}

/// A shard behind its own lock, aligned so that two shards' locks never share a cache line (128:
/// some CPUs fetch lines in pairs).
#[repr(align(128))]
struct ShardLock<K, V>(RwLock<Shard<K, V>>);

struct Shard<K, V> {
    /// Indices into `slots`, keyed by each slot's hash.
    table: HashTable<usize>,
    /// The entries, densely: removal moves the last slot into the gap.
    slots: Vec<Slot<K, V>>,
    /// The CLOCK hand: the next slot eviction looks at.
    hand: usize,
    /// How many entries this shard may hold; the shards' capacities add up to the cache's.
    capacity: usize,
}

struct Slot<K, V> {
    hash: u64,
    key: K,
    value: V,
    /// `None` when the time to live is too long to represent: the entry never expires.
    expires_at: Option<Instant>,
    /// Set by a hit (under the shared lock), cleared by the CLOCK hand (under the exclusive one).
    referenced: AtomicBool,
}

impl<K, V> Slot<K, V> {
    fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

impl<K: Hash + Eq, V: Clone> BoundedCache<K, V> {
    /// A cache of at most `capacity` entries, each kept at most `ttl` after its insertion.
    /// A capacity of 0 stores nothing.
    pub fn new(capacity: u64, ttl: Duration) -> Self {
        let parallelism = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut count = (4 * parallelism).next_power_of_two().max(8) as u64;
        while count > 1 && capacity / count < MIN_SHARD_CAPACITY {
            count /= 2;
        }
        let (share, rest) = (capacity / count, capacity % count);
        let shards = (0..count)
            .map(|i| {
                let capacity = share + u64::from(i < rest);
                ShardLock(RwLock::new(Shard {
                    table: HashTable::new(),
                    slots: Vec::new(),
                    hand: 0,
                    capacity: usize::try_from(capacity).unwrap_or(usize::MAX),
                }))
            })
            .collect();
        BoundedCache {
            shards,
            shard_mask: count - 1,
            hasher: DefaultHashBuilder::default(),
            ttl,
        }
    }

    /// Hot path: one hash, one short critical section, no allocation.
    pub fn get(&self, key: &K) -> Option<V> {
        self.lookup(key, |slot| slot.value.clone())
    }

    /// Hot path, like `get`. A hit counts as a use for eviction.
    pub fn contains_key(&self, key: &K) -> bool {
        self.lookup(key, |_| ()).is_some()
    }

    /// Inserts or replaces `key`'s value; either way it expires `ttl` from now.
    pub fn insert(&self, key: K, value: V) {
        let hash = self.hasher.hash_one(&key);
        let now = Instant::now();
        let expires_at = now.checked_add(self.ttl);
        let mut shard = self.shard_mut(hash);
        if let Some(i) = shard.find(hash, &key) {
            let slot = &mut shard.slots[i];
            let replaced = std::mem::replace(&mut slot.value, value);
            slot.expires_at = expires_at;
            drop(shard);
            drop(replaced);
            return;
        }
        if shard.capacity == 0 {
            return;
        }
        let slot = Slot {
            hash,
            key,
            value,
            expires_at,
            referenced: AtomicBool::new(false),
        };
        let evicted = if shard.slots.len() < shard.capacity {
            shard.push(slot);
            None
        } else {
            let victim = shard.clock_victim(now);
            Some(shard.replace_at(victim, slot))
        };
        // What was evicted is dropped outside the lock: its value may be the last reference.
        drop(shard);
        drop(evicted);
    }

    pub fn invalidate(&self, key: &K) {
        let hash = self.hasher.hash_one(key);
        let mut shard = self.shard_mut(hash);
        let found = shard.find(hash, key);
        let removed = found.map(|i| shard.remove_at(i));
        drop(shard);
        drop(removed);
    }

    pub fn invalidate_all(&self) {
        for shard in self.shards.iter() {
            let mut shard = write(&shard.0);
            shard.table.clear();
            shard.hand = 0;
            let removed = std::mem::take(&mut shard.slots);
            drop(shard);
            drop(removed);
        }
    }

    /// Entries held, expired ones not yet removed included. Walks every shard: not for the
    /// request path.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| read(&s.0).slots.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Finds `key`, and on a hit marks it referenced and returns `read` of it. An expired entry
    /// is a miss, and is removed (under the exclusive lock, if it is still there and expired).
    fn lookup<R>(&self, key: &K, read_slot: impl FnOnce(&Slot<K, V>) -> R) -> Option<R> {
        let hash = self.hasher.hash_one(key);
        let now = Instant::now();
        let shard = self.shard(hash);
        let slot = &shard.slots[shard.find(hash, key)?];
        if !slot.is_expired(now) {
            // Read first: a hot entry's flag is already set, and its cache line stays shared.
            if !slot.referenced.load(Ordering::Relaxed) {
                slot.referenced.store(true, Ordering::Relaxed);
            }
            return Some(read_slot(slot));
        }
        drop(shard);
        let mut shard = self.shard_mut(hash);
        // Another thread may have removed or replaced it meanwhile.
        let removed = shard
            .find(hash, key)
            .filter(|&i| shard.slots[i].is_expired(now))
            .map(|i| shard.remove_at(i));
        drop(shard);
        drop(removed);
        None
    }

    /// The shard `hash` falls in. hashbrown indexes its buckets with the low bits of the hash
    /// and tags them with the top seven; bits from the middle pick the shard, so that neither
    /// loses entropy within one.
    fn shard_of(&self, hash: u64) -> &RwLock<Shard<K, V>> {
        let index = (hash >> 40) & self.shard_mask;
        &self.shards[index as usize].0
    }

    fn shard(&self, hash: u64) -> RwLockReadGuard<'_, Shard<K, V>> {
        read(self.shard_of(hash))
    }

    fn shard_mut(&self, hash: u64) -> RwLockWriteGuard<'_, Shard<K, V>> {
        write(self.shard_of(hash))
    }
}

impl<K: Eq, V> Shard<K, V> {
    fn find(&self, hash: u64, key: &K) -> Option<usize> {
        let slots = &self.slots;
        self.table
            .find(hash, |&i| slots[i].hash == hash && slots[i].key == *key)
            .copied()
    }

    /// Removes the slot at `i`, moving the last slot into its place.
    fn remove_at(&mut self, i: usize) -> Slot<K, V> {
        let hash = self.slots[i].hash;
        if let Ok(entry) = self.table.find_entry(hash, |&j| j == i) {
            entry.remove();
        }
        let removed = self.slots.swap_remove(i);
        if let Some(moved) = self.slots.get(i) {
            let last = self.slots.len();
            if let Some(index) = self.table.find_mut(moved.hash, |&j| j == last) {
                *index = i;
            }
        }
        removed
    }

    fn push(&mut self, slot: Slot<K, V>) {
        let Shard { table, slots, .. } = self;
        let hash = slot.hash;
        slots.push(slot);
        table.insert_unique(hash, slots.len() - 1, |&i| slots[i].hash);
    }

    /// Puts `slot` in the place of the slot at `i`, which it returns.
    fn replace_at(&mut self, i: usize, slot: Slot<K, V>) -> Slot<K, V> {
        let old_hash = self.slots[i].hash;
        if let Ok(entry) = self.table.find_entry(old_hash, |&j| j == i) {
            entry.remove();
        }
        let hash = slot.hash;
        let old = std::mem::replace(&mut self.slots[i], slot);
        let Shard { table, slots, .. } = self;
        table.insert_unique(hash, i, |&j| slots[j].hash);
        old
    }

    /// CLOCK: the first slot from the hand on that is expired or unreferenced, clearing the
    /// reference bits it passes; after `SWEEP_LIMIT` slots, the last one it looked at. The hand
    /// moves past the victim, whose place the new entry takes: a new entry is looked at last,
    /// a full turn later. Call on a full shard only (it has at least one slot).
    fn clock_victim(&mut self, now: Instant) -> usize {
        let len = self.slots.len();
        let mut looks_left = SWEEP_LIMIT.min(len);
        loop {
            if self.hand >= len {
                self.hand = 0;
            }
            let i = self.hand;
            self.hand += 1;
            looks_left = looks_left.saturating_sub(1);
            let slot = &mut self.slots[i];
            if !*slot.referenced.get_mut() || slot.is_expired(now) || looks_left == 0 {
                return i;
            }
            *slot.referenced.get_mut() = false;
        }
    }
}

// A panic while a shard is locked cannot leave it half-changed (no code that can panic runs
// between the table and the slots being updated), so a poisoned lock is used as it is.

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn it_never_holds_more_than_its_capacity() {
        for capacity in [1, 10, 100, 1_000, 10_000] {
            let cache = BoundedCache::new(capacity, Duration::from_secs(60));
            for i in 0..capacity * 10 {
                cache.insert(i, i);
            }
            let held = cache.len() as u64;
            assert!(held <= capacity, "capacity {capacity}, held {held}");
            // Under uniform keys, sharding costs little of the capacity.
            assert!(
                held >= capacity * 9 / 10,
                "capacity {capacity}, held {held}"
            );
        }
    }

    #[test]
    fn a_capacity_of_zero_stores_nothing() {
        let cache = BoundedCache::new(0, Duration::from_secs(60));
        cache.insert(1, 1);
        assert_eq!(cache.get(&1), None);
        assert!(cache.is_empty());
    }

    #[test]
    fn a_value_is_found_until_its_time_to_live_has_passed() {
        let cache = BoundedCache::new(100, Duration::from_millis(50));
        cache.insert("k", 1);
        assert_eq!(cache.get(&"k"), Some(1));
        assert!(cache.contains_key(&"k"));
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(cache.get(&"k"), None);
        assert!(!cache.contains_key(&"k"));
        // The expired entry was removed when the lookup met it.
        assert!(cache.is_empty());
    }

    #[test]
    fn reading_an_entry_does_not_extend_its_life() {
        let cache = BoundedCache::new(100, Duration::from_millis(60));
        cache.insert("k", 1);
        for _ in 0..4 {
            std::thread::sleep(Duration::from_millis(20));
            let _ = cache.get(&"k");
        }
        assert_eq!(cache.get(&"k"), None);
    }

    #[test]
    fn inserting_again_replaces_the_value_and_restarts_its_time_to_live() {
        let cache = BoundedCache::new(100, Duration::from_millis(80));
        cache.insert("k", 1);
        std::thread::sleep(Duration::from_millis(50));
        cache.insert("k", 2);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(cache.get(&"k"), Some(2));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn an_invalidated_key_is_gone_and_the_others_stay() {
        let cache = BoundedCache::new(1_000, Duration::from_secs(60));
        for i in 0..500 {
            cache.insert(i, i * 2);
        }
        for i in (0..500).step_by(2) {
            cache.invalidate(&i);
        }
        for i in 0..500 {
            let expected = (i % 2 == 1).then_some(i * 2);
            assert_eq!(cache.get(&i), expected, "key {i}");
        }
        assert_eq!(cache.len(), 250);
        cache.invalidate(&10_000);
        assert_eq!(cache.len(), 250);
    }

    #[test]
    fn invalidating_all_empties_every_shard() {
        let cache = BoundedCache::new(10_000, Duration::from_secs(60));
        for i in 0..5_000 {
            cache.insert(i, i);
        }
        cache.invalidate_all();
        assert!(cache.is_empty());
        assert!((0..5_000).all(|i| cache.get(&i).is_none()));
        cache.insert(1, 1);
        assert_eq!(cache.get(&1), Some(1));
    }

    #[test]
    fn entries_read_often_outlive_entries_read_once_under_eviction_pressure() {
        let capacity = 200;
        let cache = BoundedCache::new(capacity, Duration::from_secs(60));
        let hot: Vec<u64> = (0..20).collect();
        for &k in &hot {
            cache.insert(k, k);
        }
        // A stream of keys seen once, ten times the capacity, while the hot keys keep being
        // read, as a scan of invented keys would go next to real traffic.
        for cold in 1_000..1_000 + capacity * 10 {
            cache.insert(cold, cold);
            for &k in &hot {
                assert_eq!(cache.get(&k), Some(k), "hot key {k} evicted at {cold}");
            }
        }
        let early_cold_left = (1_000..1_000 + capacity)
            .filter(|k| cache.contains_key(k))
            .count();
        assert_eq!(early_cold_left, 0);
    }

    #[test]
    fn an_expired_entry_is_evicted_before_live_ones_even_if_it_was_read() {
        // Capacity 4: one shard, so the hand's order is the slots' order.
        let cache = BoundedCache::new(4, Duration::from_secs(60));
        for k in 0..4 {
            cache.insert(k, k);
            assert!(cache.contains_key(&k));
        }
        write(&cache.shards[0].0).slots[2].expires_at = Some(Instant::now());
        cache.insert(4, 4);
        // Keys 0 and 1 were read, so the hand passed them; 2 had expired.
        for k in [0, 1, 3, 4] {
            assert_eq!(cache.get(&k), Some(k), "key {k}");
        }
        assert_eq!(cache.get(&2), None);
    }

    #[test]
    fn a_reader_holding_a_shard_does_not_keep_another_reader_out() {
        // Capacity 4: one shard, which every key falls in.
        let cache = BoundedCache::new(4, Duration::from_secs(60));
        cache.insert("hot", 1);
        let held = read(&cache.shards[0].0);
        let (sent, got) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| sent.send(cache.get(&"hot")));
            // With an exclusive lock per shard this would wait for `held`, which is only
            // dropped after it.
            assert_eq!(got.recv_timeout(Duration::from_secs(10)), Ok(Some(1)));
            drop(held);
        });
    }

    #[test]
    fn concurrent_reads_and_writes_stay_within_capacity() {
        let capacity = 1_000;
        let cache = BoundedCache::new(capacity, Duration::from_secs(60));
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let cache = &cache;
                s.spawn(move || {
                    for i in 0..20_000u64 {
                        let k = (i * 7 + t * 13) % 5_000;
                        match i % 4 {
                            0 => cache.insert(k, Arc::new(k)),
                            1 => cache.invalidate(&k),
                            _ => {
                                if let Some(v) = cache.get(&k) {
                                    assert_eq!(*v, k);
                                }
                            }
                        }
                        if i % 5_000 == 0 && t == 0 {
                            assert!(cache.len() as u64 <= capacity);
                        }
                    }
                });
            }
        });
        assert!(cache.len() as u64 <= capacity);
        cache.invalidate_all();
        assert!(cache.is_empty());
    }
}
