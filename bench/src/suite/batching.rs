//! Part 1c: the checks queued while a write is in flight, decided by one script call
//! (`lua/gcra.lua` with the whole batch) against a pipeline of one `EVALSHA` each, alternated in one run.

use std::sync::Arc;

use flux::Flux;

use super::{Sizes, cpu_cells, latency_cells};
use crate::Res;
use crate::driver::{Op, client_keys, drive};
use crate::progress;
use crate::redis_server::RedisServer;
use crate::report::{Report, Section, ratio};
use crate::stats::Summary;

/// The two ways a batch goes to Redis.
const MODES: [(&str, bool); 2] = [
    ("pipeline of EVALSHAs (before)", false),
    ("one script call per batch", true),
];

pub(crate) fn part1c_batching(
    report: &mut Report,
    sizes: &Sizes,
    runtime: &tokio::runtime::Runtime,
    flux: &Flux,
    redis: &RedisServer,
) -> Res<()> {
    progress("part 1c: one script call per batch against a pipeline");
    let mut section = Section::new(
        "1c. Batched checks: one script call per batch against a pipeline of EVALSHAs (flux.check, random keys)",
        &[
            "batch sent as",
            "callers",
            "ops/s",
            "p50 us",
            "p99 us",
            "p99.9 us",
            "client CPU us/op",
            "redis CPU us/op",
            "ops/s vs pipeline",
            "redis CPU vs pipeline",
        ],
    );
    let random = client_keys(sizes.random_keys);
    let callers_list = [1_usize, 64];
    let mut runs: Vec<Vec<Vec<Summary>>> = MODES
        .iter()
        .map(|_| callers_list.iter().map(|_| Vec::new()).collect())
        .collect();
    let mut failures = 0;
    for round in 0..sizes.http_rounds {
        for (c, &callers) in callers_list.iter().enumerate() {
            for (m, &(name, one_call)) in MODES.iter().enumerate() {
                progress(&format!(
                    "  round {}: {name}, {callers} caller(s)",
                    round + 1
                ));
                flux::__private::set_one_call_batches(one_call);
                redis.query(&["FLUSHALL"])?;
                let (s, outcomes) = runtime.block_on(drive(
                    flux,
                    Op::Check,
                    callers,
                    Arc::clone(&random),
                    sizes.window,
                    Some(redis),
                ));
                failures += outcomes.errors + outcomes.fallback + outcomes.denied;
                runs[m][c].push(s);
            }
        }
    }
    flux::__private::set_one_call_batches(false);
    let mut baseline = Vec::new();
    for (m, &(name, _)) in MODES.iter().enumerate() {
        for (c, &callers) in callers_list.iter().enumerate() {
            let s = super::http::median_round(std::mem::take(&mut runs[m][c]));
            let mut row = vec![name.to_owned(), callers.to_string()];
            row.extend(latency_cells(&s));
            row.extend(cpu_cells(&s));
            let redis_us = s.per_op_us(s.cpu.redis).unwrap_or(f64::NAN);
            if m == 0 {
                baseline.push((s.rate(), redis_us));
                row.extend(["1.00x".to_owned(), "1.00x".to_owned()]);
            } else {
                let (rate, base_redis) = baseline[c];
                row.push(ratio(s.rate() / rate));
                row.push(ratio(redis_us / base_redis));
            }
            section.row(row);
        }
    }
    section.note(format!(
        "{} round(s) of {:.1} s per row, the two ways alternated; ops/s and CPU are the median \
         round's, latencies over all rounds; a check alone on the connection goes straight to it \
         either way (the 1-caller rows); limit 1,000,000/s, nothing denied; failures/denials: {failures}",
        sizes.http_rounds,
        sizes.window.measure.as_secs_f64()
    ));
    report.sections.push(section);
    Ok(())
}
