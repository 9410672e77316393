//! Token leasing for hot keys (opt-in per limit: `lease = N`, [`Limit::with_lease`]).
//!
//! An admitted hot key costs one Redis call per check, and all of them go to the one shard
//! that holds the key. With a lease, a check that finds no leased tokens asks Redis for up to
//! `N` checks' worth in one script call: the script takes as many as the bucket holds (see
//! the model's `gcra::decide_up_to`), at least one or none (a denial, as without leasing). This instance
//! admits the current check and keeps the others, and the next checks of the same client and
//! limits spend them without asking Redis, until they run out or the lease expires
//! ([`TOKEN_LEASE_LIFETIME`]).
//!
//! - **Never more than the bucket.** Leased tokens are taken out of the shared bucket when
//!   leased, so over any period the fleet admits at most what the bucket gave out. Within a
//!   short window, checks may spend tokens leased just before it: the bound of a window of
//!   length `t` becomes `burst + rate x t` plus the tokens held at its start, at most `N` per
//!   instance (and at most `rate x` [`TOKEN_LEASE_LIFETIME`]).
//! - **Fewer, at worst.** Tokens still leased when the lease expires are lost: at most `N - 1`
//!   per instance and lease, which happens only to an instance whose traffic for that key
//!   stopped (a busy one spends its lease in far less than its lifetime).
//! - **One refill at a time.** When the lease runs out, one check per instance asks Redis and
//!   the others of that moment wait for its answer, then spend what it brought: Redis sees
//!   about one call per `N` checks, whatever the number of concurrent callers.
//! - **The deny cache** still answers denials: an empty lease and a remembered denial deny at
//!   once; a refill that takes the bucket's last tokens is remembered as a denial until the
//!   next one is earned, while this instance spends what it leased.
//! - **A flushed, restarted or failed-over Redis** starts from full buckets; leases held by
//!   the instances are spent and expire as usual (they were taken from a bucket that no
//!   longer exists), after which the instances lease from the new one.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::model::decision::{Decision, Source};
use crate::model::limit::Limit;

/// How long leased tokens may be spent after Redis gave them: long enough that a busy
/// instance never sees its lease expire, short enough that tokens taken from the bucket are
/// spent about when the bucket gave them out.
pub const TOKEN_LEASE_LIFETIME: Duration = Duration::from_millis(500);

const SHARDS: usize = 16;
const MIN_SWEEP_LEN: usize = 256;

/// Checks to lease at once for a check of `limits`: the smallest lease among them when each
/// has one, else 1 (no leasing).
pub(crate) fn want(limits: &[Limit]) -> u64 {
    limits
        .iter()
        .map(|l| u64::from(l.lease()))
        .min()
        .filter(|&n| n > 1)
        .unwrap_or(1)
}

/// This instance's leases, by check identity (its buckets and costs, as the deny cache's).
pub(crate) struct Leases {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    origin: Instant,
}

struct Shard {
    leases: HashMap<Box<str>, Arc<Lease>>,
    sweep_at: usize,
}

/// The tokens leased for one check, and the gate that lets one check at a time refill them.
pub(crate) struct Lease {
    held: Mutex<Held>,
    refill: Arc<tokio::sync::Mutex<()>>,
}

struct Held {
    /// Checks this instance may still admit.
    checks: u64,
    /// Until when (µs since the store's origin) they may be spent.
    until: u64,
    /// Redis' answer to the refill, for the fields of the decisions spent from it.
    decision: Option<Decision>,
}

impl Leases {
    pub(crate) fn new() -> Leases {
        Leases {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        leases: HashMap::new(),
                        sweep_at: MIN_SWEEP_LEN,
                    })
                })
                .collect(),
            hasher: RandomState::new(),
            origin: Instant::now(),
        }
    }

    fn now(&self) -> u64 {
        self.origin.elapsed().as_micros() as u64
    }

    fn shard(&self, id: &str) -> &Mutex<Shard> {
        &self.shards[self.hasher.hash_one(id) as usize % SHARDS]
    }

    /// The lease of check `id`, made if there is none.
    fn lease(&self, id: &str) -> Arc<Lease> {
        let mut shard = self
            .shard(id)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(lease) = shard.leases.get(id) {
            return Arc::clone(lease);
        }
        if shard.leases.len() >= shard.sweep_at {
            // Expired leases nobody is refilling carry nothing.
            let now = self.now();
            shard
                .leases
                .retain(|_, l| Arc::strong_count(l) > 1 || l.held().until > now);
            shard.sweep_at = (shard.leases.len() * 2).max(MIN_SWEEP_LEN);
        }
        let lease = Arc::new(Lease {
            held: Mutex::new(Held {
                checks: 0,
                until: 0,
                decision: None,
            }),
            refill: Arc::new(tokio::sync::Mutex::new(())),
        });
        shard.leases.insert(id.into(), Arc::clone(&lease));
        lease
    }

    /// Admits check `id` from its lease, or returns what the check must do: ask Redis for a
    /// new lease with the returned [`Refill`] (only one check of this instance at a time gets
    /// one; the others wait for its answer and spend what it brought).
    pub(crate) async fn spend_or_refill(&self, id: &str) -> Result<Decision, Refill<'_>> {
        let lease = self.lease(id);
        if let Some(decision) = lease.spend(self.now()) {
            return Ok(decision);
        }
        let gate = Arc::clone(&lease.refill).lock_owned().await;
        if let Some(decision) = lease.spend(self.now()) {
            return Ok(decision);
        }
        Err(Refill {
            leases: self,
            lease,
            _gate: gate,
        })
    }

    /// Leases held now, expired or not (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .leases
                    .len()
            })
            .sum()
    }
}

impl Lease {
    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes one check from the lease if one is held and unexpired.
    fn spend(&self, now: u64) -> Option<Decision> {
        let mut held = self.held();
        if held.checks == 0 || held.until <= now {
            return None;
        }
        held.checks -= 1;
        let mut decision = held.decision.clone()?;
        decision.remaining = decision
            .remaining
            .saturating_add(u32::try_from(held.checks).unwrap_or(u32::MAX));
        decision.source = Source::Leased;
        Some(decision)
    }
}

/// The right to refill one lease, held while its check asks Redis.
pub(crate) struct Refill<'a> {
    leases: &'a Leases,
    lease: Arc<Lease>,
    _gate: tokio::sync::OwnedMutexGuard<()>,
}

impl Refill<'_> {
    /// Redis admitted the check with `taken` checks (this one included), deciding as in
    /// `decision`, from a call sent at `sent` ([`Refill::sent`]): the others are this
    /// instance's to spend until the lease expires.
    pub(crate) fn fill(self, taken: u64, decision: &Decision, sent: u64) {
        let mut held = self.lease.held();
        held.checks = taken.saturating_sub(1);
        held.until = sent + TOKEN_LEASE_LIFETIME.as_micros() as u64;
        held.decision = Some(decision.clone());
    }

    /// Now, on the leases' clock: taken before the call, so a lease never outlives its time.
    pub(crate) fn sent(&self) -> u64 {
        self.leases.now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flux_core::Rate;

    fn admitted(remaining: u32) -> Decision {
        Decision {
            allowed: true,
            shadow_denied: false,
            capacity: 100,
            remaining,
            retry_after: Duration::ZERO,
            reset_after: Duration::from_millis(10),
            window: Duration::from_secs(1),
            index: 0,
            source: Source::Backend,
        }
    }

    #[test]
    fn the_smallest_lease_of_a_stack_applies() {
        let a = Limit::new("a", Rate::per_second::<100>()).with_lease(10);
        let b = Limit::new("b", Rate::per_second::<100>()).with_lease(4);
        let none = Limit::new("c", Rate::per_second::<100>());
        assert_eq!(want(&[a.clone(), b.clone()]), 4);
        assert_eq!(want(std::slice::from_ref(&a)), 10);
        assert_eq!(want(&[a, none]), 1);
        assert_eq!(want(&[b.with_lease(1)]), 1);
    }

    #[tokio::test]
    async fn spends_what_a_refill_brought_then_refills_again() {
        let leases = Leases::new();
        let Err(refill) = leases.spend_or_refill("k").await else {
            panic!("nothing leased yet");
        };
        let sent = refill.sent();
        refill.fill(3, &admitted(50), sent);
        for left in [1, 0] {
            let spent = leases.spend_or_refill("k").await.ok().expect("leased");
            assert_eq!(spent.source, Source::Leased);
            assert_eq!(spent.remaining, 50 + left);
        }
        assert!(leases.spend_or_refill("k").await.is_err(), "used up");
        assert!(leases.spend_or_refill("other").await.is_err());
        assert_eq!(leases.len(), 2);
    }

    #[tokio::test]
    async fn leases_expire() {
        let leases = Leases::new();
        let Err(refill) = leases.spend_or_refill("k").await else {
            panic!("nothing leased yet");
        };
        // Sent a lifetime ago: already expired.
        refill.fill(10, &admitted(0), 0);
        tokio::time::sleep(TOKEN_LEASE_LIFETIME + Duration::from_millis(5)).await;
        assert!(leases.spend_or_refill("k").await.is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_refill_at_a_time() {
        let leases = Arc::new(Leases::new());
        let Err(refill) = leases.spend_or_refill("k").await else {
            panic!("nothing leased yet");
        };
        // Another check of that moment waits for the refill, then spends from it.
        let other = {
            let leases = Arc::clone(&leases);
            tokio::spawn(async move { leases.spend_or_refill("k").await.is_ok() })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!other.is_finished(), "waits for the refill");
        let sent = refill.sent();
        refill.fill(2, &admitted(5), sent);
        assert!(other.await.expect("task"), "spent what the refill brought");
    }
}
