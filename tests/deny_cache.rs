//! The hot-key deny cache: a flood from one client reaches Redis about once per retry window
//! per instance, and admits exactly as much as without the cache.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use flux::{Flux, Limit, Rate, Source};
use support::RedisServer;

struct Flood {
    checks: u64,
    admitted: u64,
    cached: u64,
    redis_calls: u64,
    elapsed: Duration,
}

/// 16 tasks flood one key of `10/s, burst 10` for `run_for`.
async fn flood(server: &RedisServer, cache: bool, run_for: Duration) -> Flood {
    let flux = Flux::builder()
        .redis(server.url())
        .key_prefix(if cache { "with-cache" } else { "without-cache" })
        .deadline(Duration::from_secs(5))
        .deny_cache(cache)
        .build()
        .expect("valid configuration");
    let limit = Arc::new(Limit::new("flood", Rate::per_second(10)));
    server.reset_stats();
    let (checks, admitted, cached) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let start = Instant::now();
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (flux, limit) = (flux.clone(), Arc::clone(&limit));
            let (checks, admitted, cached) = (
                Arc::clone(&checks),
                Arc::clone(&admitted),
                Arc::clone(&cached),
            );
            tokio::spawn(async move {
                while start.elapsed() < run_for {
                    let d = flux.check("attacker", &limit).await;
                    assert!(
                        matches!(d.source, Source::Backend | Source::Cached),
                        "{d:?}"
                    );
                    checks.fetch_add(1, Ordering::Relaxed);
                    admitted.fetch_add(u64::from(d.allowed), Ordering::Relaxed);
                    cached.fetch_add(u64::from(d.source == Source::Cached), Ordering::Relaxed);
                    if d.source == Source::Cached {
                        assert!(!d.allowed, "the cache only ever denies");
                        // A cooperative yield keeps the flood from starving the runtime.
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("flood task");
    }
    Flood {
        checks: checks.load(Ordering::Relaxed),
        admitted: admitted.load(Ordering::Relaxed),
        cached: cached.load(Ordering::Relaxed),
        redis_calls: server.command_calls("evalsha") + server.command_calls("eval"),
        elapsed: start.elapsed(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_key_flood_costs_a_handful_of_redis_calls_per_window_and_admits_the_same() {
    let server = RedisServer::start();
    let run_for = Duration::from_secs(2);
    let with = flood(&server, true, run_for).await;
    let without = flood(&server, false, run_for).await;
    for (name, f) in [("with cache", &with), ("without cache", &without)] {
        println!(
            "{name}: {} checks, {} admitted, {} answered from the cache, {} Redis calls ({:.4} per check)",
            f.checks,
            f.admitted,
            f.cached,
            f.redis_calls,
            f.redis_calls as f64 / f.checks as f64
        );
        // burst 10 + 10/s over the run (+1 for the edge), and at least 90% of it.
        let bound = 10 + (10.0 * f.elapsed.as_secs_f64()).ceil() as u64;
        assert!(
            f.admitted <= bound,
            "{name}: admitted {} > bound {bound}",
            f.admitted
        );
        assert!(
            f.admitted * 10 >= bound * 9,
            "{name}: admitted {} of {bound}",
            f.admitted
        );
    }
    assert_eq!(without.cached, 0);
    assert!(
        without.redis_calls >= without.checks,
        "without the cache every check asks Redis"
    );
    // One retry window is 100 ms. Per window: the call that is denied, plus the concurrent
    // callers already in flight when the denial lands (16 tasks), plus the admitted one.
    let windows = (with.elapsed.as_millis() / 100) as u64 + 1;
    assert!(
        with.redis_calls <= 10 + windows * 18,
        "{} Redis calls for {windows} windows",
        with.redis_calls
    );
    assert!(
        with.checks > with.redis_calls * 5,
        "the cache answered most of the flood"
    );
}
