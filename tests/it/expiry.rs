//! Nothing Flux writes in Redis lives for ever: a limiter on a real Redis is driven through
//! every feature that writes (checks, stacked limits, charges into debt, token leases,
//! concurrency slots, the fleet heartbeat of the `local` policy, overrides with and without a
//! key and a TTL, the registry of declared limits), then every key in the database is
//! listed with `SCAN` and each must have a time to live (`PTTL` > 0). The `flux` tool's
//! `override set` goes through the same `Flux::set_override`.

use std::time::{Duration, Instant};

use flux::concurrency::ConcurrencyLimit;
use flux::overrides::{Override, Setting};
use flux::{FailurePolicy, Flux, Limit, Rate};

use crate::support::RedisServer;

static PAGE: Limit = Limit::new("page", Rate::per_minute::<10>());
static SEARCH: Limit = Limit::new("search", Rate::per_second::<5>());
// Slow enough that the leased tokens outlast the test (20 x 3.6 s).
static HOT: Limit = Limit::new("hot", Rate::per_hour::<1000>()).with_lease(20);
static EXPORTS: ConcurrencyLimit = ConcurrencyLimit::new("exports", 2);

/// Every key of the database, with its `PTTL` (ms; -1: no expiry, -2: gone meanwhile).
fn keys_and_ttls(server: &RedisServer) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    let mut cursor = "0".to_owned();
    loop {
        let reply = server.cli(&["--raw", "SCAN", &cursor, "COUNT", "1000"]);
        let mut lines = reply.lines();
        cursor = lines.next().expect("a cursor").to_owned();
        for key in lines.filter(|k| !k.is_empty()) {
            let pttl = server
                .cli(&["PTTL", key])
                .parse()
                .expect("PTTL is a number");
            out.push((key.to_owned(), pttl));
        }
        if cursor == "0" {
            return out;
        }
    }
}

/// Waits until `key` exists (written by a background task), for at most 5 s.
async fn until_exists(server: &RedisServer, key: &str) {
    let start = Instant::now();
    while server.cli(&["EXISTS", key]) != "1" {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{key} was not written"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_flux_writes_expires() {
    let server = RedisServer::start();
    let flux = Flux::builder()
        .redis(server.url())
        .deadline(Duration::from_secs(5))
        .failure_policy(FailurePolicy::Local)
        .build()
        .expect("valid configuration");

    // Buckets: a check, a stacked check, a charge far into debt, a token lease.
    assert!(flux.check("alice", &PAGE).await.allowed);
    assert!(
        flux.check_all("bob", &[PAGE.clone(), SEARCH.clone()])
            .await
            .allowed
    );
    assert!(flux.charge("carol", &PAGE, 1_000).await.recorded());
    assert!(flux.check("dave", &HOT).await.allowed);
    // A runtime-named limit, as `limit = EXPR` builds them.
    let tenant = Limit::named(format!("tenant-{}", 7), Rate::per_hour::<100>());
    assert!(flux.check("erin", &tenant).await.allowed);

    // Concurrency slots: one held through the scan, one released.
    let held = flux.acquire("frank", &EXPORTS).await.expect("a slot");
    drop(flux.acquire("grace", &EXPORTS).await.expect("a slot"));

    // Overrides: limit-wide, per key, with and without a TTL.
    let three = Setting::Limited {
        rate: Rate::per_second::<3>(),
        burst: 3,
    };
    for o in [
        Override::new("page", three),
        Override::new("search", Setting::Off).expires_in(Duration::from_secs(3600)),
        Override::new("page", Setting::Off).for_key("vip"),
        Override::new("search", three)
            .for_key("trial")
            .expires_in(Duration::from_secs(60)),
    ] {
        flux.set_override(&o).await.expect("stored");
    }

    // The registry of declared limits and the fleet heartbeat are written in the background.
    flux.register(std::slice::from_ref(&SEARCH));
    until_exists(&server, "flux:limits").await;
    until_exists(&server, "flux:fleet").await;
    let registered = flux.registered_limits().await.expect("the registry");
    assert!(
        registered.iter().any(|l| l.name() == "tenant-7"),
        "{registered:?}"
    );

    let keys = keys_and_ttls(&server);
    let names: Vec<&str> = keys.iter().map(|(k, _)| k.as_str()).collect();
    for expected in ["flux:limits", "flux:overrides", "flux:fleet"] {
        assert!(names.contains(&expected), "{expected} among {names:?}");
    }
    assert!(
        names.iter().filter(|k| k.contains("#slots:")).count() == 1,
        "the held slot's set: {names:?}"
    );
    assert!(keys.len() >= 10, "every feature wrote: {names:?}");
    let forever: Vec<&(String, i64)> = keys.iter().filter(|(_, ttl)| *ttl == -1).collect();
    assert!(
        forever.is_empty(),
        "keys without an expiry: {forever:?} (all keys: {keys:?})"
    );
    // The hashes outlive their last writer by a day (the registry) and a week (overrides).
    let ttl = |key: &str| keys.iter().find(|(k, _)| k == key).map(|(_, t)| *t);
    let day = 24 * 3600 * 1000;
    assert!(ttl("flux:limits").is_some_and(|t| t > day - 60_000 && t <= day));
    assert!(ttl("flux:overrides").is_some_and(|t| t > 7 * day - 60_000 && t <= 7 * day));
    drop(held);
}

/// Milliseconds since the Unix epoch.
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_entry_no_instance_wrote_for_a_day_is_dropped() {
    let server = RedisServer::start();
    let two_days_ago = unix_ms() - 2 * 24 * 3600 * 1000;
    server.cli(&[
        "HSET",
        "flux:limits",
        "gone",
        &format!("1/s burst=1 cost=1 seen={two_days_ago}"),
        // As older versions wrote it: no `seen=`.
        "legacy",
        "2/s burst=2 cost=1",
    ]);
    let flux = server.flux("flux");
    // Readers leave the stale entry out, and read the old form as before.
    let names: Vec<String> = flux
        .registered_limits()
        .await
        .expect("the registry")
        .iter()
        .map(|l| l.name().to_owned())
        .collect();
    assert_eq!(names, ["legacy"]);

    // A running instance deletes it, and dates the old form from now.
    assert!(flux.check("k", &PAGE).await.allowed);
    let start = Instant::now();
    while server.cli(&["HEXISTS", "flux:limits", "gone"]) != "0" {
        assert!(start.elapsed() < Duration::from_secs(5), "not cleaned");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let legacy = server.cli(&["HGET", "flux:limits", "legacy"]);
    let seen: u64 = legacy
        .strip_prefix("2/s burst=2 cost=1 seen=")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("dated: {legacy:?}"));
    assert!(seen.abs_diff(unix_ms()) < 60_000, "{legacy}");
    let page = server.cli(&["HGET", "flux:limits", "page"]);
    assert!(page.starts_with("10/min burst=10 cost=1 seen="), "{page}");
    let pttl: i64 = server.cli(&["PTTL", "flux:limits"]).parse().expect("PTTL");
    assert!(pttl > 0, "{pttl}");
}
