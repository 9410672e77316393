//! Part 1: Redis decisions against PING and the EVALSHA ceiling.

use std::sync::Arc;

use flux::{Flux, Key};

use super::{Sizes, bench_row, cpu_cells, latency_cells};
use crate::Res;
use crate::driver::{
    DECISION_ARGV, Op, client_keys, drive, interleaved, raw_pings, redis_benchmark,
};
use crate::progress;
use crate::redis_server::RedisServer;
use crate::report::{Cmp, Report, Section, count, micros, ratio};

pub(crate) fn part1_decisions(
    report: &mut Report,
    sizes: &Sizes,
    runtime: &tokio::runtime::Runtime,
    flux: &Flux,
    redis: &RedisServer,
    sha: &str,
) -> Res<()> {
    progress("part 1: Redis decisions against PING and the EVALSHA ceiling");
    let mut section = Section::new(
        "1. Redis decisions (in-process flux.check) vs PING and redis-benchmark EVALSHA of lua/gcra.lua",
        &[
            "scenario",
            "callers",
            "keys",
            "ops/s",
            "p50 us",
            "p99 us",
            "p99.9 us",
            "client CPU us/op",
            "redis CPU us/op",
            "ratio",
            "target",
        ],
    );
    let window = sizes.window;
    let random = client_keys(sizes.random_keys);
    let hot: Arc<[Key]> = Arc::from(vec![Key::new("hot-client")]);

    // The floor: PING on a blocking socket of its own.
    let (raw, raw_elapsed) = raw_pings(redis.port(), sizes.raw_pings)?;
    section.row(vec![
        "PING, raw blocking socket".into(),
        "1".into(),
        "-".into(),
        count(sizes.raw_pings as f64 / raw_elapsed.as_secs_f64()),
        micros(raw.quantile_us(0.5)),
        micros(raw.quantile_us(0.99)),
        micros(raw.quantile_us(0.999)),
        "-".into(),
        "-".into(),
        String::new(),
        String::new(),
    ]);
    // The latency target: one caller alternating flux.ping and flux.check.
    redis.query(&["FLUSHALL"])?;
    let inter = runtime.block_on(interleaved(flux, Arc::clone(&random), window))?;
    let ping_p50 = inter.ping.quantile_us(0.5);
    let check_p50 = inter.check.quantile_us(0.5);
    report.pictures.ping_cdf = crate::pictures::cdf(&inter.ping);
    report.pictures.check_cdf = crate::pictures::cdf(&inter.check);
    report.pictures.ping_p50_p99 = (ping_p50, inter.ping.quantile_us(0.99));
    report.pictures.check_p50_p99 = (check_p50, inter.check.quantile_us(0.99));
    for (name, keys, hist) in [
        (
            "PING, flux.ping on Flux's connection (alternating)",
            "-",
            &inter.ping,
        ),
        (
            "flux.check (alternating with flux.ping)",
            "random",
            &inter.check,
        ),
    ] {
        let mut row = vec![
            name.to_owned(),
            "1".into(),
            keys.into(),
            "-".into(),
            micros(hist.quantile_us(0.5)),
            micros(hist.quantile_us(0.99)),
            micros(hist.quantile_us(0.999)),
            "-".into(),
            "-".into(),
        ];
        if keys == "random" {
            let id = "p50-vs-ping";
            report.target(
                id,
                "1. p50 of flux.check, 1 caller / PING round trip (Flux's connection)",
                check_p50 / ping_p50,
                Cmp::AtMost,
                1.5,
            );
            row.push(format!("{} PING", ratio(check_p50 / ping_p50)));
            row.push(report.verdict_of(id));
        } else {
            row.extend([String::new(), String::new()]);
        }
        section.row(row);
    }
    section.note(format!(
        "alternating rows: one caller alternates flux.ping and flux.check, so both share the machine's \
         moments; p50 of flux.check is {} flux.ping's and {} the raw-socket PING's (measured just before)",
        ratio(check_p50 / ping_p50),
        ratio(check_p50 / raw.quantile_us(0.5)),
    ));
    let bench_ping = redis_benchmark(redis, 1, 1, sizes.bench_requests.0, None, &["PING"])?;
    if let Some(b) = &bench_ping {
        section.row(bench_row("PING, redis-benchmark", 1, "-", b));
    }

    let mut errors = 0;
    for callers in [1_usize, 64] {
        for (label, keys, keyspace, key) in [
            (
                "random",
                &random,
                Some(sizes.random_keys as u64),
                "flux:{c__rand_int__}:bench::decisions",
            ),
            ("hot", &hot, None, "flux:{hot-client}:bench::decisions"),
        ] {
            progress(&format!("  {callers} caller(s), {label} keys"));
            let requests = if callers == 1 {
                sizes.bench_requests.0
            } else {
                sizes.bench_requests.1
            };
            let mut command = vec!["EVALSHA", sha, "1", key, ""];
            command.extend(DECISION_ARGV);
            redis.query(&["FLUSHALL"])?;
            let ceiling = redis_benchmark(redis, callers, 1, requests, keyspace, &command)?;
            if let Some(b) = &ceiling {
                section.row(bench_row(
                    "EVALSHA, redis-benchmark (ceiling)",
                    callers,
                    label,
                    b,
                ));
            }
            // Flux pipelines every caller over one connection; redis-benchmark -P shows what
            // Redis does with pipelined EVALSHAs.
            let pipelined = if callers > 1 {
                redis.query(&["FLUSHALL"])?;
                redis_benchmark(redis, callers, 16, requests * 2, keyspace, &command)?
            } else {
                None
            };
            if let Some(b) = &pipelined {
                section.row(bench_row(
                    "EVALSHA, redis-benchmark -P 16 (pipelined)",
                    callers,
                    label,
                    b,
                ));
            }
            redis.query(&["FLUSHALL"])?;
            let (s, outcomes) = runtime.block_on(drive(
                flux,
                Op::Check,
                callers,
                Arc::clone(keys),
                window,
                Some(redis),
            ));
            errors += outcomes.errors + outcomes.fallback + outcomes.denied;
            let mut row = vec!["flux.check".into(), callers.to_string(), label.into()];
            row.extend(latency_cells(&s));
            row.extend(cpu_cells(&s));
            if callers == 1 && label == "random" {
                let r = ceiling.as_ref().map_or(f64::NAN, |b| s.rate() / b.rps);
                row.push(format!("{} ceiling", ratio(r)));
                row.push("no target".into());
                section.row(row);
                if let Some(b) = &ceiling {
                    section.note(format!(
                        "1 caller, random keys, back-to-back runs: p50 of flux.check {} us, of redis-benchmark's \
                         EVALSHA {} us ({}), of redis-benchmark's PING {}",
                        micros(s.p50()),
                        micros(b.p50_us),
                        ratio(s.p50() / b.p50_us),
                        bench_ping
                            .as_ref()
                            .map_or("-".to_owned(), |p| format!("{} us", micros(p.p50_us)))
                    ));
                }
            } else if callers == 64 {
                let id = if label == "random" {
                    "evalsha-64-random"
                } else {
                    "evalsha-64-hot"
                };
                let r = ceiling.as_ref().map_or(f64::NAN, |b| s.rate() / b.rps);
                report.target(
                    id,
                    &format!("1. flux.check ops/s, 64 callers, {label} keys / EVALSHA ceiling"),
                    r,
                    Cmp::AtLeast,
                    0.9,
                );
                row.push(format!("{} ceiling", ratio(r)));
                row.push(report.verdict_of(id));
                section.row(row);
                if let Some(p) = &pipelined {
                    section.note(format!(
                        "flux.check at 64 callers, {label} keys: {} of pipelined redis-benchmark (-P 16)",
                        ratio(s.rate() / p.rps)
                    ));
                }
            } else {
                let r = ceiling.as_ref().map_or(f64::NAN, |b| s.rate() / b.rps);
                row.push(format!("{} ceiling", ratio(r)));
                row.push("no target".into());
                section.row(row);
            }
        }
    }
    // The cost of the production path's extras (deny cache, breaker, policy).
    redis.query(&["FLUSHALL"])?;
    let (bare, _) = runtime.block_on(drive(
        flux,
        Op::TryCheck,
        64,
        Arc::clone(&random),
        window,
        Some(redis),
    ));
    let mut row = vec![
        "flux.try_check (no deny cache/breaker)".into(),
        "64".into(),
        "random".into(),
    ];
    row.extend(latency_cells(&bare));
    row.extend(cpu_cells(&bare));
    row.extend([String::new(), "no target".into()]);
    section.row(row);
    section.note(
        "ops/s of redis-benchmark rows is its own figure; p99.9 is not reported by redis-benchmark. \
         redis-benchmark opens one connection per client and does not pipeline; flux multiplexes every \
         caller over one connection",
    );
    section.note(
        "client CPU = CPU of the harness process (or of redis-benchmark) per operation; redis CPU = \
         redis-server's used_cpu_user+sys per operation. On 2 cores the client and redis-server compete",
    );
    section.note(format!(
        "limit: {} per client key (nothing is denied); random = {} distinct keys; \
         failures/denials in flux rows: {errors}",
        "1,000,000/s, burst 1,000,000",
        count(sizes.random_keys as f64)
    ));
    report.sections.push(section);
    Ok(())
}
