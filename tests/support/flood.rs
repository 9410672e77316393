//! A one-client flood for the deny-cache suites: many tasks check one key of `10/s, burst 10`
//! as fast as they can, with the cache on and off, counting what Redis saw.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use flux::decision::Source;
use flux::{Flux, Limit, Rate};

/// The limit every flood hits: 10 per second, burst 10 (one retry window = 100 ms).
pub(crate) fn flood_limit() -> Limit {
    Limit::new("flood", Rate::per_second::<10>())
}

/// What one flood did.
pub(crate) struct Flood {
    pub(crate) checks: u64,
    pub(crate) admitted: u64,
    pub(crate) cached: u64,
    /// Script calls Redis counted (set by the caller, who knows which node to ask).
    pub(crate) redis_calls: u64,
    pub(crate) elapsed: Duration,
}

/// 16 tasks check `key` on `flux` for `run_for`. Decisions must come from Redis or the deny
/// cache, and the cache must only ever deny.
pub(crate) async fn flood(flux: &Flux, key: &'static str, run_for: Duration) -> Flood {
    let limit = Arc::new(flood_limit());
    let counters: Arc<[AtomicU64; 3]> = Arc::new(Default::default());
    let start = Instant::now();
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (flux, limit, counters) = (flux.clone(), Arc::clone(&limit), Arc::clone(&counters));
            tokio::spawn(async move {
                while start.elapsed() < run_for {
                    let d = flux.check(key, &limit).await;
                    assert!(
                        matches!(d.source, Source::Backend | Source::Cached),
                        "{d:?}"
                    );
                    counters[0].fetch_add(1, Ordering::Relaxed);
                    counters[1].fetch_add(u64::from(d.allowed), Ordering::Relaxed);
                    if d.source == Source::Cached {
                        assert!(!d.allowed, "the cache only ever denies");
                        counters[2].fetch_add(1, Ordering::Relaxed);
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
        checks: counters[0].load(Ordering::Relaxed),
        admitted: counters[1].load(Ordering::Relaxed),
        cached: counters[2].load(Ordering::Relaxed),
        redis_calls: 0,
        elapsed: start.elapsed(),
    }
}

/// Prints both floods and asserts what the cache promises: the same admissions within the
/// token-bucket bound, and a handful of Redis calls per retry window instead of one per check.
pub(crate) fn assert_cache_effect(with: &Flood, without: &Flood) {
    for (name, f) in [("with cache", with), ("without cache", without)] {
        println!(
            "{name}: {} checks, {} admitted, {} answered from the cache, {} Redis calls \
             ({:.4} per check) in {:.2?}",
            f.checks,
            f.admitted,
            f.cached,
            f.redis_calls,
            f.redis_calls as f64 / f.checks as f64,
            f.elapsed
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
    // Without the cache Redis decides every check (on a single Redis, the checks queued
    // together are decided by one script call, so there are fewer calls than checks).
    assert_eq!(
        without.cached, 0,
        "without the cache every check asks Redis"
    );
    assert!(
        with.redis_calls * 5 < without.redis_calls,
        "the cache spares Redis: {} calls with it, {} without",
        with.redis_calls,
        without.redis_calls
    );
    // The burst (10 admissions, and the 16 callers in flight when the bucket empties), then
    // per 100 ms retry window one check refreshes the denial while the others wait for it:
    // about one call per window, three allowed.
    let windows = (with.elapsed.as_millis() / 100) as u64 + 1;
    assert!(
        with.redis_calls <= 10 + 16 + windows * 3,
        "{} Redis calls for {windows} windows",
        with.redis_calls
    );
    assert!(
        with.checks > with.redis_calls * 5,
        "the cache answered most of the flood"
    );
}
