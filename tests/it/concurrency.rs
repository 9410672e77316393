//! No over-admission under concurrency: many tasks on two separate connections (as two app
//! instances would be) hammer one key; Redis admits no more than the bucket allows.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use flux::decision::Source;
use flux::{Flux, Limit, Rate};

use crate::support::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hammering_one_key_never_over_admits() {
    let server = RedisServer::start();
    // Two limiters = two multiplexed connections, like two instances of the service.
    let instances: Vec<Flux> = (0..2)
        .map(|_| {
            Flux::builder()
                .redis(server.url())
                .key_prefix("hammer")
                .deadline(Duration::from_secs(5))
                // Every check must reach Redis: this is about the script's atomicity.
                .deny_cache(false)
                .build()
                .expect("valid configuration")
        })
        .collect();
    let burst = 50u64;
    let rate_per_s = 200u64;
    let rate = Rate::new(
        NonZeroU32::new(rate_per_s as u32).expect("nonzero"),
        Duration::from_secs(1),
    )
    .expect("valid rate");
    let limit = Limit::new("hot", rate)
        .with_burst(burst as u32)
        .expect("valid burst");
    let limit = Arc::new(limit);
    let admitted = Arc::new(AtomicU64::new(0));
    let checked = Arc::new(AtomicU64::new(0));
    let run_for = Duration::from_secs(2);
    let start = Instant::now();
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let flux = instances[i % 2].clone();
            let limit = Arc::clone(&limit);
            let admitted = Arc::clone(&admitted);
            let checked = Arc::clone(&checked);
            tokio::spawn(async move {
                while start.elapsed() < run_for {
                    let d = flux.check("one-key", &limit).await;
                    assert_eq!(d.source, Source::Backend, "Redis must decide every check");
                    checked.fetch_add(1, Ordering::Relaxed);
                    if d.allowed {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    let elapsed = start.elapsed();
    let admitted = admitted.load(Ordering::Relaxed);
    let checked = checked.load(Ordering::Relaxed);
    // Redis' clock ran for at most `elapsed` between the first and the last check.
    let bound = burst + (rate_per_s as f64 * elapsed.as_secs_f64()).ceil() as u64;
    println!("{checked} checks in {elapsed:?}: admitted {admitted}, bound {bound}");
    assert!(
        checked > admitted * 2,
        "the key was really contended ({checked} checks)"
    );
    assert!(admitted <= bound, "over-admission: {admitted} > {bound}");
    // And not over-strict: at least the rate over the run (minus the edge) got through.
    let floor = (rate_per_s as f64 * run_for.as_secs_f64() * 0.9) as u64;
    assert!(admitted >= floor, "under-admission: {admitted} < {floor}");
}
