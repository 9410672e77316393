//! `Limit`: what to enforce, and the GCRA parameters it gives.

use std::borrow::Cow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::num::NonZeroU32;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use flux_core::check_limit;

use flux_core::{LimitError, Rate};

use super::gcra::Params;
use crate::telemetry::Counters;

/// One rate limit: a name (the bucket's identity), a [`Rate`], a burst capacity and a cost.
///
/// Semantics are those of a token bucket that holds at most `burst` tokens and refills
/// continuously at `rate`; each checked request takes `cost` tokens and is admitted only if
/// that many are present. Two limits with the same name share buckets, whatever their rates.
///
/// ```
/// use flux::{Limit, Rate};
///
/// const SEARCH: Limit = Limit::new("search", Rate::per_second::<100>());
/// let search = SEARCH.with_burst(20)?.with_cost(2)?;
/// assert_eq!(search.burst(), 20);
/// assert_eq!(search.cost(), 2);
/// # Ok::<(), flux::limit::LimitError>(())
/// ```
#[derive(Clone)]
pub struct Limit {
    name: Cow<'static, str>,
    rate: Rate,
    burst: NonZeroU32,
    cost: NonZeroU32,
    /// Checks taken from Redis at once and spent by this instance (leasing); 0 or 1: none.
    lease: u32,
    /// This limit's `flux_decisions_total` handles, registered on first use so that a check
    /// costs no label lookup. Not part of the limit's identity.
    counters: OnceLock<Arc<Counters>>,
}

impl PartialEq for Limit {
    fn eq(&self, other: &Limit) -> bool {
        (&self.name, self.rate, self.burst, self.cost, self.lease)
            == (
                &other.name,
                other.rate,
                other.burst,
                other.cost,
                other.lease,
            )
    }
}

impl Eq for Limit {}

impl Hash for Limit {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (&self.name, self.rate, self.burst, self.cost, self.lease).hash(state);
    }
}

impl fmt::Debug for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limit")
            .field("name", &self.name)
            .field("rate", &self.rate)
            .field("burst", &self.burst)
            .field("cost", &self.cost)
            .field("lease", &self.lease)
            .finish()
    }
}

impl Limit {
    /// A limit named `name` at `rate`, with `burst` = the rate's count and `cost` 1.
    pub const fn new(name: &'static str, rate: Rate) -> Limit {
        Limit {
            name: Cow::Borrowed(name),
            rate,
            burst: match NonZeroU32::new(rate.count()) {
                Some(b) => b,
                None => NonZeroU32::MIN,
            },
            cost: NonZeroU32::MIN,
            lease: 0,
            counters: OnceLock::new(),
        }
    }

    /// Like [`Limit::new`], with a name computed at run time.
    pub fn named(name: impl Into<Cow<'static, str>>, rate: Rate) -> Limit {
        Limit {
            name: name.into(),
            ..Limit::new("", rate)
        }
    }

    /// This limit with a bucket capacity of `burst` tokens.
    pub fn with_burst(mut self, burst: u32) -> Result<Limit, LimitError> {
        check_limit(self.rate, burst, self.cost.get())?;
        self.burst = NonZeroU32::new(burst).ok_or(LimitError::ZeroBurst)?;
        Ok(self)
    }

    /// This limit with each checked request taking `cost` tokens.
    pub fn with_cost(mut self, cost: u32) -> Result<Limit, LimitError> {
        check_limit(self.rate, self.burst.get(), cost)?;
        self.cost = NonZeroU32::new(cost).ok_or(LimitError::ZeroCost)?;
        Ok(self)
    }

    /// This limit with token leasing: a check that finds no leased tokens takes up to `lease`
    /// checks' worth from the shared bucket in one Redis call (as many as it holds), and this
    /// instance admits the next ones itself until they run out or expire (after
    /// [`TOKEN_LEASE_LIFETIME`](crate::limit::TOKEN_LEASE_LIFETIME)). A hot key then costs Redis about one call
    /// per `lease` checks; what is leased is out of the bucket, so the fleet never admits more
    /// than the limit, but leased tokens that expire unspent are lost (see the README). `0`
    /// or `1` turns leasing off. Only Redis-backed checks lease, and a check of several limits
    /// leases only when each of them does (the smallest lease applies).
    ///
    /// ```
    /// use flux::{Limit, Rate};
    ///
    /// static HOT: Limit = Limit::new("search", Rate::per_second::<200_000>()).with_lease(100);
    /// assert_eq!(HOT.lease(), 100);
    /// ```
    pub const fn with_lease(mut self, lease: u32) -> Limit {
        self.lease = lease;
        self
    }

    /// Checks taken from Redis at once ([`with_lease`](Self::with_lease)); 0: no leasing.
    pub const fn lease(&self) -> u32 {
        if self.lease > 1 { self.lease } else { 0 }
    }

    /// For `#[rate_limit]` (through the macros' support module), which has validated every
    /// argument at compile time (a bad one here fails the build: the `static` is evaluated
    /// at compile time).
    pub(crate) const fn from_macro(
        name: &'static str,
        count: u32,
        period_us: u64,
        burst: u32,
        cost: u32,
    ) -> Limit {
        let Some(rate) = Rate::from_parts(count, period_us) else {
            panic!("flux: invalid rate from #[rate_limit]");
        };
        let (Some(burst_nz), Some(cost_nz)) = (NonZeroU32::new(burst), NonZeroU32::new(cost))
        else {
            panic!("flux: zero burst or cost from #[rate_limit]");
        };
        if check_limit(rate, burst, cost).is_err() {
            panic!("flux: invalid limit from #[rate_limit]");
        }
        Limit {
            name: Cow::Borrowed(name),
            rate,
            burst: burst_nz,
            cost: cost_nz,
            lease: 0,
            counters: OnceLock::new(),
        }
    }

    /// The bucket's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name as stored: borrowed for limits built in `const` context.
    pub(crate) fn name_cow(&self) -> &Cow<'static, str> {
        &self.name
    }

    /// This limit's metrics handles.
    pub(crate) fn counters(&self) -> &Counters {
        self.counters.get_or_init(|| Arc::new(Counters::default()))
    }

    /// The sustained rate.
    pub const fn rate(&self) -> Rate {
        self.rate
    }

    /// The bucket's capacity in tokens.
    pub const fn burst(&self) -> u32 {
        self.burst.get()
    }

    /// Tokens each checked request takes.
    pub const fn cost(&self) -> u32 {
        self.cost.get()
    }

    /// GCRA parameters, all in microseconds.
    pub(crate) const fn params(&self) -> Params {
        let interval = self.rate.emission_interval_micros();
        Params {
            interval,
            tolerance: interval * self.burst.get() as u64,
            increment: interval * self.cost.get() as u64,
        }
    }

    /// Time for an empty bucket to fill up again: the window of the `RateLimit-Policy` field.
    pub const fn window(&self) -> Duration {
        Duration::from_micros(self.params().tolerance)
    }
}
