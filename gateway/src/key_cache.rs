//! The in-process cache of verified API keys: compact, bounded, one TTL.
//!
//! One million cached keys must fit in a sidecar's memory (≤ 256 MB, BENCHMARKS.md); moka
//! spent ~300 bytes per entry on its own bookkeeping (an `Arc`'d entry with atomics, two
//! deque nodes, a bucket, a second copy of the key). Here an entry is one 64-byte slot in a
//! slab — the 32-byte SHA-256 as the key, the shared record, the generation and time of its
//! fetch, a "recently used" bit — and a 4-byte index in a hash table:
//!
//! - **Sharded**: 64 shards, each behind its own short mutex; the shard and the table hash
//!   are read from the SHA-256 itself (already uniform, and only keys keys-service issued
//!   are ever cached here, so nobody can choose them to collide).
//! - **Bounded**: each shard holds `capacity / 64` (rounded up, so the whole holds at most
//!   `capacity` rounded up to a multiple of 64); when a shard is full, a CLOCK hand
//!   evicts the first slot not used since it last passed (expired slots first) — the
//!   second-chance approximation of LRU, with no per-entry list nodes.
//! - **TTL**: checked on read against the slot's fetch time; no timers. Expired slots are
//!   reused by the hand.
//!
//! Coalescing concurrent lookups of one hash and the freshness rules (generations,
//! invalidation markers) stay in [`crate::api_key`]; this type only stores.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hashbrown::HashTable;

const SHARDS: usize = 64;

/// One cached answer.
#[derive(Debug, Clone)]
pub struct Cached<V> {
    pub value: Arc<V>,
    /// The invalidation generation at which its fetch started.
    pub fetched_gen: u64,
    pub fetched_at: Instant,
}

struct Slot<V> {
    hash: [u8; 32],
    value: Option<Arc<V>>,
    fetched_gen: u64,
    /// Nanoseconds after the cache's `base`.
    fetched_ns: u64,
    referenced: bool,
}

struct Shard<V> {
    table: HashTable<u32>,
    slots: Vec<Slot<V>>,
    /// Slots emptied by invalidation, reused first.
    free: Vec<u32>,
    hand: usize,
}

pub struct KeyCache<V> {
    shards: Box<[Mutex<Shard<V>>]>,
    per_shard: usize,
    ttl: Duration,
    base: Instant,
}

fn table_hash(hash: &[u8; 32]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&hash[..8]);
    u64::from_le_bytes(b)
}

fn shard_of(hash: &[u8; 32]) -> usize {
    usize::from(hash[8]) % SHARDS
}

impl<V> Shard<V> {
    fn find(&self, hash: &[u8; 32]) -> Option<u32> {
        let slots = &self.slots;
        self.table
            .find(table_hash(hash), |&i| {
                slots[i as usize].value.is_some() && slots[i as usize].hash == *hash
            })
            .copied()
    }

    /// Entries held: every slot is live or on the free list.
    fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Take live slot `i` out of the table and empty it; the caller reuses or frees it.
    fn unlink(&mut self, i: u32) {
        let h = table_hash(&self.slots[i as usize].hash);
        if let Ok(entry) = self.table.find_entry(h, |&j| j == i) {
            entry.remove();
        }
        self.slots[i as usize].value = None;
    }

    fn release(&mut self, i: u32) {
        self.unlink(i);
        self.free.push(i);
    }

    fn remove(&mut self, hash: &[u8; 32]) {
        if let Some(i) = self.find(hash) {
            self.release(i);
        }
    }

    /// A slot index to write a new entry into: a free one, a new one, or the CLOCK's victim.
    fn claim(&mut self, per_shard: usize, expired: impl Fn(&Slot<V>) -> bool) -> u32 {
        if let Some(i) = self.free.pop() {
            return i;
        }
        if self.slots.len() < per_shard {
            if self.slots.capacity() == 0 {
                // Once, exactly: doubling would leave up to half a shard's slots unused.
                self.slots.reserve_exact(per_shard);
            }
            let i = self.slots.len() as u32;
            self.slots.push(Slot {
                hash: [0; 32],
                value: None,
                fetched_gen: 0,
                fetched_ns: 0,
                referenced: false,
            });
            return i;
        }
        // Full: at most two sweeps (the first clears every reference bit it passes).
        let n = self.slots.len();
        for _ in 0..2 * n {
            let i = self.hand;
            self.hand = (self.hand + 1) % n;
            let slot = &mut self.slots[i];
            if slot.referenced && !expired(slot) {
                slot.referenced = false;
                continue;
            }
            self.unlink(i as u32);
            return i as u32;
        }
        unreachable!("a full shard always has a victim within two sweeps")
    }
}

impl<V> KeyCache<V> {
    pub fn new(capacity: u64, ttl: Duration) -> Self {
        let per_shard = usize::try_from(capacity.div_ceil(SHARDS as u64))
            .unwrap_or(usize::MAX)
            .max(1);
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    table: HashTable::new(),
                    slots: Vec::new(),
                    free: Vec::new(),
                    hand: 0,
                })
            })
            .collect();
        Self {
            shards,
            per_shard,
            ttl,
            // Times are kept as offsets from `base`; a day back, so a record whose fetch
            // started just before the cache existed still ages correctly.
            base: Instant::now()
                .checked_sub(Duration::from_secs(86_400))
                .unwrap_or_else(Instant::now),
        }
    }

    fn shard(&self, hash: &[u8; 32]) -> std::sync::MutexGuard<'_, Shard<V>> {
        // A panic while holding a shard cannot leave it half-updated in a way that breaks
        // these invariants badly enough to stop serving: keep going.
        self.shards[shard_of(hash)]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn ttl_ns(&self) -> u64 {
        u64::try_from(self.ttl.as_nanos()).unwrap_or(u64::MAX)
    }

    /// The live entry for `hash`, marking it used.
    pub fn get(&self, hash: &[u8; 32]) -> Option<Cached<V>> {
        let now = self.now_ns();
        let ttl = self.ttl_ns();
        let mut shard = self.shard(hash);
        let i = shard.find(hash)?;
        let slot = &mut shard.slots[i as usize];
        if now.saturating_sub(slot.fetched_ns) >= ttl {
            shard.release(i);
            return None;
        }
        slot.referenced = true;
        Some(Cached {
            value: slot.value.clone()?,
            fetched_gen: slot.fetched_gen,
            fetched_at: self.base + Duration::from_nanos(slot.fetched_ns),
        })
    }

    /// Store (or replace) the entry for `hash`.
    pub fn insert(&self, hash: [u8; 32], entry: Cached<V>) {
        let fetched_ns = u64::try_from(
            entry
                .fetched_at
                .saturating_duration_since(self.base)
                .as_nanos(),
        )
        .unwrap_or(u64::MAX);
        let (now, ttl, per_shard) = (self.now_ns(), self.ttl_ns(), self.per_shard);
        let mut shard = self.shard(&hash);
        let i = match shard.find(&hash) {
            Some(i) => i,
            None => {
                let i = shard.claim(per_shard, |s| now.saturating_sub(s.fetched_ns) >= ttl);
                let Shard { table, slots, .. } = &mut *shard;
                // Growing rehashes every index from its slot's key; slot `i` still holds
                // the evicted key, so its hash comes from the new one.
                table.insert_unique(table_hash(&hash), i, |&j| {
                    if j == i {
                        table_hash(&hash)
                    } else {
                        table_hash(&slots[j as usize].hash)
                    }
                });
                i
            }
        };
        let slot = &mut shard.slots[i as usize];
        slot.hash = hash;
        slot.value = Some(entry.value);
        slot.fetched_gen = entry.fetched_gen;
        slot.fetched_ns = fetched_ns;
        slot.referenced = false;
    }

    /// Drop the entry for `hash`, if any.
    pub fn invalidate(&self, hash: &[u8; 32]) {
        self.shard(hash).remove(hash);
    }

    /// Drop every entry (memory is returned too).
    pub fn invalidate_all(&self) {
        for shard in &*self.shards {
            let mut s = shard
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            s.table = HashTable::new();
            s.slots = Vec::new();
            s.free = Vec::new();
            s.hand = 0;
        }
    }

    /// Entries held (expired ones not yet reused included).
    pub fn len(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .len() as u64
            })
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(n: u32) -> [u8; 32] {
        use sha2::Digest as _;
        sha2::Sha256::digest(n.to_le_bytes()).into()
    }

    fn put(c: &KeyCache<u32>, n: u32) {
        c.insert(
            h(n),
            Cached {
                value: Arc::new(n),
                fetched_gen: u64::from(n),
                fetched_at: Instant::now(),
            },
        );
    }

    fn value(c: &KeyCache<u32>, n: u32) -> Option<u32> {
        c.get(&h(n)).map(|e| *e.value)
    }

    #[test]
    fn stores_replaces_and_invalidates() {
        let c = KeyCache::new(64_000, Duration::from_secs(60));
        for n in 0..500 {
            put(&c, n);
        }
        assert_eq!(c.len(), 500);
        assert!((0..500).all(|n| value(&c, n) == Some(n)));
        assert_eq!(c.get(&h(7)).map(|e| e.fetched_gen), Some(7));
        // Replacing keeps one entry.
        c.insert(
            h(3),
            Cached {
                value: Arc::new(33),
                fetched_gen: 9,
                fetched_at: Instant::now(),
            },
        );
        assert_eq!((value(&c, 3), c.len()), (Some(33), 500));
        c.invalidate(&h(3));
        assert_eq!((value(&c, 3), c.len()), (None, 499));
        // The freed slot is reused.
        put(&c, 10_000);
        assert_eq!((value(&c, 10_000), c.len()), (Some(10_000), 500));
        c.invalidate_all();
        assert!(c.is_empty());
        assert_eq!(value(&c, 1), None);
        put(&c, 1);
        assert_eq!(value(&c, 1), Some(1));
    }

    #[test]
    fn entries_expire_on_read_and_their_slots_are_reused() {
        let c = KeyCache::new(64, Duration::from_millis(30));
        put(&c, 1);
        assert_eq!(value(&c, 1), Some(1));
        // An entry fetched before the TTL is already over.
        c.insert(
            h(2),
            Cached {
                value: Arc::new(2),
                fetched_gen: 0,
                fetched_at: Instant::now() - Duration::from_millis(31),
            },
        );
        assert_eq!(value(&c, 2), None);
        std::thread::sleep(Duration::from_millis(35));
        assert_eq!(value(&c, 1), None);
        assert!(c.is_empty());
    }

    #[test]
    fn never_holds_more_than_its_capacity() {
        let capacity = 6_400;
        let c = KeyCache::new(capacity, Duration::from_secs(60));
        for n in 0..50_000 {
            put(&c, n);
            assert!(c.len() <= capacity);
        }
        assert!(c.len() > capacity * 9 / 10, "{}", c.len());
        // Whatever survived answers with its own value.
        let live = (0..50_000).filter(|&n| value(&c, n).is_some_and(|v| v == n));
        assert_eq!(live.count() as u64, c.len());
    }

    #[test]
    fn recently_used_entries_survive_a_scan_of_new_ones() {
        let capacity = 6_400;
        let c = KeyCache::new(capacity, Duration::from_secs(60));
        // Filled to 60%, so no shard has had to evict yet.
        for n in 0..capacity as u32 * 3 / 5 {
            put(&c, n);
        }
        // A hot tenth, used between every wave of newcomers.
        let hot: Vec<u32> = (0..capacity as u32 * 3 / 5).step_by(10).collect();
        for wave in 0..4u32 {
            for &n in &hot {
                assert_eq!(value(&c, n), Some(n), "hot key {n} evicted in wave {wave}");
            }
            for n in 0..capacity as u32 / 4 {
                put(&c, 1_000_000 + wave * 100_000 + n);
            }
        }
    }

    #[test]
    fn shards_are_safe_to_share_between_threads() {
        let c = Arc::new(KeyCache::new(10_000, Duration::from_secs(60)));
        let threads: Vec<_> = (0..4u32)
            .map(|t| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for n in 0..20_000 {
                        let k = t * 100_000 + n;
                        put(&c, k);
                        if let Some(v) = value(&c, k) {
                            assert_eq!(v, k);
                        }
                        if n % 3 == 0 {
                            c.invalidate(&h(k));
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert!(c.len() <= 10_048, "{}", c.len());
    }
}
