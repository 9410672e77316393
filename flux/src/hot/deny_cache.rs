//! The per-instance cache of "denied until T" answers.
//!
//! When Redis denies a check with `retry_after = R`, the same check (same client, limits and
//! costs) cannot be admitted by Redis before `R` has passed: denials charge nothing, and other
//! requests can only take tokens, never add them. So the instance answers that check itself
//! until then, and a flood from one client reaches Redis about once per retry window per
//! instance. It only remembers denials, so it never admits anything Redis would not.
//!
//! An admission can start a denial too: when Redis admits a check whose deciding bucket then
//! lacks the tokens for another one, the same check cannot be admitted before they are earned.
//!
//! When a remembered denial runs out, the first check to see it asks Redis and the others of
//! that moment keep the denial until it answers (or the call's deadline passes): right after
//! `retry_after`, the bucket holds the tokens of one check and less than one emission interval
//! more, so Redis would admit one of them at most. A flood thus costs Redis about one call per
//! retry window per instance, whatever the number of connections it comes over. The gate
//! only holds within one emission interval of the expiry; a client that comes back later
//! finds no denial at all.
//!
//! Times are taken when the call to Redis was sent, which is before Redis read its clock, so a
//! remembered denial never outlives Redis' own.
//!
//! Memory is bounded: each shard holds at most `SHARD_CAPACITY` entries. A new denial in a
//! full shard takes the place of another in O(1): of [`SAMPLES`] entries picked at random
//! (the shard's entries are indexable, an `IndexMap`), the first one expired, else the one
//! expiring soonest (the least denial time forgotten). Forgetting a denial is always safe:
//! the next check of it asks Redis, as without a cache; the cache still holds nothing but
//! Redis' denials, so it never admits what Redis would not.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use indexmap::IndexMap;

use crate::model::decision::{Decision, Source};
use crate::model::gcra::{Bucket, Params};
use crate::telemetry;

const SHARDS: usize = 16;
const SHARD_CAPACITY: usize = 4_096;
/// Entries looked at to choose the one a new denial replaces in a full shard.
const SAMPLES: usize = 5;

/// Most entries the cache holds, over all shards.
#[cfg(test)]
const CAPACITY: usize = SHARDS * SHARD_CAPACITY;

type Shard = Mutex<IndexMap<Box<str>, Entry>>;

pub(crate) struct DenyCache {
    shards: Box<[Shard]>,
    /// Entries held, kept beside the shards so that an empty cache costs one load.
    len: AtomicUsize,
    hasher: RandomState,
    origin: Instant,
    /// Longest the others wait for the check refreshing an expired denial (µs).
    refresh_timeout: u64,
}

struct Entry {
    /// Until when (µs since `origin`) the denial holds.
    until: u64,
    /// The denial, and when (µs since `origin`) the call that produced it was sent.
    decision: Decision,
    at: u64,
    /// The deciding limit's emission interval (µs): how long after `until` the refresh gate
    /// holds.
    interval: u64,
    /// When a check started refreshing this expired denial.
    refresh: Option<u64>,
}

impl DenyCache {
    /// A cache whose refreshing checks give up after `deadline` (the Redis call deadline).
    pub(crate) fn new(deadline: Duration) -> DenyCache {
        DenyCache {
            shards: (0..SHARDS).map(|_| Mutex::new(IndexMap::new())).collect(),
            len: AtomicUsize::new(0),
            hasher: RandomState::new(),
            origin: Instant::now(),
            refresh_timeout: deadline.as_micros() as u64 + 10_000,
        }
    }

    /// Now, on this cache's clock: take it before sending the call whose answer is stored.
    pub(crate) fn now(&self) -> u64 {
        self.origin.elapsed().as_micros() as u64
    }

    fn shard(&self, id: &str) -> &Shard {
        &self.shards[self.hasher.hash_one(id) as usize % SHARDS]
    }

    /// The remembered denial for check `id`, with its times brought up to now; `None`: ask
    /// Redis (no denial, or this check refreshes an expired one).
    pub(crate) fn get(&self, id: &str) -> Option<Decision> {
        let mut shard = self
            .shard(id)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = self.now();
        let entry = shard.get_mut(id)?;
        let mut decision = if entry.until > now {
            let mut decision = entry.decision.clone();
            let elapsed = Duration::from_micros(now.saturating_sub(entry.at));
            decision.retry_after = Duration::from_micros(entry.until - now);
            decision.reset_after = decision.reset_after.saturating_sub(elapsed);
            decision
        } else {
            let late = now - entry.until;
            match entry.refresh {
                // Within one interval of the expiry: one check asks Redis...
                None if late < entry.interval => {
                    entry.refresh = Some(now);
                    return None;
                }
                // ... and the others keep the denial until it has Redis' answer.
                Some(started) if late < entry.interval && now - started < self.refresh_timeout => {
                    let mut decision = entry.decision.clone();
                    decision.retry_after =
                        Duration::from_micros((entry.interval - late).max(1_000));
                    decision.reset_after = Duration::ZERO;
                    decision
                }
                _ => {
                    shard.swap_remove(id);
                    self.shrank(1);
                    return None;
                }
            }
        };
        decision.source = Source::Cached;
        Some(decision)
    }

    /// Learns from Redis' answer to a check, sent at `sent` (see `now`): `id` builds the
    /// check's identity (only when needed), `params` and `bucket` are the deciding limit's
    /// parameters and state after the call.
    ///
    /// A denial is remembered until its `retry_after`. An admission after which the deciding
    /// bucket lacks the check's tokens is remembered as a denial until they are earned; one
    /// that leaves them forgets any denial of the check.
    pub(crate) fn learn(
        &self,
        id: impl FnOnce() -> String,
        decision: &Decision,
        sent: u64,
        params: Params,
        bucket: &Bucket,
    ) {
        // What the deciding bucket needs before this check fits again.
        let wait = (bucket.reset_after + params.increment).saturating_sub(params.tolerance);
        if decision.allowed && wait == 0 && self.is_empty() {
            return; // nothing to learn, nothing to forget
        }
        self.remember(&id(), decision, sent, params.interval, wait);
    }

    fn remember(&self, id: &str, decision: &Decision, sent: u64, interval: u64, wait: u64) {
        if decision.allowed && wait == 0 {
            let mut shard = self
                .shard(id)
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if shard.swap_remove(id).is_some() {
                self.shrank(1);
            }
            return;
        }
        let mut denial = decision.clone();
        if denial.allowed {
            denial.allowed = false;
            denial.remaining = 0;
            denial.retry_after = Duration::from_micros(wait);
        }
        self.insert(id, &denial, sent, interval);
    }

    /// Remembers Redis' denial of check `id`, given by a call sent at `sent`.
    fn insert(&self, id: &str, decision: &Decision, sent: u64, interval: u64) {
        if decision.allowed || decision.retry_after.is_zero() {
            return;
        }
        let mut shard = self
            .shard(id)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if shard.len() >= SHARD_CAPACITY && !shard.contains_key(id) {
            let now = self.now();
            let mut victim: Option<(usize, u64)> = None;
            for _ in 0..SAMPLES {
                let index = fastrand::usize(..shard.len());
                let Some((_, entry)) = shard.get_index(index) else {
                    continue;
                };
                if entry.until <= now {
                    victim = Some((index, entry.until));
                    break;
                }
                if victim.is_none_or(|(_, soonest)| entry.until < soonest) {
                    victim = Some((index, entry.until));
                }
            }
            if let Some((index, _)) = victim {
                shard.swap_remove_index(index);
                self.shrank(1);
            }
        }
        let fresh = shard.insert(
            id.into(),
            Entry {
                until: sent + decision.retry_after.as_micros() as u64,
                decision: decision.clone(),
                at: sent,
                interval,
                refresh: None,
            },
        );
        if fresh.is_none() {
            self.grew();
        }
    }

    fn grew(&self) {
        let len = self.len.fetch_add(1, Ordering::Relaxed) + 1;
        telemetry::deny_cache_entries(len);
    }

    fn shrank(&self, by: usize) {
        let len = self.len.fetch_sub(by, Ordering::Relaxed) - by;
        telemetry::deny_cache_entries(len);
    }

    /// Forgets every denial: the limits they were computed with changed (an override).
    pub(crate) fn clear(&self) {
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            let removed = shard.len();
            shard.clear();
            if removed > 0 {
                self.shrank(removed);
            }
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

    fn denial(retry_ms: u64) -> Decision {
        Decision {
            allowed: false,
            shadow_denied: false,
            capacity: 5,
            remaining: 0,
            retry_after: Duration::from_millis(retry_ms),
            reset_after: Duration::from_millis(retry_ms * 5),
            window: Duration::from_secs(5),
            index: 0,
            source: Source::Backend,
        }
    }

    const MS: u64 = 1_000;

    #[test]
    fn remembers_a_denial_until_its_retry_after() {
        let cache = DenyCache::new(Duration::from_millis(50));
        cache.remember("a", &denial(30), cache.now(), 0, 0);
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
    fn after_expiry_one_check_refreshes_while_the_others_wait() {
        let cache = DenyCache::new(Duration::from_millis(50));
        // Retry after 10 ms, one token per 100 ms.
        cache.remember("a", &denial(10), cache.now(), 100 * MS, 0);
        std::thread::sleep(Duration::from_millis(15));
        assert!(
            cache.get("a").is_none(),
            "the first check after expiry asks Redis"
        );
        let held = cache
            .get("a")
            .expect("the others keep the denial meanwhile");
        assert!(!held.allowed);
        // Redis admitted the refresher and its bucket needs 100 ms for the next token.
        let mut admitted = denial(0);
        admitted.allowed = true;
        cache.remember("a", &admitted, cache.now(), 100 * MS, 100 * MS);
        let derived = cache
            .get("a")
            .expect("an admission that empties the bucket is a denial");
        assert!(derived.retry_after > Duration::from_millis(90));
        // An admission that leaves tokens forgets the denial.
        cache.remember("a", &admitted, cache.now(), 100 * MS, 0);
        assert!(cache.get("a").is_none());
        assert!(cache.is_empty());
    }

    #[test]
    fn the_gate_lets_a_late_client_through() {
        let cache = DenyCache::new(Duration::from_millis(50));
        // Retry after 5 ms, one token per 5 ms: 20 ms later the bucket holds several checks.
        cache.remember("a", &denial(5), cache.now(), 5 * MS, 0);
        std::thread::sleep(Duration::from_millis(20));
        assert!(cache.get("a").is_none());
        assert!(
            cache.get("a").is_none(),
            "beyond one interval after expiry nobody is held"
        );
        // A refresher that never reports holds the others for the deadline at most.
        cache.remember("b", &denial(5), cache.now(), 10_000 * MS, 0);
        std::thread::sleep(Duration::from_millis(6));
        assert!(cache.get("b").is_none());
        assert!(cache.get("b").is_some());
        std::thread::sleep(Duration::from_millis(65));
        assert!(cache.get("b").is_none(), "the lost refresher is replaced");
    }

    #[test]
    fn stays_bounded() {
        let cache = DenyCache::new(Duration::from_millis(50));
        for i in 0..CAPACITY * 2 {
            cache.remember(&format!("k{i}"), &denial(60_000), cache.now(), MS, 0);
        }
        assert!(cache.len() <= CAPACITY, "{}", cache.len());
    }

    #[test]
    fn a_full_cache_of_live_denials_still_takes_a_new_one() {
        let cache = DenyCache::new(Duration::from_millis(50));
        let mut i = 0;
        while cache.len() < CAPACITY {
            cache.remember(&format!("k{i}"), &denial(60_000), cache.now(), MS, 0);
            i += 1;
        }
        // Every shard is full of live denials: a new one replaces one of them.
        for j in 0..100 {
            let id = format!("new{j}");
            cache.remember(&id, &denial(60_000), cache.now(), MS, 0);
            assert!(cache.get(&id).is_some(), "the new denial is remembered");
            assert_eq!(cache.len(), CAPACITY);
        }
        let held: usize = cache
            .shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum();
        assert_eq!(held, CAPACITY, "the count matches the shards");
    }
}
