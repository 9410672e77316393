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

mod admin;
mod breaker;
mod builder;
mod concurrency;
mod decision;
mod deny_cache;
mod error;
mod fleet;
mod gcra;
mod health;
mod http;
mod key;
mod layer;
mod lease;
mod limit;
mod limiter;
mod memory;
mod overrides;
mod overrides_file;
mod per_request;
mod policy;
mod proxy;
mod redis_store;
mod registry;
mod settle;
mod slots;
mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;

pub use crate::breaker::BreakerConfig;
pub use crate::builder::{Builder, DEFAULT_DEADLINE, DenyResponse};
pub use crate::concurrency::{CONCURRENCY_RETRY_AFTER, ConcurrencyLimit, ConcurrencyLimited, Slot};
pub use crate::decision::{Decision, RateLimited, Source};
pub use crate::error::Error;
pub use crate::health::{Health, LastError, OpenCircuit};
pub use crate::http::{ClientIp, RATELIMIT, RATELIMIT_POLICY};
pub use crate::key::{Key, MAX_PLAIN_KEY_LEN, ToKey};
pub use crate::layer::{FluxLayer, FluxService};
pub use crate::lease::TOKEN_LEASE_LIFETIME;
pub use crate::limit::Limit;
pub use crate::limiter::Flux;
pub use crate::memory::{Clock, ManualClock, MonotonicClock};
pub use crate::overrides::{Override, Setting};
pub use crate::policy::FailurePolicy;
// Not public API: switches batches between one script call and a pipeline, for side-by-side
// benchmarks.
#[doc(hidden)]
pub use crate::redis_store::set_one_call_batches;
pub use crate::settle::Charged;
pub use flux_core::{
    ConcurrencyError, DEFAULT_LEASE, LimitError, MAX_LEASE, MIN_LEASE, Rate, RateError,
};

pub use flux_macros::{concurrency_limit, rate_limit};

// Not public API: the support code of `#[rate_limit]`'s expansion.
#[doc(hidden)]
pub mod __private;
