//! The bounds of a limit: what a `(rate, burst, cost)` triple must satisfy.
//!
//! `flux::Limit`'s constructors and `#[rate_limit]` (at compile time) both call
//! [`check_limit`], so a limit the attribute accepts is exactly one the runtime accepts, and
//! a rejected one gets the same message from both.

use std::fmt;

use crate::Rate;

/// The longest bucket Flux keeps, in microseconds: `burst` x emission interval may not exceed
/// about 10 years, so that every quantity stays an exact integer in Redis' Lua (doubles, exact
/// to 2^53) and in `u64`.
pub const MAX_TOLERANCE_US: u64 = 10 * 365 * 86_400 * 1_000_000;

/// Why a limit (a rate with a burst and a cost) cannot be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    /// `burst` x emission interval is longer than Flux keeps a bucket ([`MAX_TOLERANCE_US`]).
    BucketTooLong {
        /// The requested burst.
        burst: u32,
    },
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
            LimitError::BucketTooLong { burst } => write!(
                f,
                "burst {burst} at this rate takes more than 10 years to refill \
                 (burst x period / count): lower the burst or raise the rate"
            ),
        }
    }
}

impl std::error::Error for LimitError {}

/// Checks a limit's numbers: `burst` and `cost` at least 1, `cost` at most `burst`, and a
/// bucket that refills from empty within [`MAX_TOLERANCE_US`].
///
/// ```
/// use flux_core::{LimitError, Rate, check_limit};
///
/// let rate = Rate::per_second::<10>();
/// assert_eq!(check_limit(rate, 20, 1), Ok(()));
/// assert_eq!(check_limit(rate, 2, 3), Err(LimitError::CostAboveBurst { cost: 3, burst: 2 }));
/// assert_eq!(check_limit(rate, 0, 1), Err(LimitError::ZeroBurst));
/// let slow: Rate = "1/365day".parse()?;
/// assert_eq!(check_limit(slow, 11, 1), Err(LimitError::BucketTooLong { burst: 11 }));
/// # Ok::<(), flux_core::RateError>(())
/// ```
pub const fn check_limit(rate: Rate, burst: u32, cost: u32) -> Result<(), LimitError> {
    if burst == 0 {
        return Err(LimitError::ZeroBurst);
    }
    if cost == 0 {
        return Err(LimitError::ZeroCost);
    }
    if cost > burst {
        return Err(LimitError::CostAboveBurst { cost, burst });
    }
    match (burst as u64).checked_mul(rate.emission_interval_micros()) {
        Some(tolerance) if tolerance <= MAX_TOLERANCE_US => Ok(()),
        _ => Err(LimitError::BucketTooLong { burst }),
    }
}
