//! `Decision` (what a check decided), `Source` (who decided it) and `RateLimited` (a denial
//! as an error).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::gcra::Bucket;
use super::limit::Limit;
use crate::telemetry::SourceLabel;

/// Where a [`Decision`] came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Source {
    /// The configured backend (Redis, or the in-memory backend when it is the one configured).
    Backend,
    /// A denial Redis gave moments ago for the same check, remembered by this instance until
    /// its `retry_after` (the hot-key deny cache): Redis was not asked again.
    Cached,
    /// Admitted from tokens this instance leased from Redis moments ago (a limit with
    /// [`Limit::with_lease`](crate::Limit::with_lease)): Redis was not asked.
    Leased,
    /// Redis was unavailable and the `Local` policy decided with a per-process bucket.
    Local,
    /// Redis was unavailable and the `Open` policy admitted the request unchecked.
    FailOpen,
    /// Redis was unavailable and the `Closed` policy refused the request (HTTP 503).
    FailClosed,
    /// The request is exempt: no limit was checked.
    Exempt,
    /// The request's cost, computed per request (`#[rate_limit(cost = EXPR)]`), can never
    /// be admitted: zero, or more than a limit's burst. It was refused without asking any
    /// backend, and [`RateLimited::reason`] says why.
    Unadmissible,
}

impl Source {
    /// The `source` label of a decision from here; `redis`: whether the backend is Redis.
    pub(crate) fn label(self, redis: bool) -> SourceLabel {
        match self {
            Source::Backend if redis => SourceLabel::Redis,
            Source::Backend => SourceLabel::Memory,
            Source::Cached => SourceLabel::DenyCache,
            Source::Local => SourceLabel::FallbackLocal,
            Source::FailOpen => SourceLabel::FallbackOpen,
            Source::FailClosed => SourceLabel::FallbackClosed,
            Source::Exempt | Source::Unadmissible => SourceLabel::None,
            Source::Leased => SourceLabel::Lease,
        }
    }
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
    /// The limits denied this request, but the check ran in shadow mode and admitted it
    /// (`allowed` is then true).
    pub shadow_denied: bool,
    /// The deciding limit's bucket capacity (its burst): the `q` of `RateLimit-Policy`.
    pub capacity: u32,
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
            shadow_denied: false,
            capacity: 0,
            remaining: 0,
            retry_after: Duration::ZERO,
            reset_after: Duration::ZERO,
            window: Duration::ZERO,
            index: 0,
            source,
        }
    }

    /// One decision from per-bucket outcomes: on denial the bucket with the longest wait, on
    /// admission the one with the fewest tokens left. `buckets[i]` is `limits[i]`'s.
    pub(crate) fn summarize(
        allowed: bool,
        buckets: &[Bucket],
        limits: &[Limit],
        source: Source,
    ) -> Decision {
        let index = if allowed {
            (0..buckets.len()).min_by_key(|&i| buckets[i].remaining)
        } else {
            (0..buckets.len()).max_by_key(|&i| (buckets[i].retry_after, std::cmp::Reverse(i)))
        }
        .unwrap_or(0);
        let Some(bucket) = buckets.get(index) else {
            // No limits at all: nothing to enforce.
            return Decision::unchecked(true, source);
        };
        let limit = &limits[index];
        Decision {
            allowed,
            capacity: limit.burst(),
            remaining: u32::try_from(bucket.remaining).unwrap_or(u32::MAX),
            shadow_denied: false,
            retry_after: Duration::from_micros(bucket.retry_after),
            reset_after: Duration::from_micros(bucket.reset_after),
            window: limit.window(),
            index,
            source,
        }
    }

    /// `Ok(self)` when allowed, otherwise the denial as a [`RateLimited`] error.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use flux::{Flux, Limit, Rate};
    ///
    /// static OUTBOUND: Limit = Limit::new("outbound", Rate::per_second::<1>());
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
            Err(RateLimited {
                decision: self,
                reason: None,
            })
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
    /// Why a request was refused without asking any bucket ([`Source::Unadmissible`]).
    reason: Option<Arc<str>>,
}

impl RateLimited {
    /// The refusal of a request that no bucket can admit, for `reason`.
    pub(crate) fn unadmissible(decision: Decision, reason: Arc<str>) -> RateLimited {
        RateLimited {
            decision,
            reason: Some(reason),
        }
    }

    /// Why the request can never be admitted, when its computed cost is zero or above a
    /// limit's burst (then [`Decision::source`] is [`Source::Unadmissible`]); `None` for a
    /// plain denial, which a later retry can pass.
    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }

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
            reason: None,
        }
    }
}

impl fmt::Display for RateLimited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(reason) = &self.reason {
            write!(f, "rate limit refused the request: {reason}")
        } else if self.decision.source == Source::FailClosed {
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
