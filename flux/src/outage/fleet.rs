//! The fleet: how many live instances share this limiter's Redis, and each one's share of a
//! limit while Redis is unavailable.
//!
//! Every Redis-backed [`Flux`](crate::Flux) whose checks may fall back to `Local` (its
//! policy, or a check's own) announces itself with a heartbeat (the Redis store's):
//! a background task, started by the first such check, that calls
//! `lua/fleet.lua` once a second and learns the number `N` of instances whose heartbeat has
//! not expired (3 s). When Redis becomes unavailable, the `Local` failure policy limits each
//! instance to its share of every limit, so that the fleet as a whole stays near the limit
//! instead of admitting `N` times it; `N` is the last count seen, since no new one can be
//! had during the outage.
//!
//! The share of a limit of `rate` and `burst`, for a request of `cost` tokens:
//!
//! * the rate is `rate / N` exactly: one token every `N` emission intervals;
//! * the burst is `burst / N` rounded **up**, and at least `cost`: a limit whose burst is
//!   smaller than the fleet still admits one request per instance at once, rather than none.
//!   So the fleet admits at most `burst + N - 1` requests at once (the shared bucket:
//!   `burst`), then `rate` a second, as the shared bucket would.
//!
//! Before the first heartbeat has answered, `N` is unknown and each instance limits alone,
//! as without a fleet.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use crate::model::gcra::Params;
use crate::telemetry;

/// What this limiter knows of its fleet, shared with its heartbeat task.
pub(crate) struct Fleet {
    /// This limiter's member in the fleet's set: unique per limiter.
    id: String,
    /// Live instances at the last heartbeat, this one included; 0 before the first.
    size: AtomicU32,
    /// Whether a heartbeat task runs (it clears this when it ends, also with its runtime).
    running: AtomicBool,
}

impl Fleet {
    pub(crate) fn new() -> Fleet {
        use std::hash::BuildHasher;
        use std::sync::atomic::AtomicU64;
        static NEXT: AtomicU64 = AtomicU64::new(0);
        // Random per process (the hasher's keys), and a counter for limiters of one process.
        let seed = std::hash::RandomState::new().hash_one(std::process::id());
        Fleet {
            id: format!("{seed:016x}-{}", NEXT.fetch_add(1, Ordering::Relaxed)),
            size: AtomicU32::new(0),
            running: AtomicBool::new(false),
        }
    }

    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// Live instances at the last heartbeat that Redis answered; `None` before the first.
    pub(crate) fn size(&self) -> Option<u32> {
        match self.size.load(Ordering::Relaxed) {
            0 => None,
            n => Some(n),
        }
    }

    /// Records the count of a heartbeat.
    pub(crate) fn record(&self, live: u32) {
        let live = live.max(1);
        let before = self.size.swap(live, Ordering::Relaxed);
        if before != live {
            tracing::debug!(target: "flux", instances = live, "fleet size changed");
            telemetry::fleet_instances(live);
        }
    }

    /// Claims the right to start the heartbeat task: true for exactly one caller until the
    /// task ends.
    pub(crate) fn claim(&self) -> bool {
        !self.running.load(Ordering::Relaxed)
            && self
                .running
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
    }

    /// Whether the heartbeat task runs.
    pub(crate) fn is_running(&self) -> bool {
        self.running.load(Ordering::Relaxed)
    }

    /// The heartbeat task ended (its runtime shut down, or the limiter was dropped).
    pub(crate) fn stopped(&self) {
        self.running.store(false, Ordering::Release);
    }
}

/// One instance's share of every limit of a check when the fleet has `live` instances.
pub(crate) fn share_all(params: &[Params], live: Option<u32>) -> Vec<Params> {
    params.iter().map(|&p| share(p, live)).collect()
}

/// One instance's share of a limit (see the module docs for the rounding).
pub(crate) fn share(p: Params, live: Option<u32>) -> Params {
    let n = u64::from(live.unwrap_or(1));
    if n <= 1 || p.interval == 0 {
        return p;
    }
    let burst = p.tolerance / p.interval;
    let cost = p.increment / p.interval;
    let interval = p.interval.saturating_mul(n);
    Params {
        interval,
        tolerance: burst.div_ceil(n).max(cost).saturating_mul(interval),
        increment: cost.saturating_mul(interval),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::gcra::decide;
    use crate::model::gcra::tests::params;

    /// Requests of `p` admitted at once, then over `secs` seconds of one request per ms.
    fn admitted(p: Params, secs: u64) -> u64 {
        let (mut tat, mut out, mut n) = ([None], Vec::new(), 0);
        for ms in 0..=secs * 1_000 {
            while decide(ms * 1_000, &[p], &mut tat, &mut out) {
                n += 1;
            }
        }
        n
    }

    #[test]
    fn three_instances_share_ten_a_second() {
        // 10/s, burst 10: each of 3 instances gets 10/3 per second and a burst of 4.
        let p = params(100_000, 10, 1);
        let s = share(p, Some(3));
        assert_eq!(s.interval, 300_000);
        assert_eq!(s.tolerance, 4 * 300_000);
        assert_eq!(s.increment, 300_000);
        // Over 5 s the fleet admits 3 x (4 + 16) = 60 against 10 + 50 for one bucket
        // (floors of the integer refills), not 3 x 60.
        assert_eq!(admitted(s, 5) * 3, 3 * (4 + 16));
        assert_eq!(admitted(p, 5), 60);
    }

    #[test]
    fn a_small_limit_still_admits_something() {
        // Burst 1 over 5 instances: one at once each, one every 5 intervals.
        let s = share(params(1_000, 1, 1), Some(5));
        assert_eq!(
            (s.interval, s.tolerance, s.increment),
            (5_000, 5_000, 5_000)
        );
        // A cost of 3 with burst 4 over 4 instances: the share holds one request.
        let s = share(params(1_000, 4, 3), Some(4));
        assert_eq!(s.tolerance, 3 * s.interval);
        assert_eq!(s.increment, 3 * s.interval);
    }

    #[test]
    fn alone_or_unknown_is_the_whole_limit() {
        let p = params(1_000, 7, 2);
        assert_eq!(share(p, None), p);
        assert_eq!(share(p, Some(1)), p);
    }

    #[test]
    fn one_claim_until_stopped() {
        let fleet = Fleet::new();
        assert!(fleet.claim());
        assert!(!fleet.claim());
        fleet.stopped();
        assert!(fleet.claim());
        assert_eq!(fleet.size(), None);
        fleet.record(3);
        assert_eq!(fleet.size(), Some(3));
        assert_ne!(Fleet::new().id(), fleet.id());
    }
}
