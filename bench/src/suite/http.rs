//! Part 2: end-to-end HTTP, unlimited / in-memory / Redis.

use super::{Sizes, latency_cells};
use crate::Res;
use crate::http::{Group, ServerChild, cpu_probe, load};
use crate::progress;
use crate::redis_server::RedisServer;
use crate::report::{Cmp, Report, Section, micros, opt_micros, ratio};
use crate::stats::Summary;

/// An HTTP variant: its name, the path it serves, the server's environment.
type Variant<'a> = (&'static str, &'static str, Vec<(&'static str, &'a str)>);

pub(crate) fn part2_http(
    report: &mut Report,
    sizes: &Sizes,
    redis: &RedisServer,
    server_workers: usize,
) -> Res<()> {
    progress("part 2: end-to-end HTTP");
    let mut section = Section::new(
        "2. End-to-end HTTP: one axum handler, unlimited / #[rate_limit] or FluxLayer, in memory or on Redis",
        &[
            "handler",
            "conns",
            "req/s",
            "p50 us",
            "p99 us",
            "p99.9 us",
            "server CPU us/req",
            "redis CPU us/req",
            "all CPU us/req",
            "CPU ratio",
            "req/s vs unlimited",
            "p99 vs unlimited",
            "target",
        ],
    );
    let url = redis.url();
    let variants: [Variant<'_>; 5] = [
        ("unlimited", "/unlimited", vec![]),
        ("#[rate_limit] in-memory", "/limited", vec![]),
        (
            "#[rate_limit] Redis",
            "/limited",
            vec![("FLUX_REDIS_URL", url.as_str())],
        ),
        ("FluxLayer in-memory", "/layered", vec![]),
        (
            "FluxLayer Redis",
            "/layered",
            vec![("FLUX_REDIS_URL", url.as_str())],
        ),
    ];
    // All three servers stay up (idle ones cost nothing) and the variants take turns, round
    // after round, so that a disturbance from outside hits them alike.
    let servers = variants
        .iter()
        .map(|(_, _, env)| ServerChild::spawn(server_workers, env))
        .collect::<Res<Vec<_>>>()?;
    let conns_list = [1_usize, 64];
    let mut runs: Vec<Vec<Vec<Summary>>> = (0..variants.len())
        .map(|_| conns_list.iter().map(|_| Vec::new()).collect())
        .collect();
    for round in 0..sizes.http_rounds {
        for (c, &conns) in conns_list.iter().enumerate() {
            for (v, (name, path, _)) in variants.iter().enumerate() {
                progress(&format!("  round {}: {name}, {conns} conns", round + 1));
                redis.query(&["FLUSHALL"])?;
                let group = Group {
                    path,
                    connections: conns,
                    client: |i| format!("client-{i}"),
                    pace: None,
                };
                let probe = cpu_probe(&servers[v], Some(redis));
                let mut results = load(
                    servers[v].addr,
                    std::slice::from_ref(&group),
                    sizes.http.warmup,
                    sizes.http.measure,
                    &probe,
                )?;
                runs[v][c].push(results.remove(0).summary);
            }
        }
    }
    drop(servers);
    let mut baseline: Vec<(f64, f64, f64)> = Vec::new();
    let mut other_errors = 0;
    for (v, (name, _, _)) in variants.iter().enumerate() {
        let uses_redis = name.ends_with("Redis");
        for (c, &conns) in conns_list.iter().enumerate() {
            let s = median_round(std::mem::take(&mut runs[v][c]));
            other_errors += s.errors + s.denied;
            let mut row = vec![name.to_string(), conns.to_string()];
            row.extend(latency_cells(&s));
            row.push(opt_micros(s.per_op_us(s.cpu.server)));
            row.push(if uses_redis {
                opt_micros(s.per_op_us(s.cpu.redis))
            } else {
                "-".into()
            });
            let redis_cpu = if uses_redis { s.cpu.redis } else { Some(0.0) };
            let all = (|| Some(s.cpu.server? + s.cpu.harness? + redis_cpu?))();
            let all_us = s.per_op_us(all).unwrap_or(f64::NAN);
            row.push(micros(all_us));
            if v == 0 {
                baseline.push((s.rate(), s.p99(), all_us));
                row.extend([
                    "1.00x".into(),
                    "1.00x".into(),
                    "1.00x".into(),
                    String::new(),
                ]);
            } else {
                let (rate, p99, base_us) = baseline[c];
                row.push(ratio(base_us / all_us));
                let r = s.rate() / rate;
                row.push(ratio(r));
                row.push(ratio(s.p99() / p99));
                if conns == 64 && name.starts_with("#[rate_limit]") {
                    let (id, threshold, what) = if uses_redis {
                        (
                            "http-redis",
                            0.6,
                            "2. HTTP req/s, Redis limiter / unlimited, 64 conns",
                        )
                    } else {
                        (
                            "http-memory",
                            0.95,
                            "2. HTTP req/s, in-memory limiter / unlimited, 64 conns",
                        )
                    };
                    report.target(id, what, r, Cmp::AtLeast, threshold);
                    row.push(report.verdict_of(id));
                } else {
                    row.push("no target".into());
                }
            }
            section.row(row);
        }
    }
    section.note(format!(
        "{} round(s) of {:.1} s per row, variants interleaved; req/s and CPU are the median round's, \
         latencies are over all rounds",
        sizes.http_rounds,
        sizes.http.measure.as_secs_f64()
    ));
    section.note(format!(
        "the load generator (hyper, keep-alive, one current-thread runtime) runs on the same 2 cores \
         as the server ({server_workers} workers) and redis-server: req/s is what the three share; \
         all CPU = server + load generator + redis-server, per request; CPU ratio = unlimited's all CPU / \
         this row's, the req/s ratio a CPU-bound machine would show (steadier than req/s on a shared VM)"
    ));
    section.note(format!(
        "the limit is 1,000,000/s per x-client header (one client per connection): nothing is denied; \
         non-200 answers: {other_errors}"
    ));
    report.sections.push(section);
    Ok(())
}

/// The round with the median rate, with the latencies of every round.
pub(crate) fn median_round(mut rounds: Vec<Summary>) -> Summary {
    rounds.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
    let mut median = rounds.remove(rounds.len() / 2);
    for other in &rounds {
        median.hist.merge(&other.hist);
        median.errors += other.errors;
        median.denied += other.denied;
    }
    median
}
