//! Part 1b: decisions per second against the number of callers (the picture
//! `bench-callers.png`), `flux.check` beside `redis-benchmark` running the same script.

use std::sync::Arc;
use std::time::Duration;

use flux::Flux;

use super::{Sizes, latency_cells};
use crate::Res;
use crate::driver::{DECISION_ARGV, Op, Window, client_keys, drive, redis_benchmark};
use crate::progress;
use crate::redis_server::RedisServer;
use crate::report::{CallersPoint, Report, Section, count, ratio};

/// The numbers of concurrent callers of the sweep: doubling from 1 to 128.
pub(crate) const CALLERS: [usize; 8] = [1, 2, 4, 8, 16, 32, 64, 128];

pub(crate) fn part1b_callers(
    report: &mut Report,
    sizes: &Sizes,
    runtime: &tokio::runtime::Runtime,
    flux: &Flux,
    redis: &RedisServer,
    sha: &str,
) -> Res<()> {
    progress("part 1b: decisions per second against the number of callers");
    let mut section = Section::new(
        "1b. Decisions per second against the number of callers (random keys)",
        &[
            "callers",
            "flux.check ops/s",
            "p50 us",
            "p99 us",
            "p99.9 us",
            "EVALSHA redis-benchmark ops/s",
            "flux / EVALSHA",
        ],
    );
    // Shorter windows than the rest of part 1: eight points, each one figure of a curve.
    let window = Window {
        warmup: sizes.window.warmup.mul_f64(0.4),
        measure: (sizes.window.measure / 3).max(Duration::from_millis(50)),
    };
    let random = client_keys(sizes.random_keys);
    let key = "flux:{c__rand_int__}:bench::decisions";
    let mut command = vec!["EVALSHA", sha, "1", key, ""];
    command.extend(DECISION_ARGV);
    let mut failures = 0;
    for callers in CALLERS {
        progress(&format!("  {callers} caller(s)"));
        redis.query(&["FLUSHALL"])?;
        let (s, outcomes) = runtime.block_on(drive(
            flux,
            Op::Check,
            callers,
            Arc::clone(&random),
            window,
            Some(redis),
        ));
        failures += outcomes.errors + outcomes.fallback + outcomes.denied;
        // About as long as the flux run at the rates this machine reaches.
        let requests =
            (sizes.bench_requests.0 / 3 * callers as u64).min(sizes.bench_requests.1 / 3);
        redis.query(&["FLUSHALL"])?;
        let ceiling = redis_benchmark(
            redis,
            callers,
            1,
            requests.max(100),
            Some(sizes.random_keys as u64),
            &command,
        )?;
        let evalsha = ceiling.as_ref().map(|b| b.rps);
        let mut row = vec![callers.to_string()];
        let cells = latency_cells(&s);
        row.extend(cells);
        row.push(evalsha.map_or_else(|| "-".to_owned(), count));
        row.push(evalsha.map_or_else(|| "-".to_owned(), |e| ratio(s.rate() / e)));
        section.row(row);
        report.pictures.callers_keys = sizes.random_keys;
        report.pictures.callers.push(CallersPoint {
            callers,
            flux_rps: s.rate(),
            evalsha_rps: evalsha,
        });
    }
    section.note(format!(
        "each flux.check point: {} ms warm-up, {} ms measured, {} random keys; redis-benchmark: \
         -c CALLERS, no pipelining, the same EVALSHA and keyspace; failures/denials in flux rows: {failures}",
        window.warmup.as_millis(),
        window.measure.as_millis(),
        count(sizes.random_keys as f64),
    ));
    report.sections.push(section);
    Ok(())
}
