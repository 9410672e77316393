//! The bounds of a concurrency limit: at most `max` requests in flight per client, each slot
//! held under a lease that its holder renews and that frees it when the holder dies.
//!
//! `flux::ConcurrencyLimit`'s constructors and `#[concurrency_limit]` (at compile time) both
//! call [`check_concurrency`] and [`parse_lease`], so both accept the same input and reject
//! it with the same message.

use std::fmt;
use std::time::Duration;

use crate::rate::{period_micros, unit_of};

/// The lease of a slot when none is given: how long a slot held by a crashed instance stays
/// taken. A live holder renews its lease every third of it, so handlers may run longer.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// The shortest lease: renewals every third of it must stay well above Redis' round trip.
pub const MIN_LEASE: Duration = Duration::from_millis(300);

/// The longest lease: a crashed instance's slots are free again within a day at most.
pub const MAX_LEASE: Duration = Duration::from_secs(86_400);

/// Why a concurrency limit (a `max` with a lease) cannot be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConcurrencyError {
    /// `max` was zero: nothing could ever run.
    ZeroMax,
    /// The lease text is not a duration such as `"30s"`, `"500ms"` or `"2min"`.
    LeaseSyntax,
    /// The lease is shorter than [`MIN_LEASE`] or longer than [`MAX_LEASE`].
    LeaseRange(Duration),
}

impl fmt::Display for ConcurrencyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConcurrencyError::ZeroMax => f.write_str("max must be at least 1"),
            ConcurrencyError::LeaseSyntax => f.write_str(
                "invalid lease: expected a whole number and a unit, such as \"30s\", \"500ms\" or \"2min\"",
            ),
            ConcurrencyError::LeaseRange(lease) => write!(
                f,
                "lease {lease:?} is out of range: from {MIN_LEASE:?} to {MAX_LEASE:?} \
                 (it is how long a crashed instance's slots stay taken)"
            ),
        }
    }
}

impl std::error::Error for ConcurrencyError {}

/// Parses a lease: a whole number and a unit, as a rate's period (`"30s"`, `"500ms"`,
/// `"2min"`, `"1 hour"`), within [`MIN_LEASE`]..=[`MAX_LEASE`].
///
/// ```
/// use flux_core::parse_lease;
/// use std::time::Duration;
///
/// assert_eq!(parse_lease("500ms")?, Duration::from_millis(500));
/// assert_eq!(parse_lease("2 min")?, Duration::from_secs(120));
/// assert!(parse_lease("10ms").is_err());
/// assert!(parse_lease("soon").is_err());
/// # Ok::<(), flux_core::ConcurrencyError>(())
/// ```
pub fn parse_lease(text: &str) -> Result<Duration, ConcurrencyError> {
    if unit_of(text).is_empty() {
        return Err(ConcurrencyError::LeaseSyntax);
    }
    let lease = Duration::from_micros(period_micros(text).ok_or(ConcurrencyError::LeaseSyntax)?);
    check_concurrency(1, lease)?;
    Ok(lease)
}

/// Checks a concurrency limit's numbers: `max` at least 1, the lease within
/// [`MIN_LEASE`]..=[`MAX_LEASE`].
///
/// ```
/// use flux_core::{ConcurrencyError, check_concurrency};
/// use std::time::Duration;
///
/// assert!(check_concurrency(10, Duration::from_secs(30)).is_ok());
/// assert_eq!(check_concurrency(0, Duration::from_secs(30)), Err(ConcurrencyError::ZeroMax));
/// ```
pub const fn check_concurrency(max: u32, lease: Duration) -> Result<(), ConcurrencyError> {
    if max == 0 {
        return Err(ConcurrencyError::ZeroMax);
    }
    let us = lease.as_micros();
    if us < MIN_LEASE.as_micros() || us > MAX_LEASE.as_micros() {
        return Err(ConcurrencyError::LeaseRange(lease));
    }
    Ok(())
}
