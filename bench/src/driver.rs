//! In-process decisions (parts 1 and 4): N concurrent callers of one `Flux` for a fixed
//! window, and `redis-benchmark` running the same script as the ceiling.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flux::decision::Source;
use flux::{Flux, Key, Limit, Rate};

use crate::Res;
use crate::redis_server::{RawPing, RedisServer};
use crate::stats::{Cpu, Hist, Summary, children_cpu, self_cpu};

/// The limit of the decision benchmarks: 1,000,000/s with a burst of as many, so nothing is
/// denied and every check is a full admission (GET + SET in the script).
pub(crate) static DECISION_LIMIT: Limit =
    Limit::new("bench::decisions", Rate::per_second::<1_000_000>());

/// The arguments after `now` of one check of [`DECISION_LIMIT`] as the script takes them:
/// the check's key count (1), then its emission interval, tolerance and increment (µs).
pub(crate) const DECISION_ARGV: [&str; 4] = ["1", "1", "1000000", "1"];

/// What each caller does in a loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// `flux.check(key, &limit)`: the production path (deny cache, breaker, failure policy).
    Check,
    /// `flux.try_check(key, &[limit])`: Redis only, no deny cache and no breaker.
    TryCheck,
}

#[derive(Clone, Copy)]
pub(crate) struct Window {
    pub(crate) warmup: Duration,
    pub(crate) measure: Duration,
}

/// Outcomes of a run, by kind.
#[derive(Default, Clone, Copy)]
pub(crate) struct Outcomes {
    pub(crate) allowed: u64,
    pub(crate) denied: u64,
    /// Decided by the failure policy (`FailOpen`, `Local`, `FailClosed`).
    pub(crate) fallback: u64,
    /// `try_check`/`ping` errors.
    pub(crate) errors: u64,
}

/// Runs `callers` tasks doing `op` on random keys of `keys` (one key: a hot key) for the
/// warm-up, then the measured window. Must be called inside a runtime.
pub(crate) async fn drive(
    flux: &Flux,
    op: Op,
    callers: usize,
    keys: Arc<[Key]>,
    window: Window,
    redis: Option<&RedisServer>,
) -> (Summary, Outcomes) {
    let start = Instant::now();
    let warm_end = start + window.warmup;
    let end = warm_end + window.measure;
    let mut tasks = Vec::with_capacity(callers);
    for caller in 0..callers {
        let flux = flux.clone();
        let keys = Arc::clone(&keys);
        tasks.push(tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(caller as u64 + 1);
            let mut hist = Hist::new();
            let mut outcomes = Outcomes::default();
            let mut ops: u64 = 0;
            let mut iteration: u64 = 0;
            loop {
                let key = &keys[rng.usize(..keys.len())];
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                let outcome = match op {
                    Op::Check => classify(flux.check(key, &DECISION_LIMIT).await),
                    Op::TryCheck => {
                        match flux
                            .try_check(key, std::slice::from_ref(&DECISION_LIMIT))
                            .await
                        {
                            Ok(decision) => classify(decision),
                            Err(_) => Kind::Error,
                        }
                    }
                };
                let elapsed = t0.elapsed();
                if t0 >= warm_end {
                    hist.record(elapsed);
                    ops += 1;
                    match outcome {
                        Kind::Allowed => outcomes.allowed += 1,
                        Kind::Denied => outcomes.denied += 1,
                        Kind::Fallback => outcomes.fallback += 1,
                        Kind::Error => outcomes.errors += 1,
                    }
                }
                iteration += 1;
                // The in-memory backend never waits: let the other callers run.
                if iteration.is_multiple_of(16) {
                    tokio::task::yield_now().await;
                }
            }
            (hist, ops, outcomes)
        }));
    }
    let snapshot = |redis: Option<&RedisServer>| Cpu {
        harness: self_cpu(),
        server: None,
        redis: redis.and_then(|r| r.cpu_seconds().ok()),
    };
    tokio::time::sleep_until(warm_end.into()).await;
    let cpu_start = snapshot(redis);
    tokio::time::sleep_until(end.into()).await;
    let cpu_end = snapshot(redis);
    let mut hist = Hist::new();
    let mut ops = 0;
    let mut outcomes = Outcomes::default();
    for task in tasks {
        match task.await {
            Ok((h, n, o)) => {
                hist.merge(&h);
                ops += n;
                outcomes.allowed += o.allowed;
                outcomes.denied += o.denied;
                outcomes.fallback += o.fallback;
                outcomes.errors += o.errors;
            }
            Err(e) => panic!("a caller task failed: {e}"),
        }
    }
    let summary = Summary {
        ops,
        secs: window.measure.as_secs_f64(),
        hist,
        errors: outcomes.errors,
        denied: outcomes.denied,
        cpu: cpu_end.since(&cpu_start),
    };
    (summary, outcomes)
}

enum Kind {
    Allowed,
    Denied,
    Fallback,
    Error,
}

fn classify(decision: flux::Decision) -> Kind {
    match decision.source {
        Source::FailOpen | Source::FailClosed | Source::Local => Kind::Fallback,
        _ if decision.allowed => Kind::Allowed,
        _ => Kind::Denied,
    }
}

/// Latencies of one caller alternating `flux.ping()` and `flux.check()`, so that both see
/// the same machine at the same moments (on a shared 2-core VM, where the caller, Flux's
/// connection task and Redis land on the vCPUs moves every round trip by tens of µs;
/// back-to-back runs would compare moods, not calls).
pub(crate) struct Interleaved {
    /// `flux.ping()`: `PING` over Flux's connection.
    pub(crate) ping: Hist,
    /// `flux.check(random key)`.
    pub(crate) check: Hist,
}

/// One caller: `flux.ping()` and `flux.check()` in alternation, for the warm-up and the
/// measured window.
pub(crate) async fn interleaved(flux: &Flux, keys: Arc<[Key]>, window: Window) -> Res<Interleaved> {
    let warm_end = Instant::now() + window.warmup;
    let end = warm_end + window.measure;
    let mut out = Interleaved {
        ping: Hist::new(),
        check: Hist::new(),
    };
    let mut rng = fastrand::Rng::with_seed(7);
    while Instant::now() < end {
        let t0 = Instant::now();
        flux.ping(Duration::from_secs(1)).await?;
        let t1 = Instant::now();
        let key = &keys[rng.usize(..keys.len())];
        flux.check(key, &DECISION_LIMIT).await;
        let t2 = Instant::now();
        if t0 >= warm_end {
            out.ping.record(t1 - t0);
            out.check.record(t2 - t1);
        }
    }
    Ok(out)
}

/// The round trip of `PING` on one kept-open blocking socket, `n` times in a row: the floor
/// of any Redis call on this machine. Returns the latencies and the time taken.
pub(crate) fn raw_pings(port: u16, n: usize) -> Res<(Hist, Duration)> {
    let mut raw = RawPing::connect(port)?;
    let mut hist = Hist::new();
    let begin = Instant::now();
    for _ in 0..n {
        let start = Instant::now();
        raw.ping()?;
        hist.record(start.elapsed());
    }
    Ok((hist, begin.elapsed()))
}

/// Distinct client keys `client-0`, `client-1`, ...
pub(crate) fn client_keys(n: usize) -> Arc<[Key]> {
    (0..n).map(|i| Key::new(format!("client-{i}"))).collect()
}

/// What one `redis-benchmark` run reported.
pub(crate) struct BenchRun {
    pub(crate) rps: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    /// CPU seconds of the `redis-benchmark` process and of Redis during the run.
    pub(crate) cpu: Cpu,
    pub(crate) requests: u64,
}

/// Runs `redis-benchmark -c clients -P pipeline -n requests [-r keyspace] --csv COMMAND...` against the
/// harness's Redis. `Ok(None)` when `redis-benchmark` is not on `PATH`.
pub(crate) fn redis_benchmark(
    server: &RedisServer,
    clients: usize,
    pipeline: usize,
    requests: u64,
    keyspace: Option<u64>,
    command: &[&str],
) -> Res<Option<BenchRun>> {
    let mut cmd = Command::new("redis-benchmark");
    cmd.args(["-h", "127.0.0.1", "-p", &server.port().to_string()])
        .args(["-c", &clients.to_string(), "-n", &requests.to_string()])
        .args(["-P", &pipeline.to_string()])
        .arg("--csv");
    if let Some(k) = keyspace {
        cmd.args(["-r", &k.to_string()]);
    }
    cmd.args(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let before = Cpu {
        harness: children_cpu(),
        server: None,
        redis: server.cpu_seconds().ok(),
    };
    let output = match cmd.output() {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let after = Cpu {
        harness: children_cpu(),
        server: None,
        redis: server.cpu_seconds().ok(),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "redis-benchmark failed ({}): {stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    // --csv prints a header, "test","rps","avg_latency_ms",...,"p50_latency_ms",...,
    // "p99_latency_ms",... (older versions: "test","rps" only), then one line per test. The
    // test name may hold commas, so fields are matched from the right.
    let header: Vec<&str> = stdout
        .lines()
        .find(|l| l.starts_with("\"test\""))
        .map(|l| l.split(',').map(|f| f.trim_matches('"')).collect())
        .unwrap_or_else(|| vec!["test", "rps"]);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('"') && !l.starts_with("\"test\""))
        .ok_or_else(|| format!("no result line in redis-benchmark's output: {stdout}"))?;
    let values: Vec<f64> = line
        .rsplit(',')
        .take(header.len().saturating_sub(1))
        .map(|f| f.trim_matches('"').parse::<f64>().unwrap_or(f64::NAN))
        .collect();
    let field = |name: &str| -> f64 {
        header
            .iter()
            .skip(1)
            .rev()
            .position(|h| *h == name)
            .and_then(|i| values.get(i).copied())
            .unwrap_or(f64::NAN)
    };
    let rps = field("rps");
    if !rps.is_finite() {
        return Err(format!("unexpected redis-benchmark output: {stdout}").into());
    }
    Ok(Some(BenchRun {
        rps,
        p50_us: field("p50_latency_ms") * 1_000.0,
        p99_us: field("p99_latency_ms") * 1_000.0,
        cpu: after.since(&before),
        requests,
    }))
}
