//! The token bucket, stored as GCRA (the Generic Cell Rate Algorithm).
//!
//! A bucket that holds at most `burst` tokens and refills one token every *emission interval*
//! `T = period / count` is fully described by one instant, the **theoretical arrival time**
//! (`tat`): the moment at which the bucket would be full again. With *tolerance*
//! `tau = burst x T` (the time an empty bucket takes to fill), at time `now`:
//!
//! * the bucket holds `(tau - (tat - now)) / T` tokens (`tat` below `now` counts as `now`);
//! * a request costing `c` tokens has *increment* `c x T`; it is admitted iff
//!   `max(tat, now) + c x T - now <= tau`, and then `tat` becomes `max(tat, now) + c x T`;
//! * a denied request changes nothing; it could be admitted after
//!   `max(tat, now) + c x T - tau - now`.
//!
//! Worked example: `rate = "10/s"`, `burst = 3` gives `T = 100 ms`, `tau = 300 ms`. Three
//! requests at `t = 0` move `tat` to 100, 200, 300 ms (remaining 2, 1, 0); a fourth at
//! `t = 0` would need `tat = 400 ms`, 100 ms over `tau`: denied, retry after 100 ms. At
//! `t = 150 ms` a request is admitted (`tat` 300 -> 400, `400 - 150 = 250 <= 300`).
//!
//! All quantities are integer microseconds, so this Rust code and `lua/gcra.lua` compute
//! the very same numbers (Lua's doubles hold integers exactly up to 2^53; `Limit` keeps
//! `tau` below 10 years). The stored value is `tat` and a key expires when its bucket is
//! full again, `tat - now` after the write: idle clients cost nothing.
//!
//! Several limits are decided together, all or nothing: every bucket is evaluated, and only
//! if each admits is any of them charged.
//!
//! A **lease** (`decide_up_to`) takes up to `want` checks at once, as many as every bucket
//! holds: `k = min(want, min over buckets of (now + tau - tat) / increment)`; `k = 0` is a
//! denial as above, and otherwise each `tat` moves by `k x increment`. The instance spends the
//! `k - 1` checks beyond the current one itself (see the hot keys' leases): they are out of the bucket.

/// One limit's GCRA parameters, in microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Params {
    /// `T`: time to earn one token.
    pub(crate) interval: u64,
    /// `tau = burst x T`: time for an empty bucket to fill.
    pub(crate) tolerance: u64,
    /// `cost x T`: what one request adds to `tat`.
    pub(crate) increment: u64,
}

/// The outcome for one bucket of a (possibly multi-limit) check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Bucket {
    /// Whole tokens left after this check (after charging, if the whole check was admitted).
    pub(crate) remaining: u64,
    /// Zero when this bucket alone would admit; otherwise the wait until it would.
    pub(crate) retry_after: u64,
    /// Time until this bucket is full again.
    pub(crate) reset_after: u64,
}

/// Decides one check over `tats` (the stored values, `None` for an absent key) at `now`.
///
/// Returns whether the check is admitted and fills `out` with one [`Bucket`] per limit. On
/// admission, `tats` holds the values to store (each with a time to live of
/// `reset_after`); on denial `tats` is unchanged.
pub(crate) fn decide(
    now: u64,
    params: &[Params],
    tats: &mut [Option<u64>],
    out: &mut Vec<Bucket>,
) -> bool {
    decide_up_to(now, params, tats, out, 1) == 1
}

/// [`decide`], taking up to `want` (at least 1) checks at once, as many as every bucket
/// holds: returns how many were taken, 0 for a denial. On admission the buckets in `out`
/// are as they stand after all of them.
pub(crate) fn decide_up_to(
    now: u64,
    params: &[Params],
    tats: &mut [Option<u64>],
    out: &mut Vec<Bucket>,
    want: u64,
) -> u64 {
    debug_assert_eq!(params.len(), tats.len());
    out.clear();
    // Checks every bucket holds: `tat + k x increment - tau <= now`.
    let taken = params
        .iter()
        .zip(tats.iter())
        .map(|(p, stored)| {
            let tat = stored.map_or(now, |t| t.max(now));
            (now + p.tolerance).saturating_sub(tat) / p.increment.max(1)
        })
        .fold(want.max(1), u64::min);
    for (p, stored) in params.iter().zip(tats.iter()) {
        let tat = stored.map_or(now, |t| t.max(now));
        let new_tat = tat + p.increment * taken.max(1);
        let allow_at = new_tat.saturating_sub(p.tolerance);
        if allow_at > now {
            out.push(Bucket {
                remaining: p.tolerance.saturating_sub(tat - now) / p.interval,
                retry_after: allow_at - now,
                reset_after: tat - now,
            });
        } else {
            out.push(Bucket {
                remaining: (p.tolerance - (new_tat - now)) / p.interval,
                retry_after: 0,
                reset_after: new_tat - now,
            });
        }
    }
    if taken > 0 {
        for (p, stored) in params.iter().zip(tats.iter_mut()) {
            *stored = Some(stored.map_or(now, |t| t.max(now)) + p.increment * taken);
        }
    } else {
        // Nothing is charged: report every bucket as it stands.
        for ((p, stored), bucket) in params.iter().zip(tats.iter()).zip(out.iter_mut()) {
            let tat = stored.map_or(now, |t| t.max(now));
            bucket.remaining = p.tolerance.saturating_sub(tat - now) / p.interval;
            bucket.reset_after = tat - now;
        }
    }
    taken
}

/// The most one settlement adds to `tat`: 10 years, the longest bucket a limit may have.
pub(crate) const MAX_CHARGE: u64 = flux_core::MAX_TOLERANCE_US;

/// The tolerance of a settlement: the most a client may owe, 20 years past now. A charge is
/// admitted (recorded) whenever the debt after it stays within this, which any charge of a
/// client less than 10 years in debt does; beyond that the client is locked out for years
/// and a further charge is dropped. Every quantity stays exact in Lua's doubles (now + 30
/// years < 2^53 µs).
const DEBT_TOLERANCE: u64 = 2 * MAX_CHARGE;

/// The parameters that settle `cost` tokens on a bucket of `real`'s limit, into debt if need
/// be: the same GCRA step with a tolerance no charge reaches, so that it is admitted and `tat`
/// moves by `cost x T` (at most [`MAX_CHARGE`]) wherever it stood. Read the outcome with
/// [`settled`].
pub(crate) fn debt(real: Params, cost: u64) -> Params {
    Params {
        interval: real.interval,
        tolerance: DEBT_TOLERANCE,
        increment: cost.saturating_mul(real.interval).min(MAX_CHARGE),
    }
}

/// A bucket as [`decide`] reported it under [`debt`]'s parameters, told against the limit's
/// real tolerance: tokens left (none while in debt), and the wait until the next request of
/// the limit's own cost is admitted (`reset_after + increment - tau`, past the debt).
pub(crate) fn settled(real: Params, bucket: Bucket) -> Bucket {
    let backlog = bucket.reset_after;
    Bucket {
        remaining: real.tolerance.saturating_sub(backlog) / real.interval,
        retry_after: (backlog + real.increment).saturating_sub(real.tolerance),
        reset_after: backlog,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A limit's parameters from its emission interval (µs), burst and cost.
    pub(crate) fn params(interval: u64, burst: u64, cost: u64) -> Params {
        Params {
            interval,
            tolerance: interval * burst,
            increment: interval * cost,
        }
    }

    #[test]
    fn worked_example_from_the_module_docs() {
        let p = [params(100_000, 3, 1)];
        let mut tat = [None];
        let mut out = Vec::new();
        for remaining in [2, 1, 0] {
            assert!(decide(0, &p, &mut tat, &mut out));
            assert_eq!(out[0].remaining, remaining);
        }
        assert!(!decide(0, &p, &mut tat, &mut out));
        assert_eq!(out[0].retry_after, 100_000);
        assert_eq!(out[0].reset_after, 300_000);
        assert_eq!(tat, [Some(300_000)]);
        assert!(decide(150_000, &p, &mut tat, &mut out));
        assert_eq!(tat, [Some(400_000)]);
    }

    #[test]
    fn denial_charges_no_bucket() {
        let p = [params(1_000, 10, 1), params(1_000, 2, 1)];
        let mut tats = [None, None];
        let mut out = Vec::new();
        assert!(decide(0, &p, &mut tats, &mut out));
        assert!(decide(0, &p, &mut tats, &mut out));
        assert!(!decide(0, &p, &mut tats, &mut out));
        assert_eq!(tats, [Some(2_000), Some(2_000)]);
        assert_eq!(out[0].remaining, 8);
        assert_eq!(out[0].retry_after, 0);
        assert_eq!(out[1].remaining, 0);
        assert_eq!(out[1].retry_after, 1_000);
    }

    #[test]
    fn a_lease_takes_what_every_bucket_holds() {
        // 10 tokens and 4 tokens: a lease of 6 checks of cost 1 gets 4.
        let p = [params(1_000, 10, 1), params(1_000, 4, 1)];
        let mut tats = [None, None];
        let mut out = Vec::new();
        assert_eq!(decide_up_to(0, &p, &mut tats, &mut out, 6), 4);
        assert_eq!(tats, [Some(4_000), Some(4_000)]);
        assert_eq!((out[0].remaining, out[1].remaining), (6, 0));
        // Nothing left in the second: a denial, nothing charged.
        assert_eq!(decide_up_to(500, &p, &mut tats, &mut out, 6), 0);
        assert_eq!(tats, [Some(4_000), Some(4_000)]);
        assert_eq!(out[1].retry_after, 500);
        // One token later, one check.
        assert_eq!(decide_up_to(1_000, &p, &mut tats, &mut out, 6), 1);
        // A lease of 1 is a plain check, cost 2 counts twice.
        let p = [params(1_000, 5, 2)];
        let mut tat = [None];
        assert_eq!(decide_up_to(0, &p, &mut tat, &mut out, 1), 1);
        assert_eq!(decide_up_to(0, &p, &mut tat, &mut out, 9), 1);
        assert_eq!(tat, [Some(4_000)]);
    }

    #[test]
    fn cost_above_the_tokens_present_waits_for_all_of_them() {
        let p = [params(1_000, 5, 3)];
        let mut tat = [None];
        let mut out = Vec::new();
        assert!(decide(0, &p, &mut tat, &mut out));
        assert_eq!(out[0].remaining, 2);
        assert!(!decide(0, &p, &mut tat, &mut out));
        assert_eq!(out[0].retry_after, 1_000);
        assert!(decide(1_000, &p, &mut tat, &mut out));
        assert_eq!(out[0].remaining, 0);
    }

    #[test]
    fn a_settlement_goes_into_debt_and_the_next_request_waits_it_out() {
        // 10 tokens a second, burst 5: T = 100 ms, tau = 500 ms.
        let real = params(100_000, 5, 1);
        let mut tat = [None];
        let mut out = Vec::new();
        // 3 tokens up front, then 9 more settled after the response: 12 in all, 7 past
        // the burst.
        assert!(decide(0, &[params(100_000, 5, 3)], &mut tat, &mut out));
        assert!(decide(0, &[debt(real, 9)], &mut tat, &mut out));
        let bucket = settled(real, out[0]);
        assert_eq!(tat, [Some(1_200_000)]);
        assert_eq!(bucket.remaining, 0);
        // The next request needs tat - tau + T <= now: 1.2 s - 0.5 s + 0.1 s.
        assert_eq!(bucket.retry_after, 800_000);
        assert!(!decide(799_999, &[real], &mut tat, &mut out));
        assert_eq!(out[0].retry_after, 1);
        assert!(decide(800_000, &[real], &mut tat, &mut out));
    }

    #[test]
    fn a_settlement_within_the_burst_reports_what_is_left() {
        let real = params(100_000, 5, 1);
        let mut tat = [None];
        let mut out = Vec::new();
        assert!(decide(0, &[debt(real, 2)], &mut tat, &mut out));
        assert_eq!(settled(real, out[0]).remaining, 3);
        assert_eq!(settled(real, out[0]).retry_after, 0);
    }

    #[test]
    fn debt_is_capped_and_never_overflows() {
        let real = params(1_000_000, 5, 1);
        let huge = debt(real, u64::MAX);
        assert_eq!(huge.increment, MAX_CHARGE);
        let mut tat = [None];
        let mut out = Vec::new();
        let now = 1_700_000_000_000_000; // µs since 1970, as Redis' TIME gives
        assert!(decide(now, &[huge], &mut tat, &mut out));
        assert!(decide(now, &[huge], &mut tat, &mut out));
        // A third would owe more than the debt tolerance: not recorded.
        assert!(!decide(now, &[huge], &mut tat, &mut out));
        assert_eq!(tat, [Some(now + DEBT_TOLERANCE)]);
        assert!(now + DEBT_TOLERANCE + MAX_CHARGE < 1 << 53);
    }
}
