//! Part 2: end-to-end HTTP: unlimited, tower_governor, a hand-written fixed window, and Flux
//! (the attribute and the layer, in memory and on Redis), on keys per connection and fresh
//! keys per request; then the memory each server holds.

use super::{Sizes, latency_cells};
use crate::Res;
use crate::http::{Group, ServerChild, cpu_probe, load, rss_bytes, server_stats};
use crate::progress;
use crate::redis_server::RedisServer;
use crate::report::{Cmp, Report, Section, count, micros, opt_micros, ratio};
use crate::stats::Summary;

/// Which `x-client` headers part 2's load sends (`--http-keys`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HttpKeys {
    /// One client per connection (`client-<i>`): each limiter sees a fixed, small key set.
    Connection,
    /// A new client for every request (`client-<i>-<n>`): every check meets an unknown key.
    Fresh,
}

impl HttpKeys {
    fn label(self) -> &'static str {
        match self {
            HttpKeys::Connection => "conn",
            HttpKeys::Fresh => "fresh",
        }
    }
}

/// Where a variant's limiter keeps its entries.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Store {
    None,
    /// Flux's in-memory backend: `Flux::local_buckets()`.
    FluxMemory,
    /// tower_governor's keyed map: `RateLimiter::len()`.
    Governor,
    /// Redis: `DBSIZE` (the harness flushes Redis before each run).
    Redis,
}

/// An HTTP variant: its name, the path it serves, the server's environment, its store.
struct Variant<'a> {
    name: &'static str,
    path: &'static str,
    env: Vec<(&'static str, &'a str)>,
    store: Store,
}

pub(crate) fn part2_http(
    report: &mut Report,
    sizes: &Sizes,
    redis: &RedisServer,
    server_workers: usize,
    keys_list: &[HttpKeys],
) -> Res<()> {
    progress("part 2: end-to-end HTTP");
    let mut section = Section::new(
        "2. End-to-end HTTP: one axum handler, unlimited / tower_governor / a hand-written fixed window / #[rate_limit] or FluxLayer, in memory or on Redis",
        &[
            "handler",
            "keys",
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
    // `EXPIRE key 1 NX` (the fixed window's) needs Redis 7.
    let redis_major = redis
        .info("server")?
        .into_iter()
        .find(|(k, _)| k == "redis_version")
        .and_then(|(_, v)| v.split('.').next().and_then(|m| m.parse::<u32>().ok()))
        .unwrap_or(0);
    let mut variants: Vec<Variant<'_>> = vec![
        Variant {
            name: "unlimited",
            path: "/unlimited",
            env: vec![],
            store: Store::None,
        },
        Variant {
            name: "tower_governor",
            path: "/governor",
            env: vec![],
            store: Store::Governor,
        },
    ];
    if redis_major >= 7 {
        variants.push(Variant {
            name: "fixed window, Redis",
            path: "/fixed",
            env: vec![("FLUX_BENCH_REDIS_URL", url.as_str())],
            store: Store::Redis,
        });
    }
    variants.extend([
        Variant {
            name: "#[rate_limit] in-memory",
            path: "/limited",
            env: vec![],
            store: Store::FluxMemory,
        },
        Variant {
            name: "#[rate_limit] Redis",
            path: "/limited",
            env: vec![("FLUX_REDIS_URL", url.as_str())],
            store: Store::Redis,
        },
        Variant {
            name: "FluxLayer in-memory",
            path: "/layered",
            env: vec![],
            store: Store::FluxMemory,
        },
        Variant {
            name: "FluxLayer Redis",
            path: "/layered",
            env: vec![("FLUX_REDIS_URL", url.as_str())],
            store: Store::Redis,
        },
    ]);
    // One server process per variant (the global limiter is per process, and each process's
    // RSS is then its own limiter's). All stay up (idle ones cost nothing) and the variants
    // take turns, round after round, so that a disturbance from outside hits them alike.
    let servers = variants
        .iter()
        .map(|v| ServerChild::spawn(server_workers, &v.env))
        .collect::<Res<Vec<_>>>()?;
    let conns_list = [1_usize, 64];
    let cases: Vec<(HttpKeys, usize)> = keys_list
        .iter()
        .flat_map(|&k| conns_list.iter().map(move |&c| (k, c)))
        .collect();
    let mut runs: Vec<Vec<Vec<Summary>>> = (0..variants.len())
        .map(|_| cases.iter().map(|_| Vec::new()).collect())
        .collect();
    // Entries each variant's limiter holds right after its last run.
    let mut held: Vec<Option<u64>> = vec![None; variants.len()];
    for round in 0..sizes.http_rounds {
        for (c, &(keys, conns)) in cases.iter().enumerate() {
            for (v, variant) in variants.iter().enumerate() {
                progress(&format!(
                    "  round {}: {}, {} keys, {conns} conns",
                    round + 1,
                    variant.name,
                    keys.label()
                ));
                redis.query(&["FLUSHALL"])?;
                let group = Group {
                    path: variant.path,
                    connections: conns,
                    client: |i| format!("client-{i}"),
                    fresh: keys == HttpKeys::Fresh,
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
                held[v] = match variant.store {
                    Store::None => None,
                    Store::Redis => redis.query(&["DBSIZE"])?.trim().parse().ok(),
                    Store::FluxMemory => Some(server_stats(servers[v].addr)?.0),
                    Store::Governor => Some(server_stats(servers[v].addr)?.1),
                };
            }
        }
    }
    let rss: Vec<Option<u64>> = servers.iter().map(|s| rss_bytes(s.pid()).ok()).collect();
    drop(servers);
    let mut baseline: Vec<(f64, f64, f64)> = Vec::new();
    let mut other_errors = 0;
    for (v, variant) in variants.iter().enumerate() {
        let uses_redis = variant.store == Store::Redis;
        for (c, &(keys, conns)) in cases.iter().enumerate() {
            let s = median_round(std::mem::take(&mut runs[v][c]));
            other_errors += s.errors + s.denied;
            let mut row = vec![
                variant.name.to_string(),
                keys.label().to_string(),
                conns.to_string(),
            ];
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
                if conns == 64
                    && keys == HttpKeys::Connection
                    && variant.name.starts_with("#[rate_limit]")
                {
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
        "limits no client reaches: Flux 1,000,000/s with burst 1,000,000 per x-client header; \
         tower_governor one cell per 1 us with burst 1,000,000 per x-client; the fixed window \
         1,000,000 per client per second (MULTI; INCR; EXPIRE 1 NX; EXEC on a ConnectionManager); \
         keys conn = one x-client per connection, fresh = a new x-client per request; \
         non-200 answers: {other_errors}"
    ));
    if redis_major < 7 {
        section.note(format!(
            "the fixed-window rows are left out: EXPIRE ... NX needs Redis 7 (this is {redis_major}.x)"
        ));
    }
    report.sections.push(section);

    let mut memory = Section::new(
        "2m. Memory held after part 2's load: each limiter's live entries, and each server's RSS",
        &[
            "handler",
            "entries held in",
            "live entries after the run",
            "server RSS MB",
        ],
    );
    for (v, variant) in variants.iter().enumerate() {
        let mut row = vec![
            variant.name.to_string(),
            match variant.store {
                Store::None => "-",
                Store::FluxMemory => "process (Flux::local_buckets)",
                Store::Governor => "process (RateLimiter::len)",
                Store::Redis => "Redis (DBSIZE)",
            }
            .to_string(),
        ];
        row.push(held[v].map_or_else(|| "-".to_owned(), |n| count(n as f64)));
        row.push(rss[v].map_or_else(|| "-".to_owned(), |b| format!("{:.1}", b as f64 / 1e6)));
        memory.row(row);
    }
    let last = cases
        .last()
        .map(|(keys, conns)| format!("{} keys, {conns} conns", keys.label()))
        .unwrap_or_default();
    memory.note(format!(
        "live entries: right after the variant's last run ({last}; Redis is flushed before \
         every run, so DBSIZE counts that run's keys not yet expired); RSS: VmRSS of \
         /proc/<pid>/status of each variant's own server process after all its runs"
    ));
    memory.note(
        "tower_governor keeps a key until RateLimiter::retain_recent() runs (its docs suggest a \
         periodic task; this server, like its README's example, runs none); Flux's in-memory \
         backend drops a bucket once it is full again; Flux's Redis keys expire when their bucket \
         is full again (1 ms here), the fixed window's after 1 s",
    );
    report.sections.push(memory);
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
