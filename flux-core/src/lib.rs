//! The rules that Flux's runtime (`flux-ratelimit`, imported as `flux`) and its
//! `#[rate_limit]` and `#[concurrency_limit]` attributes share: the rate grammar ([`Rate`], with
//! its `FromStr`), the bounds of a limit ([`check_limit`]) and of a concurrency limit
//! ([`check_concurrency`], [`parse_lease`]). The attribute runs this code at compile time and the
//! runtime at run time, so both accept the same input and reject it with the same message.
//!
//! Depend on `flux-ratelimit`, which re-exports what applications need; this crate has no
//! dependencies and no behaviour of its own.
//!
//! ```
//! use flux_core::{Rate, check_limit};
//!
//! let rate: Rate = "100 per minute".parse()?;
//! assert_eq!(rate.to_string(), "100/min");
//! assert!(check_limit(rate, 20, 1).is_ok());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod bounds;
mod concurrency;
mod rate;

pub use crate::bounds::{LimitError, MAX_TOLERANCE_US, check_limit};
pub use crate::concurrency::{
    ConcurrencyError, DEFAULT_LEASE, MAX_LEASE, MIN_LEASE, check_concurrency, parse_lease,
};
pub use crate::rate::{Rate, RateError};
