//! `Rate`: how many requests per period, and its text form ("100/s", "5/10s", "6000 per minute").
//!
//! The runtime parses rates with this code and `#[rate_limit]` runs the very same code at
//! compile time, so the attribute accepts exactly what `Rate::from_str` accepts, with the
//! same messages.

use std::fmt;
use std::num::{NonZeroU32, NonZeroU64};
use std::str::FromStr;
use std::time::Duration;

/// A sustained rate: `count` requests per `period`.
///
/// Text form: `COUNT/PERIOD` or `COUNT per PERIOD`, where `PERIOD` is an optional positive
/// integer followed by a unit: `ms`, `s` (`sec`, `second`), `m` (`min`, `minute`), `h`
/// (`hr`, `hour`), `d` (`day`); plurals and surrounding spaces are accepted.
///
/// ```
/// use flux_core::Rate;
/// use std::time::Duration;
///
/// let rate: Rate = "5/10s".parse()?;
/// assert_eq!(rate.count(), 5);
/// assert_eq!(rate.period(), Duration::from_secs(10));
/// assert_eq!("100 per minute".parse::<Rate>()?.to_string(), "100/min");
/// assert!("100/fortnight".parse::<Rate>().is_err());
/// # Ok::<(), flux_core::RateError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rate {
    count: NonZeroU32,
    period_us: NonZeroU64,
}

/// Why a rate string (or count and period) is not a valid [`Rate`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RateError {
    /// The text is not `COUNT/PERIOD` or `COUNT per PERIOD`.
    Syntax(String),
    /// The count is zero or not a number that fits in 32 bits.
    Count(String),
    /// The period's unit is not one of the known units.
    Unit(String),
    /// The period is zero or longer than a year.
    Period(String),
    /// More than one request per microsecond: Flux measures time in microseconds.
    TooFast(String),
}

impl fmt::Display for RateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RateError::Syntax(s) => write!(
                f,
                "invalid rate {s:?}: expected COUNT/PERIOD such as \"100/s\", \"5/10s\", \"6000/min\" or \"10 per hour\""
            ),
            RateError::Count(s) => write!(
                f,
                "invalid rate count {s:?}: expected a whole number from 1 to {}",
                u32::MAX
            ),
            RateError::Unit(s) => write!(
                f,
                "unknown rate unit {s:?}: expected one of ms, s, sec, second, m, min, minute, h, hr, hour, d, day"
            ),
            RateError::Period(s) => write!(
                f,
                "invalid rate period {s:?}: expected a period from 1 ms to 365 days"
            ),
            RateError::TooFast(s) => write!(
                f,
                "rate {s:?} is faster than one request per microsecond, the finest step Flux measures"
            ),
        }
    }
}

impl std::error::Error for RateError {}

/// The longest period a rate may have: 365 days, in microseconds.
const MAX_PERIOD_US: u64 = 365 * 86_400 * 1_000_000;

/// Microseconds in a second, a minute, an hour and a day.
const SECOND_US: u64 = 1_000_000;
const MINUTE_US: u64 = 60 * SECOND_US;
const HOUR_US: u64 = 60 * MINUTE_US;
const DAY_US: u64 = 24 * HOUR_US;

impl Rate {
    /// A rate of `count` per `period`.
    ///
    /// Fails when the period is shorter than 1 ms or longer than 365 days, or when the rate
    /// is faster than one per microsecond.
    ///
    /// ```
    /// use flux_core::Rate;
    /// use std::num::NonZeroU32;
    /// use std::time::Duration;
    ///
    /// let rate = Rate::new(NonZeroU32::new(100).unwrap(), Duration::from_secs(1))?;
    /// assert_eq!(rate.to_string(), "100/s");
    /// # Ok::<(), flux_core::RateError>(())
    /// ```
    pub fn new(count: NonZeroU32, period: Duration) -> Result<Rate, RateError> {
        let us = period.as_micros();
        if !(1_000..=u128::from(MAX_PERIOD_US)).contains(&us) {
            return Err(RateError::Period(format!("{period:?}")));
        }
        Rate::from_parts(count.get(), us as u64)
            .ok_or_else(|| RateError::TooFast(format!("{count}/{period:?}")))
    }

    /// `count` per `period_us` microseconds, or `None` where [`Rate::new`] would fail.
    ///
    /// ```
    /// use flux_core::Rate;
    ///
    /// assert_eq!(Rate::from_parts(5, 10_000_000).map(|r| r.to_string()), Some("5/10s".into()));
    /// assert!(Rate::from_parts(0, 1_000_000).is_none());
    /// assert!(Rate::from_parts(2_000_000, 1_000_000).is_none(), "faster than 1/µs");
    /// ```
    pub const fn from_parts(count: u32, period_us: u64) -> Option<Rate> {
        if period_us < 1_000 || period_us > MAX_PERIOD_US || count as u64 > period_us {
            return None;
        }
        match (NonZeroU32::new(count), NonZeroU64::new(period_us)) {
            (Some(count), Some(period_us)) => Some(Rate { count, period_us }),
            _ => None,
        }
    }

    /// `N` per second, checked at compile time: `N` = 0 or `N` above 1,000,000 (faster than
    /// one per microsecond) does not build. For a count known only at run time, use
    /// [`Rate::new`] or parse a string.
    ///
    /// ```
    /// use flux_core::Rate;
    ///
    /// const SEARCH: Rate = Rate::per_second::<100>();
    /// assert_eq!(SEARCH.to_string(), "100/s");
    /// ```
    ///
    /// ```compile_fail
    /// const NEVER: flux_core::Rate = flux_core::Rate::per_second::<0>();
    /// ```
    pub const fn per_second<const N: u32>() -> Rate {
        const { Rate::checked(N, SECOND_US) }
    }

    /// `N` per minute, checked at compile time (see [`Rate::per_second`]).
    ///
    /// ```
    /// assert_eq!(flux_core::Rate::per_minute::<5>().to_string(), "5/min");
    /// ```
    pub const fn per_minute<const N: u32>() -> Rate {
        const { Rate::checked(N, MINUTE_US) }
    }

    /// `N` per hour, checked at compile time (see [`Rate::per_second`]).
    ///
    /// ```
    /// assert_eq!(flux_core::Rate::per_hour::<1000>().to_string(), "1000/hour");
    /// ```
    pub const fn per_hour<const N: u32>() -> Rate {
        const { Rate::checked(N, HOUR_US) }
    }

    /// `N` per day, checked at compile time (see [`Rate::per_second`]).
    ///
    /// ```
    /// assert_eq!(flux_core::Rate::per_day::<10_000>().to_string(), "10000/day");
    /// ```
    pub const fn per_day<const N: u32>() -> Rate {
        const { Rate::checked(N, DAY_US) }
    }

    /// For the shorthands, evaluated at compile time: a bad count fails the build with this
    /// message.
    const fn checked(count: u32, period_us: u64) -> Rate {
        match Rate::from_parts(count, period_us) {
            Some(rate) => rate,
            None if count == 0 => panic!("a rate's count must be at least 1"),
            None => panic!(
                "the rate is faster than one request per microsecond, the finest step Flux measures"
            ),
        }
    }

    /// Requests admitted per [`period`](Self::period) when the bucket is empty and refilling.
    pub const fn count(&self) -> u32 {
        self.count.get()
    }

    /// The period over which [`count`](Self::count) requests are admitted.
    pub const fn period(&self) -> Duration {
        Duration::from_micros(self.period_us.get())
    }

    /// The period in microseconds.
    pub const fn period_micros(&self) -> u64 {
        self.period_us.get()
    }

    /// The GCRA emission interval: microseconds between two tokens, rounded up so that the
    /// limiter never admits faster than the stated rate.
    pub const fn emission_interval_micros(&self) -> u64 {
        self.period_us.get().div_ceil(self.count.get() as u64)
    }
}

impl FromStr for Rate {
    type Err = RateError;

    fn from_str(text: &str) -> Result<Rate, RateError> {
        let syntax = || RateError::Syntax(text.to_owned());
        let trimmed = text.trim();
        let (count, period) = match trimmed.split_once('/') {
            Some(parts) => parts,
            None => {
                // "100 per second": the separator must be a whole word.
                let lower = trimmed.to_ascii_lowercase();
                let at = lower.find(" per ").ok_or_else(syntax)?;
                (&trimmed[..at], &trimmed[at + " per ".len()..])
            }
        };
        let count = count.trim();
        let count = count
            .parse::<u32>()
            .ok()
            .and_then(NonZeroU32::new)
            .ok_or_else(|| RateError::Count(count.to_owned()))?;

        let period = period.trim();
        if period.is_empty() {
            return Err(syntax());
        }
        let unit = unit_of(period);
        if unit_micros(unit).is_none() {
            return Err(RateError::Unit(unit.to_owned()));
        }
        let period_us = period_micros(period)
            .filter(|us| (1_000..=MAX_PERIOD_US).contains(us))
            .ok_or_else(|| RateError::Period(period.to_owned()))?;
        if u64::from(count.get()) > period_us {
            return Err(RateError::TooFast(text.to_owned()));
        }
        let period_us =
            NonZeroU64::new(period_us).ok_or_else(|| RateError::Period(period.to_owned()))?;
        Ok(Rate { count, period_us })
    }
}

/// A period such as `"10s"`, `"min"` (one), `"500ms"` or `"2 hours"`, in microseconds: an
/// optional whole number, then a unit. `None` when it is not one (an unknown unit, or more
/// microseconds than a `u64` holds). Shared by rates and by a concurrency limit's lease.
pub(crate) fn period_micros(period: &str) -> Option<u64> {
    let period = period.trim();
    let digits = period.len()
        - period
            .trim_start_matches(|c: char| c.is_ascii_digit())
            .len();
    let (amount, unit) = period.split_at(digits);
    let amount: u64 = if amount.is_empty() {
        1
    } else {
        amount.parse().ok()?
    };
    amount.checked_mul(unit_micros(unit_of(unit))?)
}

/// The unit part of a period: what follows its digits.
pub(crate) fn unit_of(period: &str) -> &str {
    period
        .trim()
        .trim_start_matches(|c: char| c.is_ascii_digit())
        .trim()
}

fn unit_micros(unit: &str) -> Option<u64> {
    let unit = unit.to_ascii_lowercase();
    let unit = unit.as_str();
    // Accept plurals of the long forms ("seconds", "mins", "hours").
    let singular = unit
        .strip_suffix('s')
        .filter(|u| u.len() > 1)
        .unwrap_or(unit);
    Some(match (unit, singular) {
        ("ms", _) | (_, "msec" | "millisecond") => 1_000,
        ("s", _) | (_, "sec" | "second") => SECOND_US,
        ("m", _) | (_, "min" | "minute") => MINUTE_US,
        ("h", _) | (_, "hr" | "hour") => HOUR_US,
        ("d", _) | (_, "day") => DAY_US,
        _ => return None,
    })
}

impl fmt::Display for Rate {
    /// The canonical text form, which parses back to the same rate.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, &str); 5] = [
            (DAY_US, "day"),
            (HOUR_US, "hour"),
            (MINUTE_US, "min"),
            (SECOND_US, "s"),
            (1_000, "ms"),
        ];
        let us = self.period_us.get();
        write!(f, "{}/", self.count)?;
        for (unit_us, name) in UNITS {
            if us.is_multiple_of(unit_us) {
                let amount = us / unit_us;
                return if amount == 1 {
                    f.write_str(name)
                } else {
                    write!(f, "{amount}{name}")
                };
            }
        }
        // Unreachable for parsed rates (periods are whole milliseconds), kept total.
        write!(f, "{}ms", us.div_ceil(1_000))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Rate, RateError> {
        s.parse()
    }

    #[test]
    fn accepts_the_documented_forms() {
        for (text, count, secs) in [
            ("100/s", 100, 1),
            ("5/10s", 5, 10),
            ("6000/min", 6000, 60),
            ("1000/hour", 1000, 3600),
            ("10000/day", 10000, 86_400),
            ("10 per second", 10, 1),
            ("10 PER Minute", 10, 60),
            (" 7 / 2 hours ", 7, 7200),
            ("3/sec", 3, 1),
            ("3/m", 3, 60),
            ("3/h", 3, 3600),
            ("3/hr", 3, 3600),
            ("3/d", 3, 86_400),
            ("3/days", 3, 86_400),
            ("3/mins", 3, 60),
        ] {
            let rate = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(rate.count(), count, "{text}");
            assert_eq!(rate.period(), Duration::from_secs(secs), "{text}");
        }
        assert_eq!(
            parse("1/500ms").map(|r| r.period()),
            Ok(Duration::from_millis(500))
        );
    }

    #[test]
    fn rejects_bad_strings_with_the_reason() {
        assert!(matches!(parse("100"), Err(RateError::Syntax(_))));
        assert!(matches!(
            parse(""),
            Err(RateError::Count(_)) | Err(RateError::Syntax(_))
        ));
        assert!(matches!(parse("0/s"), Err(RateError::Count(_))));
        assert!(matches!(parse("-1/s"), Err(RateError::Count(_))));
        assert!(matches!(parse("abc/s"), Err(RateError::Count(_))));
        assert!(matches!(parse("99999999999/s"), Err(RateError::Count(_))));
        assert!(matches!(parse("1/fortnight"), Err(RateError::Unit(_))));
        assert!(matches!(parse("1/0s"), Err(RateError::Period(_))));
        assert!(matches!(parse("1/"), Err(RateError::Syntax(_))));
        assert!(matches!(parse("1/400day"), Err(RateError::Period(_))));
        assert!(matches!(parse("2000000/s"), Err(RateError::TooFast(_))));
        let message = parse("1/fortnight").unwrap_err().to_string();
        assert!(
            message.contains("fortnight") && message.contains("min"),
            "{message}"
        );
    }

    #[test]
    fn display_round_trips() {
        for text in [
            "100/s",
            "5/10s",
            "6000/min",
            "1000/hour",
            "10000/day",
            "1/500ms",
            "7/2hour",
            "1/90s",
        ] {
            let rate = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(rate.to_string(), text);
            assert_eq!(parse(&rate.to_string()), Ok(rate));
        }
    }

    #[test]
    fn emission_interval_rounds_up() {
        assert_eq!(
            parse("100/s").map(|r| r.emission_interval_micros()),
            Ok(10_000)
        );
        assert_eq!(
            parse("3/s").map(|r| r.emission_interval_micros()),
            Ok(333_334)
        );
    }

    /// Text shaped like a rate: a count, a separator and a period, each drawn from what the
    /// grammar accepts and what it must refuse (so that most cases get past the first check).
    fn rate_like() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let count = prop_oneof!["[0-9]{1,11}", "[+-]?[0-9 ]{0,4}", "\\PC{0,3}"];
        let separator = prop_oneof![
            Just("/"),
            Just(" per "),
            Just(" PER "),
            Just("//"),
            Just(" ")
        ];
        let amount = prop_oneof!["[0-9]{0,21}", Just(String::new())];
        let unit = prop_oneof![
            "(ms|s|sec|second|seconds|m|min|mins|minute|h|hr|hour|hours|d|day|days|msec)",
            "[a-zA-Z]{0,3}",
            "\\PC{0,3}",
        ];
        (count, separator, amount, " {0,2}", unit, " {0,2}")
            .prop_map(|(c, s, a, sp, u, tail)| format!("{c}{s}{a}{sp}{u}{tail}"))
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4_096))]

        #[test]
        fn any_text_parses_or_is_refused_without_panic(text in "\\PC{0,40}") {
            if let Ok(rate) = parse(&text) {
                proptest::prop_assert_eq!(parse(&rate.to_string()), Ok(rate));
            }
        }

        #[test]
        fn a_parsed_rate_round_trips_through_display(text in rate_like()) {
            if let Ok(rate) = parse(&text) {
                let shown = rate.to_string();
                proptest::prop_assert_eq!(parse(&shown), Ok(rate), "{:?} -> {}", text, shown);
                // Display is canonical: the text it gives is its own display.
                proptest::prop_assert_eq!(parse(&shown).map(|r| r.to_string()), Ok(shown));
            }
        }

        #[test]
        fn every_valid_rate_round_trips_through_display(
            count in 1u32..=u32::MAX,
            period_ms in 1u64..=365 * 86_400_000,
        ) {
            if let Some(rate) = Rate::from_parts(count, period_ms * 1_000) {
                proptest::prop_assert_eq!(parse(&rate.to_string()), Ok(rate));
            }
        }
    }
}
