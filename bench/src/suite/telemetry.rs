//! Part 7: what metrics cost. The same decisions with no recorder and with a Prometheus
//! recorder (`metrics-exporter-prometheus`, as the observability example installs it),
//! alternated in one run. The recorder is installed thread-locally
//! (`metrics::with_local_recorder`), so both sides run in one process on one thread: the
//! in-memory decisions single-threaded, the Redis decisions from 64 tasks on a current-thread
//! runtime.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use flux::{Flux, Key, Limit, Rate};
use flux_bench::micro::MemoryDecisions;
use metrics_exporter_prometheus::PrometheusBuilder;

use super::Sizes;
use crate::Res;
use crate::driver::client_keys;
use crate::progress;
use crate::redis_server::RedisServer;
use crate::report::{Report, Section, count, ratio};

/// Rounds of each side, alternated (none, recorder, none, recorder, ...).
const ROUNDS: usize = 3;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// In-memory decisions per second on this thread for `window`.
fn memory_rate(decisions: &mut MemoryDecisions, window: Duration) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < window {
        for _ in 0..64 {
            black_box(decisions.decide());
        }
        n += 64;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// A fresh limit that never denies: its metrics handles are registered under the recorder
/// of its first check, so each side of the comparison gets its own.
fn fresh_limit() -> Limit {
    Limit::new("bench::telemetry", Rate::per_second::<1_000_000>())
}

/// Redis decisions per second from 64 tasks on a current-thread runtime, for `window`.
fn redis_rate(flux: &Flux, limit: &Limit, keys: &Arc<[Key]>, window: Duration) -> Res<f64> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    runtime.block_on(async {
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let flux = flux.clone();
                let limit = limit.clone();
                let keys = Arc::clone(keys);
                let done = Arc::clone(&done);
                tokio::spawn(async move {
                    let mut k = i;
                    while start.elapsed() < window {
                        black_box(flux.check(&keys[k % keys.len()], &limit).await);
                        done.fetch_add(1, Ordering::Relaxed);
                        k += 64;
                    }
                })
            })
            .collect();
        for task in tasks {
            let _ = task.await;
        }
    });
    Ok(done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}

pub(crate) fn part7_telemetry(report: &mut Report, sizes: &Sizes, redis: &RedisServer) -> Res<()> {
    progress("part 7: decisions with and without a metrics recorder");
    let mut section = Section::new(
        "7. Metrics overhead: decisions/s with no recorder vs a Prometheus recorder, alternated in one run",
        &[
            "decisions",
            "no recorder /s",
            "recorder /s",
            "recorder / none",
        ],
    );
    let recorder = PrometheusBuilder::new().build_recorder();
    let window = sizes.window.measure / 3;

    let mut plain = MemoryDecisions::with_limit(1_000, fresh_limit());
    let mut recorded = MemoryDecisions::with_limit(1_000, fresh_limit());
    let (mut none, mut with) = (Vec::new(), Vec::new());
    memory_rate(&mut plain, sizes.window.warmup);
    metrics::with_local_recorder(&recorder, || {
        memory_rate(&mut recorded, sizes.window.warmup)
    });
    for _ in 0..ROUNDS {
        none.push(memory_rate(&mut plain, window));
        with.push(metrics::with_local_recorder(&recorder, || {
            memory_rate(&mut recorded, window)
        }));
    }
    let (n, w) = (median(none), median(with));
    section.row(vec![
        "in-memory, 1 thread".into(),
        count(n),
        count(w),
        ratio(w / n),
    ]);

    let flux = Flux::builder()
        .redis(redis.url())
        .key_prefix("bench-telemetry")
        .build()?;
    let keys = client_keys(1_000);
    let (plain, recorded) = (fresh_limit(), fresh_limit());
    redis_rate(&flux, &plain, &keys, sizes.window.warmup)?;
    metrics::with_local_recorder(&recorder, || {
        redis_rate(&flux, &recorded, &keys, sizes.window.warmup)
    })?;
    let (mut none, mut with) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        none.push(redis_rate(&flux, &plain, &keys, window)?);
        with.push(metrics::with_local_recorder(&recorder, || {
            redis_rate(&flux, &recorded, &keys, window)
        })?);
    }
    let (n, w) = (median(none), median(with));
    section.row(vec![
        "Redis, 64 tasks on 1 thread".into(),
        count(n),
        count(w),
        ratio(w / n),
    ]);
    section.note(
        "Repeatable instruction counts of one in-memory decision: `scripts/metrics-cost` (callgrind).",
    );
    report.sections.push(section);
    Ok(())
}
