//! The in-memory backend: the model's GCRA over a sharded map, for one process.
//!
//! Used when no Redis is configured (limits are then per process) and as the `Local`
//! failure policy's fallback. All limits of one client key live in one shard, so a
//! multi-limit check takes one lock, like the Redis script takes one slot.
//!
//! Memory: an entry is dropped once its bucket is full again (`tat <= now`), which is when
//! it no longer carries information. Each shard sweeps such entries whenever it has doubled
//! in size since its last sweep, so the map holds about twice the number of clients that
//! were active within one bucket window, whatever the number of distinct keys seen.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, PoisonError};

use super::SlotOp;
use super::slots::SlotTable;
use crate::model::clock::Clock;
use crate::model::gcra::{self, Bucket, Params};
use crate::model::key::Key;

const SHARDS: usize = 64;
const MIN_SWEEP_LEN: usize = 1024;

struct Shard {
    tats: HashMap<Box<str>, u64>,
    sweep_at: usize,
}

/// Per-process token buckets. Cheap to clone (shared state).
#[derive(Clone)]
pub(crate) struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    clock: Box<dyn Clock>,
    /// Concurrency slots, on the same clock.
    slots: SlotTable,
}

impl MemoryStore {
    pub(crate) fn new(clock: Box<dyn Clock>) -> MemoryStore {
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    tats: HashMap::new(),
                    sweep_at: MIN_SWEEP_LEN,
                })
            })
            .collect();
        MemoryStore {
            inner: Arc::new(Inner {
                shards,
                hasher: RandomState::new(),
                clock,
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
                if let Some(tat) = tat {
                    match shard.tats.get_mut(bucket.as_str()) {
                        Some(slot) => *slot = *tat,
                        None => {
                            shard.tats.insert(bucket.as_str().into(), *tat);
                        }
                    }
                }
            }
            if shard.tats.len() >= shard.sweep_at {
                shard.tats.retain(|_, tat| *tat > now);
                shard.sweep_at = (shard.tats.len() * 2).max(MIN_SWEEP_LEN);
            }
        }
        allowed
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

    /// Entries held (for memory accounting in tests and benchmarks).
    pub(crate) fn len(&self) -> usize {
        self.inner
            .shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).tats.len())
            .sum()
    }
}
