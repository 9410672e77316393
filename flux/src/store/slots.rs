//! Per-process concurrency slots: the table of `lua/concurrency.lua` in process memory, for
//! the in-memory backend and the `Local` failure policy's fallback.
//!
//! A slot set is a list of (slot id, lease expiry) per storage key; acquiring drops expired
//! slots first, as the script does. An empty set is removed, so the table holds only the
//! (limit, client) pairs with requests in flight (plus any slot whose guard was leaked with
//! `mem::forget`, until its lease expires and the key is next used).
//!
//! So unlike the buckets it needs no cap of its own: a set exists only while one of its
//! slots is held, and every local slot is held by a live [`Slot`](crate::concurrency::Slot)
//! guard, whose drop releases it here (a local slot is always released locally, also once
//! Redis is back). The table is bounded by the requests in flight, which the server bounds;
//! a refused acquisition, a renewal or a release of a key with no set leaves nothing
//! behind, so rotating keys cost nothing once their requests end.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, PoisonError};

const SHARDS: usize = 16;

/// The slot sets of one shard: (slot id, lease expiry) per storage key.
type Sets = HashMap<Box<str>, Vec<(u64, u64)>>;

/// The slot sets of one process. All times are µs of the in-memory backend's clock.
pub(crate) struct SlotTable {
    shards: Box<[Mutex<Sets>]>,
    hasher: RandomState,
}

impl SlotTable {
    pub(crate) fn new() -> SlotTable {
        SlotTable {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        }
    }

    /// Runs `f` on the slot set of `key`, removing it if it ends up empty.
    fn with<T>(&self, key: &str, f: impl FnOnce(&mut Vec<(u64, u64)>) -> T) -> T {
        let shard = self.hasher.hash_one(key) as usize % SHARDS;
        let mut map = self.shards[shard]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let set = map.entry(key.into()).or_default();
        let out = f(set);
        if set.is_empty() {
            map.remove(key);
        }
        out
    }

    /// Takes slot `id` of `key` if fewer than `max` unexpired slots are held: whether it
    /// was taken, and the slots held then.
    pub(crate) fn acquire(
        &self,
        key: &str,
        id: u64,
        max: u32,
        expiry: u64,
        now: u64,
    ) -> (bool, u32) {
        self.with(key, |set| {
            set.retain(|&(_, until)| until > now);
            let held = u32::try_from(set.len()).unwrap_or(u32::MAX);
            if held >= max {
                return (false, held);
            }
            set.push((id, expiry));
            (true, held + 1)
        })
    }

    /// Moves the expiry of slot `id` to `expiry`, if it is still held.
    pub(crate) fn renew(&self, key: &str, id: u64, expiry: u64) -> bool {
        self.with(key, |set| {
            match set.iter_mut().find(|(held, _)| *held == id) {
                Some(slot) => {
                    slot.1 = expiry;
                    true
                }
                None => false,
            }
        })
    }

    /// Frees slot `id` of `key`: whether it was held.
    pub(crate) fn release(&self, key: &str, id: u64) -> bool {
        self.with(key, |set| {
            let before = set.len();
            set.retain(|&(held, _)| held != id);
            set.len() < before
        })
    }

    /// Slot sets held (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_max_and_expired_slots_are_freed() {
        let table = SlotTable::new();
        assert_eq!(table.acquire("k", 1, 2, 100, 0), (true, 1));
        assert_eq!(table.acquire("k", 2, 2, 100, 0), (true, 2));
        assert_eq!(table.acquire("k", 3, 2, 100, 50), (false, 2));
        assert!(table.renew("k", 1, 300));
        // Slot 2's lease ran out: its holder is gone; slot 1 was renewed.
        assert_eq!(table.acquire("k", 4, 2, 400, 100), (true, 2));
        assert!(!table.renew("k", 2, 500));
        assert!(table.release("k", 1));
        assert!(!table.release("k", 1));
        assert!(table.release("k", 4));
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn rotating_keys_leave_nothing_once_released() {
        let table = SlotTable::new();
        for i in 0..10_000u64 {
            let key = format!("client-{i}");
            assert_eq!(table.acquire(&key, i, 1, 100, 0), (true, 1));
            assert_eq!(table.acquire(&key, i + 1, 1, 100, 0), (false, 1));
            assert!(table.release(&key, i));
            // Calls on a key with no set create none.
            assert!(!table.renew(&key, i, 200));
            assert!(!table.release(&key, i));
        }
        assert_eq!(table.len(), 0);
    }
}
