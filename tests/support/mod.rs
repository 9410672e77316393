//! Shared harness of the integration tests: throwaway Redis servers and clusters.
//!
//! Every test starts its own `redis-server` processes on free loopback ports, each with its own
//! temporary directory and log file, and never touches a Redis that was already running (such as
//! one on the default port 6379). Dropping a handle kills its processes, also when the test
//! panics. A server that does not come up makes the test panic with the server's log.
//!
//! Nothing here needs a tokio runtime: the harness drives processes with blocking
//! [`std::process::Command`] calls and checks readiness with a blocking connection, so it works
//! from `#[test]` and `#[tokio::test]` alike.
//!
//! Each test binary that uses it compiles it as its module `support`: the suites of `it`
//! (tests/it/, which declares it with a `#[path]`) as `crate::support`, a separate test target
//! with `mod support;` of its own.
//!
//! ```ignore
//! use crate::support::RedisServer;
//!
//! #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
//! async fn answers() {
//!     let server = RedisServer::start();
//!     let client = redis::Client::open(server.url()).expect("valid URL");
//!     // ...
//!     assert_eq!(server.dbsize(), 0);
//! }
//! ```
//!
//! `redis-server` and `redis-cli` must be on `PATH`; `scripts/test` installs them. Tests never skip
//! when they are missing: they fail with instructions.
//!
//! `FLUX_TEST_REDIS_SERVER` names another `redis-server` binary to run instead, for every server
//! and cluster node (`redis-cli` stays the one on `PATH`), such as Redis 6.2:
//! `FLUX_TEST_REDIS_SERVER=$(scripts/redis-6.2) cargo test -p flux-tests`. Each test binary
//! prints the version it runs on stderr once, and writes only the configuration that version
//! knows.

// Each test file uses only part of the harness.
#![allow(dead_code)]

mod cluster;
mod flood;
mod instance;
pub(crate) mod proxy;
mod server;

#[allow(unused_imports)] // Each test file uses only part of the harness.
pub(crate) use cluster::RedisCluster;
#[allow(unused_imports)]
pub(crate) use flood::{Flood, assert_cache_effect, flood, flood_limit};
#[allow(unused_imports)]
pub(crate) use instance::{Conn, Instance, Reply, fleet, serve, wait_healthy};
#[allow(unused_imports)]
pub(crate) use server::{RedisServer, RedisServerBuilder};

use tracing_subscriber::EnvFilter;

/// Installs a `tracing` subscriber that prints through the test harness's captured output.
///
/// The filter comes from `RUST_LOG` and defaults to `warn`. Safe to call from every test: only
/// the first call in a test binary installs anything, later ones do nothing.
/// `client` as a Redis-backed limiter with the default key secret stores it: the digest in
/// its bucket keys and per-key override fields.
pub(crate) fn stored(client: impl flux::key::ToKey) -> String {
    flux::Flux::builder()
        .redis("redis://127.0.0.1:1/")
        .build()
        .expect("valid configuration")
        .stored_key(client)
        .as_str()
        .to_owned()
}

pub(crate) fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    // Fails only when a global subscriber is already set, which is what we want.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}
