//! Hooks for tests, behind the `testing` feature: not for production code.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), flux::Error> {
//! use flux::{Flux, Limit, Rate};
//!
//! static API: Limit = Limit::new("api", Rate::per_second::<1>());
//! let flux = Flux::builder().build()?;
//! let t0 = 1_000_000;
//! assert!(flux.try_check_at("k", std::slice::from_ref(&API), t0).await?.allowed);
//! assert!(!flux.try_check_at("k", std::slice::from_ref(&API), t0 + 999_999).await?.allowed);
//! assert!(flux.try_check_at("k", std::slice::from_ref(&API), t0 + 1_000_000).await?.allowed);
//! # Ok(()) }
//! ```

use crate::{Decision, Error, Flux, Limit, ToKey};

impl Flux {
    /// [`try_check`](Flux::try_check) at an explicit time, `now_micros` µs, instead of the
    /// backend's clock (Redis' `TIME`, or the in-memory backend's [`Clock`](crate::Clock)):
    /// tests compare the backends, or check exact refill times, on the same arrival times.
    /// Times must not go backwards for one bucket.
    pub async fn try_check_at(
        &self,
        key: impl ToKey,
        limits: &[Limit],
        now_micros: u64,
    ) -> Result<Decision, Error> {
        self.decide(key, limits, Some(now_micros)).await
    }
}
