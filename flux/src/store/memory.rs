//! The in-memory backend: the model's GCRA over a sharded map, for one process.
//!
//! Used when no Redis is configured (limits are then per process) and as the `Local`
//! failure policy's fallback. All limits of one client key live in one shard, so a
//! multi-limit check takes one lock, like the Redis script takes one slot.
//!
//! Memory: an entry is dropped once its bucket is full again (`tat <= now`), which is when
//! it no longer carries information. Each shard sweeps such entries whenever it has doubled
//! in size since its last sweep, so the map holds about twice the number of clients that
//! were active within one bucket window.
//!
//! That window can be a day (a per-day limit) or longer (a charge into debt), and keys can
//! rotate (IPv6 /64s out of a larger prefix, random header values), so the store also has a
//! hard cap: `max_buckets` over the whole store, split evenly over the 64 shards (a shard
//! holds at most `max_buckets / 64`, so the store may evict a little before the total is
//! reached when clients hash unevenly). A new bucket in a full shard first evicts one, in
//! O(1): [`SAMPLES`] entries picked at random (the shard's entries are indexable, an
//! `IndexMap`), the first one found full again if any (it carries nothing), else the one
//! whose bucket is nearest to full (lowest `tat`, the least information lost: evicting a
//! bucket hands its client a full one). So a client that drained its bucket and keeps coming
//! back is among the last to go, and a flood of fresh keys mostly evicts its own kind, as
//! Redis' approximated LRU does with its `maxmemory-samples`. Evictions of buckets not yet
//! full are counted (`flux_memory_evictions_total`, [`MemoryStore::evictions`]). The sweep
//! runs as a shard doubles, which a shard held at its cap does at most once more: there the
//! entries full again are the first that new buckets replace, one per insert.
//!
//! What rotating keys can win at the cap is what fresh keys win anyway: each new key starts
//! with a full bucket, evicted or not.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use indexmap::IndexMap;
use metrics::Counter;

use super::SlotOp;
use super::slots::SlotTable;
use crate::model::clock::Clock;
use crate::model::gcra::{self, Bucket, Params};
use crate::model::key::Key;
use crate::telemetry;

const SHARDS: usize = 64;
const MIN_SWEEP_LEN: usize = 1024;
/// Fewest buckets one shard may be capped at: a check of several limits still fits.
const MIN_SHARD_CAP: usize = 16;
/// The smallest cap a store accepts (16 buckets per shard).
pub(crate) const MIN_MAX_BUCKETS: usize = SHARDS * MIN_SHARD_CAP;
/// Entries looked at to choose the one to evict (Redis' `maxmemory-samples` is 5).
const SAMPLES: usize = 5;

struct Shard {
    tats: IndexMap<Box<str>, u64>,
    sweep_at: usize,
}

/// Per-process token buckets. Cheap to clone (shared state).
#[derive(Clone)]
pub(crate) struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    shards: Box<[Mutex<Shard>]>,
    /// Most buckets one shard holds.
    shard_cap: usize,
    hasher: RandomState,
    clock: Box<dyn Clock>,
    /// Buckets evicted before they were full again.
    evictions: AtomicU64,
    /// `flux_memory_evictions_total`, registered at the first eviction.
    evictions_metric: OnceLock<Counter>,
    /// Concurrency slots, on the same clock.
    slots: SlotTable,
}

impl MemoryStore {
    /// A store holding at most `max_buckets` buckets (at least [`MIN_MAX_BUCKETS`]: a
    /// smaller cap is raised to it; the builder refuses one).
    pub(crate) fn new(clock: Box<dyn Clock>, max_buckets: usize) -> MemoryStore {
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    tats: IndexMap::new(),
                    sweep_at: MIN_SWEEP_LEN,
                })
            })
            .collect();
        MemoryStore {
            inner: Arc::new(Inner {
                shards,
                shard_cap: (max_buckets / SHARDS).max(MIN_SHARD_CAP),
                hasher: RandomState::new(),
                clock,
                evictions: AtomicU64::new(0),
                evictions_metric: OnceLock::new(),
                slots: SlotTable::new(),
            }),
        }
    }

    /// Decides a check now (`at` overrides the clock, for tests).
    pub(crate) fn check(
        &self,
        key: &Key,
        buckets: &[String],
        params: &[Params],
        at: Option<u64>,
        out: &mut Vec<Bucket>,
    ) -> bool {
        let shard = self.inner.hasher.hash_one(key) as usize % SHARDS;
        let mut shard = self.inner.shards[shard]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = at.unwrap_or_else(|| self.inner.clock.now_micros());
        let mut tats: Vec<Option<u64>> = buckets
            .iter()
            .map(|b| shard.tats.get(b.as_str()).copied())
            .collect();
        let allowed = gcra::decide(now, params, &mut tats, out);
        if allowed {
            for (bucket, tat) in buckets.iter().zip(&tats) {
                let Some(tat) = *tat else { continue };
                if let Some(slot) = shard.tats.get_mut(bucket.as_str()) {
                    *slot = tat;
                    continue;
                }
                // A full shard makes room first; if it cannot (every entry sampled is this
                // check's own), the bucket is not remembered: the cap holds.
                if shard.tats.len() >= self.inner.shard_cap
                    && !self.evict(&mut shard.tats, buckets, now)
                {
                    continue;
                }
                shard.tats.insert(bucket.as_str().into(), tat);
            }
            if shard.tats.len() >= shard.sweep_at {
                shard.tats.retain(|_, tat| *tat > now);
                shard.sweep_at = (shard.tats.len() * 2).max(MIN_SWEEP_LEN);
            }
        }
        allowed
    }

    /// Drops one entry of a full shard, none of `keep` (the check's own buckets): of
    /// [`SAMPLES`] picked at random, one full again (`tat <= now`) if any, else the one
    /// with the lowest `tat`. Whether one was dropped.
    fn evict(&self, tats: &mut IndexMap<Box<str>, u64>, keep: &[String], now: u64) -> bool {
        let mut samples = [(0, 0); SAMPLES];
        for sample in &mut samples {
            let index = fastrand::usize(..tats.len());
            *sample = (
                index,
                tats.get_index(index).map_or(u64::MAX, |(_, &tat)| tat),
            );
        }
        // Nearest to full first (every full one ranks as full); only the entry chosen has its name
        // read (one more cache miss), to pass over the check's own buckets.
        samples.sort_unstable_by_key(|&(_, tat)| tat.max(now));
        let victim = samples.into_iter().find(|&(index, _)| {
            tats.get_index(index)
                .is_some_and(|(bucket, _)| !keep.iter().any(|k| k.as_str() == &**bucket))
        });
        let Some((index, tat)) = victim else {
            return false;
        };
        tats.swap_remove_index(index);
        if tat > now {
            self.inner.evictions.fetch_add(1, Ordering::Relaxed);
            telemetry::memory_evicted(&self.inner.evictions_metric);
        }
        true
    }

    /// Now and the stored `tat` of each of `buckets`, changing nothing (`Flux::peek`).
    pub(crate) fn read(&self, key: &Key, buckets: &[String]) -> (u64, Vec<Option<u64>>) {
        let shard = self.inner.hasher.hash_one(key) as usize % SHARDS;
        let shard = self.inner.shards[shard]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = self.inner.clock.now_micros();
        let tats = buckets
            .iter()
            .map(|b| shard.tats.get(b.as_str()).copied())
            .collect();
        (now, tats)
    }

    /// Runs `op` on the slot set `key` for slot `id`, as the Redis script does: whether it
    /// succeeded, and (for an acquisition) the slots held then.
    pub(crate) fn slot(
        &self,
        key: &str,
        id: u64,
        op: SlotOp,
        lease: std::time::Duration,
    ) -> (bool, u32) {
        let now = self.now_micros();
        let expiry = now + lease.as_micros() as u64;
        let slots = &self.inner.slots;
        match op {
            SlotOp::Acquire { max } => slots.acquire(key, id, max, expiry, now),
            SlotOp::Renew => (slots.renew(key, id, expiry), 0),
            SlotOp::Release => (slots.release(key, id), 0),
        }
    }

    /// Now, on this backend's clock (µs).
    pub(crate) fn now_micros(&self) -> u64 {
        self.inner.clock.now_micros()
    }

    /// Buckets evicted before they were full again, to stay under the cap.
    pub(crate) fn evictions(&self) -> u64 {
        self.inner.evictions.load(Ordering::Relaxed)
    }

    /// Entries held (for memory accounting in tests and benchmarks).
    pub(crate) fn len(&self) -> usize {
        self.inner
            .shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).tats.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::model::clock::ManualClock;
    use crate::model::gcra::tests::params;

    /// One token every 2.4 hours, 10 at most: 10 a day.
    const DAY_INTERVAL: u64 = 8_640_000_000;
    const START: u64 = 1_000_000_000;

    fn store(max_buckets: usize) -> MemoryStore {
        MemoryStore::new(Box::new(ManualClock::new(START)), max_buckets)
    }

    /// A check of `key` against `limits` per-day limits (`limit-0`, `limit-1`, ...), at `at`.
    fn check(store: &MemoryStore, key: &str, limits: usize, at: u64) -> bool {
        let key = Key::new(key);
        let buckets: Vec<String> = (0..limits)
            .map(|i| key.bucket("flux", &format!("limit-{i}")))
            .collect();
        let params = vec![params(DAY_INTERVAL, 10, 1); limits];
        store.check(&key, &buckets, &params, Some(at), &mut Vec::new())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Rotating keys against a per-day limit (no bucket is ever full again): the store
        /// never holds more than its cap, whatever the cap, the keys or the limits per check.
        #[test]
        fn never_exceeds_the_cap(
            cap in MIN_MAX_BUCKETS..MIN_MAX_BUCKETS * 3,
            keys in 1usize..6_000,
            limits in 1usize..=3,
            returning in 0usize..3,
        ) {
            let store = store(cap);
            for round in 0..=returning {
                for i in 0..keys {
                    let at = START + (round * keys + i) as u64;
                    check(&store, &format!("client-{i}"), limits, at);
                    prop_assert!(store.len() <= cap, "{} buckets held, cap {cap}", store.len());
                }
            }
        }
    }

    #[test]
    fn a_drained_client_in_use_is_kept_while_fresher_buckets_go() {
        let store = store(4_096);
        let mut now = START;
        for _ in 0..10 {
            assert!(check(&store, "drained", 1, now));
        }
        assert!(!check(&store, "drained", 1, now), "drained for the day");
        for i in 0..20_000 {
            now += 1_000;
            // Each fresh client takes one token of ten: its bucket is nearly full.
            assert!(check(&store, &format!("fresh-{i}"), 1, now));
            if i % 100 == 0 {
                assert!(
                    !check(&store, "drained", 1, now),
                    "the drained client got a fresh bucket after {i} others"
                );
            }
        }
        assert!(store.len() <= 4_096);
        assert!(store.evictions() > 0, "the cap was reached");
    }

    #[test]
    fn evictions_of_buckets_not_yet_full_are_counted() {
        let store = store(MIN_MAX_BUCKETS);
        for i in 0..5_000 {
            check(&store, &format!("client-{i}"), 1, START + i);
        }
        // Nothing was full again: every bucket that left was evicted.
        assert_eq!(store.len() as u64 + store.evictions(), 5_000);
        // A day later the old buckets are full: dropping one loses nothing and counts
        // nothing; only the new ones that left again were evicted.
        let before = store.evictions();
        let later = START + 2 * 10 * DAY_INTERVAL;
        let n = MIN_MAX_BUCKETS as u64;
        for i in 0..n {
            check(&store, &format!("later-{i}"), 1, later + i);
        }
        let held = (0..n)
            .filter(|i| {
                let key = Key::new(format!("later-{i}"));
                let bucket = key.bucket("flux", "limit-0");
                store.read(&key, &[bucket]).1[0].is_some()
            })
            .count() as u64;
        assert!(
            held > n / 2,
            "most new buckets replaced old full ones: {held}"
        );
        assert_eq!(store.evictions() - before, n - held);
    }

    #[test]
    fn a_check_of_several_limits_keeps_all_its_buckets_at_the_cap() {
        let store = store(MIN_MAX_BUCKETS);
        for i in 0..5_000 {
            check(&store, &format!("client-{i}"), 3, START + i);
        }
        let key = Key::new("stacked");
        assert!(check(&store, "stacked", 3, START + 5_000));
        let buckets: Vec<String> = (0..3)
            .map(|i| key.bucket("flux", &format!("limit-{i}")))
            .collect();
        let (_, tats) = store.read(&key, &buckets);
        assert!(tats.iter().all(Option::is_some), "{tats:?}");
        assert!(store.len() <= MIN_MAX_BUCKETS);
    }
}
