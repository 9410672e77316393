//! The integration suites that can share one process, as modules of one test binary (`it`):
//! every test binary is a link step of its own, so one binary instead of one per suite makes
//! `cargo test` build much less.
//!
//! Each module is one suite, run alone with a filter on its module path:
//!
//! ```text
//! cargo test -p flux-tests --test it token_bucket::
//! cargo test -p flux-tests --test it concurrency_limit:: -- --nocapture
//! ```
//!
//! What every suite here may rely on, since the tests of all of them run in parallel threads of
//! this one process:
//!
//! - nothing process-wide is installed: no `Builder::install()` (the process-wide limiter,
//!   `Flux::global()`, is the one built from the environment: in memory, used only by a plain
//!   `#[rate_limit]` fn of `tiers`), no environment variable set, no `metrics` recorder, no
//!   `tracing` subscriber but the harness's own (`support::init_tracing`, output only);
//! - each limiter is built by its test, with a Redis (or cluster) of its own, so no test sees
//!   another's buckets, scripts or statistics;
//! - the timing and throughput bounds here are far from what a loaded 2-core machine reaches,
//!   so they hold whichever other suite's test shares the cores; the load tests whose bounds
//!   do not leave that room are test targets of their own.
//!
//! A suite that breaks one of these is a test target of its own (see `tests/Cargo.toml`, which
//! says why for each).

#[path = "../support/mod.rs"]
mod support;

mod at_rest;
mod batch_script;
mod behind_nginx;
mod concurrency;
mod concurrency_limit;
mod deny_cache;
mod expiry;
mod failure_policy;
mod harness;
mod hostile_input;
mod layer;
mod model;
mod overrides;
mod readme_pattern;
mod script_cache;
mod settle;
mod tiers;
mod tls;
mod token_bucket;
