//! Part 8: token leasing on one hot key. Checks per second and Redis calls per check with 64
//! callers, leasing against none; then the accuracy of leasing across three instances
//! (three limiters, each with its own leases, on the one Redis) at three times the limit.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use flux::decision::Source;
use flux::{Flux, Limit, Rate};

use super::Sizes;
use crate::Res;
use crate::progress;
use crate::redis_server::RedisServer;
use crate::report::{Cmp, Report, Section, count, micros, ratio};
use crate::stats::Hist;

/// The hot key's limit: 1,000,000/s with a burst of 100,000,000, far above what one machine
/// checks in a run, so every check is admitted; `lease` checks taken at once.
fn hot(name: &'static str, lease: u32) -> Res<Limit> {
    Ok(Limit::new(name, Rate::per_second::<1_000_000>())
        .with_burst(100_000_000)?
        .with_lease(lease))
}
const LEASE: u32 = 100;
const CALLERS: usize = 64;

/// The accuracy run: 1,000/s, burst 100, lease 20, offered 3x by three instances.
static SHARED: Limit = Limit::new("bench::shared", Rate::per_second::<1_000>()).with_lease(20);
const INSTANCES: usize = 3;
const PACED_CALLERS: usize = 6;
/// Each paced caller checks once per `PACE`: 3 x 6 / 6 ms = 3,000 checks/s offered.
const PACE: Duration = Duration::from_millis(6);

/// `cmdstat_evalsha` calls so far.
fn evalsha_calls(redis: &RedisServer) -> u64 {
    redis
        .info("commandstats")
        .ok()
        .and_then(|info| {
            info.iter()
                .find(|(name, _)| name == "cmdstat_evalsha")
                .and_then(|(_, v)| {
                    v.split(',')
                        .find_map(|kv| kv.strip_prefix("calls="))
                        .and_then(|c| c.parse().ok())
                })
        })
        .unwrap_or(0)
}

/// One hot-key run: (checks/s, p50 µs, p99 µs, Redis calls per check, checks not admitted).
fn hot_run(
    runtime: &tokio::runtime::Runtime,
    flux: &Flux,
    limit: &Limit,
    sizes: &Sizes,
    redis: &RedisServer,
) -> Res<(f64, f64, f64, f64, u64)> {
    redis.query(&["FLUSHALL"])?;
    let window = sizes.window;
    let (hist, checks, refused, calls) = runtime.block_on(async {
        let start = Instant::now();
        let warm_end = start + window.warmup;
        let end = warm_end + window.measure;
        let tasks: Vec<_> = (0..CALLERS)
            .map(|_| {
                let (flux, limit) = (flux.clone(), limit.clone());
                tokio::spawn(async move {
                    let (mut hist, mut checks, mut refused) = (Hist::new(), 0u64, 0u64);
                    let mut iteration = 0u64;
                    loop {
                        let t0 = Instant::now();
                        if t0 >= end {
                            break;
                        }
                        let decision = flux.check("hot-client", &limit).await;
                        if t0 >= warm_end {
                            hist.record(t0.elapsed());
                            checks += 1;
                            refused += u64::from(!decision.allowed);
                        }
                        iteration += 1;
                        // Leased checks never wait: let the other callers run.
                        if iteration.is_multiple_of(16) {
                            tokio::task::yield_now().await;
                        }
                    }
                    (hist, checks, refused)
                })
            })
            .collect();
        tokio::time::sleep_until(warm_end.into()).await;
        let calls_start = evalsha_calls(redis);
        tokio::time::sleep_until(end.into()).await;
        let calls = evalsha_calls(redis) - calls_start;
        let (mut hist, mut checks, mut refused) = (Hist::new(), 0, 0);
        for task in tasks {
            let (h, c, r) = task.await.expect("caller task");
            hist.merge(&h);
            checks += c;
            refused += r;
        }
        (hist, checks, refused, calls)
    });
    let rate = checks as f64 / window.measure.as_secs_f64();
    let per_check = calls as f64 / checks.max(1) as f64;
    Ok((
        rate,
        hist.quantile_us(0.5),
        hist.quantile_us(0.99),
        per_check,
        refused,
    ))
}

/// Three limiters on `url` checking `SHARED` for one key at 3x its rate for `secs`:
/// (admitted, bound, leased share of the admissions).
fn accuracy_run(
    runtime: &tokio::runtime::Runtime,
    url: &str,
    secs: Duration,
) -> Res<(u64, f64, f64)> {
    let fleet: Vec<Flux> = (0..INSTANCES)
        .map(|_| Flux::builder().redis(url).build())
        .collect::<Result<_, _>>()?;
    let admitted = Arc::new(AtomicU64::new(0));
    let leased = Arc::new(AtomicU64::new(0));
    let elapsed = runtime.block_on(async {
        let start = Instant::now();
        let tasks: Vec<_> = fleet
            .iter()
            .flat_map(|f| std::iter::repeat_n(f.clone(), PACED_CALLERS))
            .map(|flux| {
                let (admitted, leased) = (Arc::clone(&admitted), Arc::clone(&leased));
                tokio::spawn(async move {
                    let mut every = tokio::time::interval(PACE);
                    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                    while start.elapsed() < secs {
                        every.tick().await;
                        let decision = flux.check("shared-client", &SHARED).await;
                        if decision.allowed {
                            admitted.fetch_add(1, Ordering::Relaxed);
                            if decision.source == Source::Leased {
                                leased.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("paced caller");
        }
        start.elapsed()
    });
    let admitted = admitted.load(Ordering::Relaxed);
    let bound = f64::from(SHARED.burst()) + 1_000.0 * elapsed.as_secs_f64();
    let leased = leased.load(Ordering::Relaxed) as f64 / admitted.max(1) as f64;
    Ok((admitted, bound, leased))
}

pub(crate) fn part8_lease(
    report: &mut Report,
    sizes: &Sizes,
    runtime: &tokio::runtime::Runtime,
    redis: &RedisServer,
) -> Res<()> {
    progress("part 8: token leasing on one hot key");
    let flux = Flux::builder().redis(redis.url()).build()?;
    let mut section = Section::new(
        "8. Token leasing: one hot admitted key, 64 callers (flux.check)",
        &[
            "scenario",
            "checks/s",
            "p50 us",
            "p99 us",
            "Redis calls per check",
            "not admitted",
            "vs no lease",
            "target",
        ],
    );
    let (base, base_p50, base_p99, base_calls, base_refused) =
        hot_run(runtime, &flux, &hot("bench::hot", 0)?, sizes, redis)?;
    let (leased, p50, p99, calls, refused) = hot_run(
        runtime,
        &flux,
        &hot("bench::hot-leased", LEASE)?,
        sizes,
        redis,
    )?;
    report.target(
        "lease-rate",
        "leasing: checks/s on one hot key, 64 callers, vs no leasing",
        leased / base,
        Cmp::AtLeast,
        5.0,
    );
    report.target(
        "lease-calls",
        "leasing: Redis calls per check (x = calls per check)",
        calls,
        Cmp::AtMost,
        0.05,
    );
    section.row(vec![
        "no lease".into(),
        count(base),
        micros(base_p50),
        micros(base_p99),
        format!("{base_calls:.3}"),
        base_refused.to_string(),
        String::new(),
        String::new(),
    ]);
    section.row(vec![
        format!("lease = {LEASE}"),
        count(leased),
        micros(p50),
        micros(p99),
        format!("{calls:.4}"),
        refused.to_string(),
        ratio(leased / base),
        format!(
            "{}; calls {}",
            report.verdict_of("lease-rate"),
            report.verdict_of("lease-calls")
        ),
    ]);
    section.note(format!(
        "limit 1,000,000/s, burst 100,000,000 (every check admitted); {} ms warm-up, {} ms measured; Redis calls = \
         EVALSHA calls in INFO commandstats over the measured window",
        sizes.window.warmup.as_millis(),
        sizes.window.measure.as_millis()
    ));
    report.sections.push(section);

    progress("  accuracy of leasing across three instances");
    redis.query(&["FLUSHALL"])?;
    let secs = sizes.window.measure.max(Duration::from_secs(1));
    let (admitted, bound, leased_share) = accuracy_run(runtime, &redis.url(), secs)?;
    let mut section = Section::new(
        "8b. Token leasing: accuracy across three instances at 3x the limit",
        &[
            "limit",
            "offered/s",
            "admitted",
            "bound",
            "admitted / bound",
            "leased share",
        ],
    );
    report.target(
        "lease-accuracy",
        "leasing: admitted / bound, three instances at 3x (never above 1)",
        admitted as f64 / bound,
        Cmp::AtLeast,
        0.9,
    );
    section.row(vec![
        "1,000/s, burst 100, lease 20".into(),
        count((INSTANCES * PACED_CALLERS) as f64 / PACE.as_secs_f64()),
        admitted.to_string(),
        format!("{bound:.0}"),
        format!(
            "{} {}",
            ratio(admitted as f64 / bound),
            report.verdict_of("lease-accuracy")
        ),
        format!("{:.0}%", 100.0 * leased_share),
    ]);
    section.note(format!(
        "three Flux limiters (each its own leases) on one Redis, {PACED_CALLERS} paced callers each, \
         one key, {:.1} s; bound = burst + rate x elapsed",
        secs.as_secs_f64()
    ));
    report.sections.push(section);
    Ok(())
}
