//! The per-instance cache of "denied until T" answers.
//!
//! When Redis denies a check with `retry_after = R`, the same check (same client, limits and
//! costs) cannot be admitted by Redis before `R` has passed: denials charge nothing, and other
//! requests can only take tokens, never add them. So the instance answers that check itself
//! until then, and a flood from one client reaches Redis about once per retry window per
//! instance. It only remembers denials, so it never admits anything Redis would not.
//!
//! Memory is bounded: each shard holds at most `SHARD_CAPACITY` entries; when a full shard
//! has no expired entry to drop, the new denial is simply not remembered (the next check asks
//! Redis, as without a cache).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::Decision;

const SHARDS: usize = 16;
const SHARD_CAPACITY: usize = 4_096;

/// Most entries the cache holds, over all shards.
#[cfg(test)]
const CAPACITY: usize = SHARDS * SHARD_CAPACITY;

type Shard = Mutex<HashMap<Box<str>, Entry>>;

pub(crate) struct DenyCache {
    shards: Box<[Shard]>,
    /// Entries held, kept beside the shards so that an empty cache costs one load.
    len: AtomicUsize,
    hasher: RandomState,
    origin: Instant,
}

struct Entry {
    /// Until when (µs since `origin`) the denial holds.
    until: u64,
    /// The denial as Redis stated it, and when (µs since `origin`).
    decision: Decision,
    at: u64,
}

impl DenyCache {
    pub(crate) fn new() -> DenyCache {
        DenyCache {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            len: AtomicUsize::new(0),
            hasher: RandomState::new(),
            origin: Instant::now(),
        }
    }

    fn now(&self) -> u64 {
        self.origin.elapsed().as_micros() as u64
    }

    fn shard(&self, id: &str) -> &Shard {
        &self.shards[self.hasher.hash_one(id) as usize % SHARDS]
    }

    /// The remembered denial for check `id`, with its times brought up to now.
    pub(crate) fn get(&self, id: &str) -> Option<Decision> {
        let mut shard = self
            .shard(id)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = self.now();
        let entry = shard.get(id)?;
        if entry.until <= now {
            shard.remove(id);
            self.len.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        let elapsed = Duration::from_micros(now - entry.at);
        let mut decision = entry.decision.clone();
        decision.retry_after = decision.retry_after.saturating_sub(elapsed);
        decision.reset_after = decision.reset_after.saturating_sub(elapsed);
        decision.source = crate::Source::Cached;
        Some(decision)
    }

    /// Remembers Redis' denial of check `id`.
    pub(crate) fn insert(&self, id: &str, decision: &Decision) {
        if decision.allowed || decision.retry_after.is_zero() {
            return;
        }
        let mut shard = self
            .shard(id)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = self.now();
        if shard.len() >= SHARD_CAPACITY && !shard.contains_key(id) {
            let before = shard.len();
            shard.retain(|_, e| e.until > now);
            self.len.fetch_sub(before - shard.len(), Ordering::Relaxed);
            if shard.len() >= SHARD_CAPACITY {
                return;
            }
        }
        let fresh = shard.insert(
            id.into(),
            Entry {
                until: now + decision.retry_after.as_micros() as u64,
                decision: decision.clone(),
                at: now,
            },
        );
        if fresh.is_none() {
            self.len.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether the cache holds nothing (the common case outside a flood).
    pub(crate) fn is_empty(&self) -> bool {
        self.len.load(Ordering::Relaxed) == 0
    }

    /// Entries held, expired or not.
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Source;

    fn denial(retry_ms: u64) -> Decision {
        Decision {
            allowed: false,
            limit: 5,
            remaining: 0,
            retry_after: Duration::from_millis(retry_ms),
            reset_after: Duration::from_millis(retry_ms * 5),
            window: Duration::from_secs(5),
            index: 0,
            source: Source::Backend,
        }
    }

    #[test]
    fn remembers_a_denial_until_its_retry_after() {
        let cache = DenyCache::new();
        cache.insert("a", &denial(30));
        let hit = cache.get("a").expect("cached");
        assert!(!hit.allowed);
        assert_eq!(hit.source, Source::Cached);
        assert!(hit.retry_after <= Duration::from_millis(30));
        assert!(cache.get("b").is_none());
        std::thread::sleep(Duration::from_millis(35));
        assert!(cache.get("a").is_none(), "expired");
        assert!(cache.is_empty(), "an expired entry read is dropped");
    }

    #[test]
    fn never_remembers_admissions_and_stays_bounded() {
        let cache = DenyCache::new();
        let mut allowed = denial(10);
        allowed.allowed = true;
        cache.insert("ok", &allowed);
        assert!(cache.get("ok").is_none());
        assert!(cache.is_empty());
        for i in 0..CAPACITY * 2 {
            cache.insert(&format!("k{i}"), &denial(60_000));
        }
        assert!(cache.len() <= CAPACITY, "{}", cache.len());
    }
}
