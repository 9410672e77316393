//! `Limit` (what to enforce), `Decision` (what was decided) and `RateLimited` (a denial as an error).

use std::borrow::Cow;
use std::fmt;
use std::num::NonZeroU32;
use std::time::Duration;

use crate::Rate;

use crate::rate::MAX_TOLERANCE_US;

/// One rate limit: a name (the bucket's identity), a [`Rate`], a burst capacity and a cost.
///
/// Semantics are those of a token bucket that holds at most `burst` tokens and refills
/// continuously at `rate`; each checked request takes `cost` tokens and is admitted only if
/// that many are present. Two limits with the same name share buckets, whatever their rates.
///
/// ```
/// use flux::{Limit, Rate};
///
/// const SEARCH: Limit = Limit::new("search", Rate::per_second(100));
/// let search = SEARCH.with_burst(20)?.with_cost(2)?;
/// assert_eq!(search.burst(), 20);
/// assert_eq!(search.cost(), 2);
/// # Ok::<(), flux::LimitError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Limit {
    name: Cow<'static, str>,
    rate: Rate,
    burst: NonZeroU32,
    cost: NonZeroU32,
}

/// Why a [`Limit`] cannot be built.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LimitError {
    /// `burst` was zero: such a bucket could never admit anything.
    ZeroBurst,
    /// `cost` was zero.
    ZeroCost,
    /// `cost` exceeds `burst`: every request would be denied forever.
    CostAboveBurst {
        /// The requested cost.
        cost: u32,
        /// The bucket's capacity.
        burst: u32,
    },
    /// `burst` x emission interval is longer than Flux keeps a bucket (about 10 years).
    BucketTooLong,
}

impl fmt::Display for LimitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitError::ZeroBurst => f.write_str("burst must be at least 1"),
            LimitError::ZeroCost => f.write_str("cost must be at least 1"),
            LimitError::CostAboveBurst { cost, burst } => write!(
                f,
                "cost {cost} is larger than burst {burst}: such a request could never be admitted"
            ),
            LimitError::BucketTooLong => f.write_str(
                "burst x (period / count) exceeds 10 years: lower the burst or raise the rate",
            ),
        }
    }
}

impl std::error::Error for LimitError {}

/// What is wrong with these numbers, if anything.
const fn check(rate: Rate, burst: u32, cost: u32) -> Option<LimitError> {
    if cost > burst {
        return Some(LimitError::CostAboveBurst { cost, burst });
    }
    match (burst as u64).checked_mul(rate.emission_interval_micros()) {
        Some(t) if t <= MAX_TOLERANCE_US => None,
        _ => Some(LimitError::BucketTooLong),
    }
}

impl Rate {
    /// `count` per second (a `const` shorthand; `count` 0 is treated as 1).
    pub const fn per_second(count: u32) -> Rate {
        Self::const_of(count, 1_000_000)
    }

    /// `count` per minute (a `const` shorthand; `count` 0 is treated as 1).
    pub const fn per_minute(count: u32) -> Rate {
        Self::const_of(count, 60_000_000)
    }

    /// `count` per hour (a `const` shorthand; `count` 0 is treated as 1).
    pub const fn per_hour(count: u32) -> Rate {
        Self::const_of(count, 3_600_000_000)
    }

    /// `count` per day (a `const` shorthand; `count` 0 is treated as 1).
    pub const fn per_day(count: u32) -> Rate {
        Self::const_of(count, 86_400_000_000)
    }

    const fn const_of(count: u32, period_us: u64) -> Rate {
        let count = if count == 0 { 1 } else { count };
        match Rate::from_parts(count, period_us) {
            Some(rate) => rate,
            // Only reachable above 1,000,000/s: clamp to the fastest rate Flux measures.
            None => match Rate::from_parts(1_000_000, 1_000_000) {
                Some(rate) => rate,
                None => panic!("1,000,000/s is a valid rate"),
            },
        }
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
        self.burst = NonZeroU32::new(burst).ok_or(LimitError::ZeroBurst)?;
        check(self.rate, self.burst.get(), self.cost.get()).map_or(Ok(self), Err)
    }

    /// This limit with each checked request taking `cost` tokens.
    pub fn with_cost(mut self, cost: u32) -> Result<Limit, LimitError> {
        self.cost = NonZeroU32::new(cost).ok_or(LimitError::ZeroCost)?;
        check(self.rate, self.burst.get(), self.cost.get()).map_or(Ok(self), Err)
    }

    /// For `#[rate_limit]`, which has validated every argument at compile time (a bad one
    /// here fails the build: the `static` is evaluated at compile time).
    #[doc(hidden)]
    pub const fn __from_macro(
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
        if check(rate, burst, cost).is_some() {
            panic!("flux: invalid limit from #[rate_limit]");
        }
        Limit {
            name: Cow::Borrowed(name),
            rate,
            burst: burst_nz,
            cost: cost_nz,
        }
    }

    /// The bucket's name.
    pub fn name(&self) -> &str {
        &self.name
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
    pub(crate) const fn params(&self) -> crate::gcra::Params {
        let interval = self.rate.emission_interval_micros();
        crate::gcra::Params {
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

/// Where a [`Decision`] came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Source {
    /// The configured backend (Redis, or the in-memory backend when it is the one configured).
    Backend,
    /// A denial Redis gave moments ago for the same check, remembered by this instance until
    /// its `retry_after` (the hot-key deny cache): Redis was not asked again.
    Cached,
    /// Redis was unavailable and the `Local` policy decided with a per-process bucket.
    Local,
    /// Redis was unavailable and the `Open` policy admitted the request unchecked.
    FailOpen,
    /// Redis was unavailable and the `Closed` policy refused the request (HTTP 503).
    FailClosed,
}

/// The answer to one check of one or several limits for one client key.
///
/// With several limits the check is all or nothing, and the fields describe the limit that
/// matters most: the one that denied with the longest wait, or, when admitted, the one with
/// the fewest tokens left.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Decision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// The deciding limit's bucket capacity (its burst).
    pub limit: u32,
    /// Whole tokens left in the deciding bucket after this request.
    pub remaining: u32,
    /// Zero when allowed; otherwise how long until the request's cost would be admitted.
    pub retry_after: Duration,
    /// How long until the deciding bucket is full again.
    pub reset_after: Duration,
    /// Time for the deciding bucket to refill from empty.
    pub window: Duration,
    /// Index, in the checked list, of the deciding limit.
    pub index: usize,
    /// Whether Redis, a local fallback or a failure policy produced this decision.
    pub source: Source,
}

impl Decision {
    /// A decision made without any bucket (a failure policy's answer).
    pub(crate) fn unchecked(allowed: bool, source: Source) -> Decision {
        Decision {
            allowed,
            limit: 0,
            remaining: 0,
            retry_after: Duration::ZERO,
            reset_after: Duration::ZERO,
            window: Duration::ZERO,
            index: 0,
            source,
        }
    }

    /// `Ok(self)` when allowed, otherwise the denial as a [`RateLimited`] error.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use flux::{Flux, Limit, Rate};
    ///
    /// static OUTBOUND: Limit = Limit::new("outbound", Rate::per_second(1));
    /// let flux = Flux::builder().memory().build()?;
    /// flux.check("tenant-42", &OUTBOUND).await.into_result()?;
    /// let denied = flux.check("tenant-42", &OUTBOUND).await.into_result();
    /// assert!(denied.is_err_and(|e| e.retry_after().as_millis() > 900));
    /// # Ok(()) }
    /// ```
    pub fn into_result(self) -> Result<Decision, RateLimited> {
        if self.allowed {
            Ok(self)
        } else {
            Err(RateLimited { decision: self })
        }
    }
}

/// A denial, as an error: what a rate-limited plain `async fn` returns (through `From`).
///
/// ```
/// let err: Box<dyn std::error::Error> = Box::new(flux::RateLimited::default());
/// assert!(err.to_string().contains("rate limit"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimited {
    decision: Decision,
}

impl RateLimited {
    /// The denial's details: when to retry, which limit, how it was decided.
    pub fn decision(&self) -> &Decision {
        &self.decision
    }

    /// How long to wait before the same call can be admitted (zero when the denial came from
    /// the `Closed` failure policy, where nobody knows).
    pub fn retry_after(&self) -> Duration {
        self.decision.retry_after
    }
}

impl Default for RateLimited {
    fn default() -> Self {
        RateLimited {
            decision: Decision::unchecked(false, Source::Backend),
        }
    }
}

impl fmt::Display for RateLimited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.decision.source == Source::FailClosed {
            f.write_str(
                "rate limiter unavailable and the failure policy is closed: request refused",
            )
        } else {
            write!(
                f,
                "rate limit exceeded: retry after {:.3}s",
                self.decision.retry_after.as_secs_f64()
            )
        }
    }
}

impl std::error::Error for RateLimited {}

impl From<RateLimited> for Decision {
    fn from(err: RateLimited) -> Decision {
        err.decision
    }
}
