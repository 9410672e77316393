//! The rate-limit script in Redis' script cache: loaded in front of the first check, loaded
//! again after a restart, and reloaded once per write that met a flushed cache (not once per
//! check) when it answers `NOSCRIPT` to many concurrent checks, alone on the connection or in
//! batches. No check waits for a load: the `SCRIPT LOAD` goes in the same write as the
//! `EVALSHA`s after it.
//!
//! Counted from `INFO commandstats`: `SCRIPT LOAD` calls (Redis 6 counts every `SCRIPT`
//! subcommand together, so each test resets the counters after its own `SCRIPT FLUSH`) and
//! failed `EVALSHA` calls (`failed_calls`, which counts `NOSCRIPT` replies; Redis 6.2+).

use std::time::Duration;

use flux::{Flux, Limit, Rate};

use crate::support::RedisServer;

/// Concurrent checks: as many as an HTTP server with 64 busy connections makes.
const CALLERS: usize = 64;

fn flux(server: &RedisServer) -> Flux {
    Flux::builder()
        .redis(server.url())
        .key_prefix("cache")
        // Generous: the checks wait on CLIENT PAUSE below, and the machine is shared.
        .deadline(Duration::from_secs(5))
        .build()
        .expect("valid configuration")
}

fn limits() -> [Limit; 1] {
    [Limit::new("api", Rate::per_minute::<100>())]
}

/// Runs `CALLERS` checks at once, on distinct client keys, while Redis holds every command
/// for 200 ms (`CLIENT PAUSE ... ALL`): all of them are sent before Redis answers any, some
/// alone on the connection, the others pipelined in batches. Each must be admitted by Redis.
async fn concurrent_checks(server: &RedisServer, flux: &Flux, round: &str) {
    server.cli(&["CLIENT", "PAUSE", "200", "ALL"]);
    let tasks: Vec<_> = (0..CALLERS)
        .map(|i| {
            let flux = flux.clone();
            let key = format!("{round}-{i}");
            tokio::spawn(async move { flux.try_check(key, &limits()).await })
        })
        .collect();
    for task in tasks {
        let d = task.await.expect("task").expect("Redis answered the check");
        assert!(d.allowed);
        assert_eq!(d.remaining, 99, "one token taken by this check alone");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_start_loads_the_script_in_front_of_the_first_evalsha() {
    let server = RedisServer::start();
    let flux = flux(&server);
    concurrent_checks(&server, &flux, "cold").await;
    assert_eq!(
        server.failed_calls("evalsha"),
        0,
        "no check sent EVALSHA before the script was loaded"
    );
    let evalsha = server.command_calls("evalsha");
    assert!(
        (1..=CALLERS as u64).contains(&evalsha),
        "{evalsha} EVALSHA for {CALLERS} checks"
    );
    let loads = server.command_calls("script|load");
    // Every write sent before the first load was answered carries one (here, with Redis
    // paused, that can be every batch); none waited for another.
    assert!(
        (1..=evalsha).contains(&loads),
        "{loads} SCRIPT LOAD for {evalsha} EVALSHA: at most one in front of each"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flushed_cache_is_reloaded_once_per_write_not_per_check() {
    let server = RedisServer::start();
    let flux = flux(&server);
    concurrent_checks(&server, &flux, "warm").await;
    // Batches go as one script call (the default) or as pipelines of EVALSHAs: both reload
    // once. (The switch is process-wide; the other tests here hold in either way.)
    for (round, one_call) in [
        ("one-call-1", true),
        ("one-call-2", true),
        ("pipelined", false),
    ] {
        flux::__private::set_one_call_batches(one_call);
        server.flush_scripts();
        server.reset_stats();
        concurrent_checks(&server, &flux, round).await;
        let noscript = server.failed_calls("evalsha");
        assert!(
            noscript > 1,
            "{round}: several checks met the flushed cache at once ({noscript} NOSCRIPT), \
             or this test shows nothing"
        );
        let loads = server.command_calls("script|load");
        assert_eq!(
            loads, 1,
            "{round}: one SCRIPT LOAD for {noscript} NOSCRIPT replies"
        );
        let evalsha = server.command_calls("evalsha");
        assert!(
            evalsha <= 2 * noscript + (CALLERS as u64 - noscript),
            "{round}: each EVALSHA that met NOSCRIPT ran once more, no more ({evalsha} in all)"
        );
    }
    flux::__private::set_one_call_batches(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_redis_gets_the_script_before_the_next_check() {
    let mut server = RedisServer::start();
    let flux = flux(&server);
    let limits = limits();
    assert!(
        flux.try_check("before", &limits)
            .await
            .expect("redis")
            .allowed
    );
    server.restart();
    // The first call after the restart meets the dead connection (an error, and the
    // connection manager reconnects); every check after that goes to the new process, whose
    // script cache is empty.
    let mut answered = 0;
    for _ in 0..100 {
        if flux.try_check("after", &limits).await.is_ok() {
            answered += 1;
            if answered == 3 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(answered, 3, "checks reach the restarted Redis");
    assert_eq!(
        server.failed_calls("evalsha"),
        0,
        "the script was loaded before the first EVALSHA on the new process"
    );
    let loads = server.command_calls("script|load");
    assert!(
        (1..=2).contains(&loads),
        "{loads} SCRIPT LOAD after the restart"
    );
}
