//! # Flux: distributed rate limiting in one line
//!
//! The package is `flux-ratelimit`; the library is imported as `flux`:
//!
//! ```toml
//! [dependencies]
//! flux-ratelimit = "0.1"
//! ```
//!
//! ```
//! use axum::{Router, extract::Query, response::IntoResponse, routing::get};
//! use flux::rate_limit;
//! # #[derive(serde::Deserialize)] struct Params { q: String }
//!
//! #[rate_limit(rate = "100/s", burst = 20, key = "ip")]
//! async fn search(Query(params): Query<Params>) -> impl IntoResponse {
//!     format!("results for {}", params.q)
//! }
//!
//! let app: Router = Router::new().route("/search", get(search));
//! ```
//!
//! Every instance of the service shares one token bucket per (limit, client) in Redis. Each
//! check is **one atomic Lua script call** (`gcra.lua`): no read-then-write race, however
//! many instances and requests. Admitted requests get the handler's response with the
//! RateLimit header fields; denied ones `429 Too Many Requests` with `Retry-After`.
//!
//! ## The algorithm
//!
//! A limit is a token bucket of capacity `burst`, refilled continuously at `rate`; a request
//! takes `cost` tokens and is admitted only if that many are present. Flux stores it as GCRA:
//! one integer per (limit, client), the *theoretical arrival time* in microseconds of the
//! Redis server's clock (app servers' clocks never matter), with a time to live equal to the
//! time until the bucket is full again, so idle clients cost no memory. Worked example, for
//! `rate = "10/s", burst = 3`: the emission interval is 100 ms; three requests at once are
//! admitted (remaining 2, 1, 0), a fourth is denied with `retry_after` = 100 ms, and one
//! more token is earned every 100 ms after that. See the `gcra` module source for the math.
//!
//! Several limits checked together (stacked `#[rate_limit]` attributes, or
//! [`Flux::check_all`]) are decided in one call, all or nothing: if one denies, none is charged.
//!
//! ## Tiers and costs known later
//!
//! `#[rate_limit(limit = user.plan.limit(), cost = body.items.len(), key = user.id)]` takes
//! the limit and the cost from each request (a cost no bucket can admit is refused with its
//! reason, see [`RateLimited::reason`]), and [`Flux::charge`] settles a cost known only after
//! the response, into debt: the client's next requests wait until it has refilled.
//!
//! ## When Redis is slow or down
//!
//! Every Redis call has a deadline (default 50 ms). After 3 consecutive failures a circuit
//! breaker opens: checks stop calling Redis and the [`FailurePolicy`] answers at once
//! (`Open` admits, `Closed` refuses with 503, `Local` limits each instance to its share of the
//! fleet, counted by heartbeats in Redis); one probe every
//! 500 ms closes it again when Redis answers. Each change is logged once, not per request.
//!
//! ## Without the macro
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use flux::{Flux, Limit, Rate};
//!
//! static PER_TENANT: Limit = Limit::new("outbound", Rate::per_second::<5>());
//! let flux = Flux::builder().build()?; // or .redis("redis://127.0.0.1/")
//! let decision = flux.check("tenant-7", &PER_TENANT).await;
//! if decision.allowed {
//!     // call the upstream API
//! } else {
//!     println!("retry in {:?}", decision.retry_after);
//! }
//! # Ok(()) }
//! ```
//!
//! ## Configuration
//!
//! [`Flux::builder`] configures a limiter and [`Builder::install`] makes it the process-wide
//! one. Without `install`, the first check builds one from the environment
//! ([`Builder::from_env`]): `FLUX_REDIS_URL` set means Redis; unset means the in-memory
//! backend, announced by one WARN log, so examples run with no Redis at all.
//!
//! A `#[rate_limit]` handler uses the [`Flux`] its request carries (put there by
//! [`FluxLayer::flux`] or `axum::Extension(flux)`) and the process-wide one only when it
//! carries none, so several limiters (tenants, tests) live in one process.
//!
//! ## Router-wide limits, operations, tests
//!
//! - [`FluxLayer`]: the same limits over a whole router or any `http` service.
//! - Metrics through the `metrics` facade (`flux_decisions_total`, ...), shadow mode
//!   ([`Builder::shadow`], `mode = "shadow"`), exemptions ([`Builder::exempt_ips`],
//!   `exempt = EXPR`), [`Flux::health`] for readiness probes, one DEBUG event per denial.
//! - The `testing` feature: `flux::testing::memory()`, an in-memory limiter on tokio's clock,
//!   to prove a handler's limit in a unit test with `tokio::time::advance`.
//!
//! ## Where things are
//!
//! The types most code needs are at the root. The rest, by concern: [`http`] (the layer,
//! header fields, the client's address), [`concurrency`] (concurrency limits and slots),
//! [`overrides`] (limits changed at runtime), [`health`], [`config`] (the builder's settings),
//! [`decision`] (what a check or a charge answered), [`limit`], [`key`], [`clock`] and
//! [`error`] (what can fail, as data to match on).

mod hot;
mod limiter;
mod model;
mod outage;
mod store;
mod telemetry;

pub mod concurrency;
pub mod error;
pub mod http;
pub mod overrides;
#[cfg(feature = "testing")]
pub mod testing;

// The types most users need.
pub use crate::error::Error;
pub use crate::http::FluxLayer;
pub use crate::limiter::{Builder, Flux};
pub use crate::model::decision::{Decision, RateLimited};
pub use crate::model::key::Key;
pub use crate::model::limit::Limit;
pub use crate::outage::policy::FailurePolicy;
pub use flux_core::Rate;
pub use flux_macros::{concurrency_limit, rate_limit};

/// Limits: [`Limit`] and [`Rate`], their errors, leasing, and the cap on names built at run time.
pub mod limit {
    pub use crate::hot::lease::TOKEN_LEASE_LIFETIME;
    pub use crate::model::limit::Limit;
    pub use crate::telemetry::MAX_LIMIT_NAMES;
    pub use flux_core::{LimitError, Rate, RateError};
}

/// Client keys: what identifies a client, and how a value becomes one.
pub mod key {
    pub use crate::model::key::{Key, MAX_PLAIN_KEY_LEN, ToKey};
}

/// What a check or a charge answered: [`Decision`], who decided it ([`Source`](crate::decision::Source)), a denial
/// as an error ([`RateLimited`]), and what a charge did ([`Charged`](crate::decision::Charged)).
pub mod decision {
    pub use crate::limiter::Charged;
    pub use crate::model::decision::{Decision, RateLimited, Source};
}

/// Configuring a limiter: [`Builder`], the circuit breaker's settings, the failure policy, the
/// header believed from trusted proxies.
pub mod config {
    pub use crate::limiter::{
        Builder, DEFAULT_DEADLINE, DEFAULT_MEMORY_MAX_BUCKETS, MIN_MEMORY_MAX_BUCKETS,
    };
    pub use crate::model::client::ClientIpHeader;
    pub use crate::outage::breaker::BreakerConfig;
    pub use crate::outage::policy::FailurePolicy;
}

/// What a readiness probe reads: [`Flux::health`](crate::Flux::health).
pub mod health {
    pub use crate::outage::health::{Health, LastError, OpenCircuit};
}

/// Clocks of the in-memory backend (tests drive a [`ManualClock`](crate::clock::ManualClock)).
pub mod clock {
    pub use crate::model::clock::{Clock, ManualClock, MonotonicClock};
}

// Not public API: the support code of the attributes' expansion.
#[doc(hidden)]
pub mod __private;
