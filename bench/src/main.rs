//! Flux's load-test harness: `cargo run --release -p flux-bench -- [--quick] [--out FILE]`.
//!
//! Starts its own `redis-server` on a free loopback port, measures everything side by side
//! in one run and prints one table of figures, ratios and targets (see `BENCHMARKS.md`):
//!
//! 1. Redis decisions (`flux.check`) against `PING` and `redis-benchmark` running the same
//!    script by `EVALSHA` (the ceiling), 1 and 64 callers, random keys and one hot key; then
//!    decisions per second from 1 to 128 callers (1b).
//! 2. End-to-end HTTP: one axum handler unlimited, limited in memory, limited through Redis.
//! 3. A hot-key flood: Redis commands per request, p99 of the well-behaved clients.
//! 4. An outage (Redis frozen with `SIGSTOP`, breaker open) against the in-memory backend.
//! 5. In-process ns/op (the careful figures: `cargo bench -p flux-bench`).
//! 6. Memory per active key, in Redis and in the in-memory backend; 6b: a flood of rotating
//!    keys against a per-day limit, without a cap and at the default and a small one.
//! 7. What metrics cost.
//! 8. Token leasing on one hot key: checks/s and Redis calls per check, and its accuracy
//!    across three instances.
//!
//! It also draws two pictures (`--pictures DIR`, see `pictures.rs`): the latency distribution
//! of a check against a `PING`, and decisions per second against the number of callers.
//!
//! Subcommands used by the harness itself: `serve` (an HTTP server variant, as a child
//! process), `memprobe` (the in-memory backend's memory, in a fresh process) and `memflood`
//! (part 6b's floods, each in a fresh process); and one for
//! profiling by hand: `load` (drives a running `serve`).

mod driver;
mod http;
mod memory;
mod pictures;
mod redis_server;
mod report;
mod stats;
mod suite;

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use flux::Flux;

use crate::http::{Group, load};
use crate::redis_server::RedisServer;
use crate::report::{Report, count, micros};
use crate::suite::{
    HttpKeys, Sizes, part1_decisions, part1b_callers, part1c_batching, part2_http, part3_flood,
    part4_outage, part5_micro, part6_memory, part7_telemetry, part8_lease, part9_overrides,
};

pub(crate) type Res<T> = Result<T, Box<dyn std::error::Error>>;

const USAGE: &str = "usage: flux-bench [--quick] [--out FILE] [--pictures DIR] [--server-workers N] [--only 1,2,..]
                  [--http-keys conn|fresh|both]
       flux-bench serve --addr ADDR [--workers N]   (an HTTP server variant; used by the harness)
       flux-bench memprobe --keys N                 (in-memory bytes per key; used by the harness)
       flux-bench memflood --keys N --cap C --flood light|draining
                                                    (a key-rotation flood in memory; used by the harness)
       flux-bench load --addr ADDR [--path P] [--conns N] [--secs S] [--one-client | --fresh-keys]
                                                    (drive a running `serve`, e.g. under a profiler)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("serve") => {
            let addr = flag(&args, "--addr").unwrap_or_else(|| "127.0.0.1:0".to_owned());
            let workers = flag(&args, "--workers")
                .and_then(|w| w.parse().ok())
                .unwrap_or(2);
            http::serve(&addr, workers)
        }
        Some("memprobe") => {
            let keys = flag(&args, "--keys")
                .and_then(|k| k.parse().ok())
                .unwrap_or(1_000_000);
            memory::memprobe(keys)
        }
        Some("memflood") => {
            let number = |name| flag(&args, name).and_then(|k| k.parse().ok());
            match flag(&args, "--flood")
                .as_deref()
                .and_then(memory::Flood::parse)
            {
                Some(flood) => memory::memflood(
                    number("--keys").unwrap_or(100_000),
                    number("--cap").unwrap_or(flux::config::DEFAULT_MEMORY_MAX_BUCKETS),
                    flood,
                ),
                None => Err("memflood needs --flood light|draining".into()),
            }
        }
        Some("load") => load_only(&args),
        Some("-h" | "--help") => {
            println!("{USAGE}");
            Ok(())
        }
        _ => match Options::parse(&args) {
            Ok(options) => run(&options),
            Err(e) => {
                eprintln!("flux-bench: {e}\n{USAGE}");
                return ExitCode::from(2);
            }
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flux-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The options of a benchmark run.
struct Options {
    quick: bool,
    out: Option<PathBuf>,
    /// Where the pictures go (default: `flux-bench-pictures` in the temporary directory).
    pictures: Option<PathBuf>,
    server_workers: usize,
    /// Parts to run (1-8); all when empty.
    only: Vec<u8>,
    /// Part 2's loads: one x-client per connection, a new one per request, or both.
    http_keys: Vec<HttpKeys>,
}

impl Options {
    fn parse(args: &[String]) -> Result<Options, String> {
        let mut options = Options {
            quick: false,
            out: None,
            pictures: None,
            server_workers: 2,
            only: Vec::new(),
            http_keys: vec![HttpKeys::Connection, HttpKeys::Fresh],
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut value = || {
                args.next()
                    .cloned()
                    .ok_or_else(|| format!("{arg} needs a value"))
            };
            match arg.as_str() {
                "--quick" => options.quick = true,
                "--out" => options.out = Some(PathBuf::from(value()?)),
                "--pictures" => options.pictures = Some(PathBuf::from(value()?)),
                "--server-workers" => {
                    options.server_workers = value()?
                        .parse()
                        .map_err(|_| "--server-workers takes a number".to_owned())?;
                }
                "--only" => {
                    for part in value()?.split(',') {
                        match part.trim().parse::<u8>() {
                            Ok(n @ 1..=9) => options.only.push(n),
                            _ => return Err(format!("--only takes parts 1 to 9, not {part:?}")),
                        }
                    }
                }
                "--http-keys" => {
                    options.http_keys = match value()?.as_str() {
                        "conn" => vec![HttpKeys::Connection],
                        "fresh" => vec![HttpKeys::Fresh],
                        "both" => vec![HttpKeys::Connection, HttpKeys::Fresh],
                        other => {
                            return Err(format!(
                                "--http-keys takes conn, fresh or both, not {other:?}"
                            ));
                        }
                    };
                }
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        Ok(options)
    }

    fn runs(&self, part: u8) -> bool {
        self.only.is_empty() || self.only.contains(&part)
    }
}

/// `flux-bench load`: drives a running `flux-bench serve` alone and prints req/s and p99,
/// to profile the server (`perf record -p PID`) without the rest of the suite.
fn load_only(args: &[String]) -> Res<()> {
    let addr = flag(args, "--addr")
        .ok_or("load needs --addr ADDR (of a running `flux-bench serve`)")?
        .parse()?;
    let path: &'static str = match flag(args, "--path").as_deref() {
        None | Some("/limited") => "/limited",
        Some("/unlimited") => "/unlimited",
        Some("/flood") => "/flood",
        Some("/layered") => "/layered",
        Some("/governor") => "/governor",
        Some("/fixed") => "/fixed",
        Some(other) => return Err(format!("unknown path {other}").into()),
    };
    let conns = flag(args, "--conns")
        .and_then(|c| c.parse().ok())
        .unwrap_or(64);
    let secs = flag(args, "--secs")
        .and_then(|c| c.parse().ok())
        .unwrap_or(10.0);
    let group = Group {
        path,
        connections: conns,
        client: if args.iter().any(|a| a == "--one-client") {
            |_| "flooder".to_owned()
        } else {
            |i| format!("client-{i}")
        },
        fresh: args.iter().any(|a| a == "--fresh-keys"),
        pace: None,
    };
    let probe = || stats::Cpu::default();
    let results = load(
        addr,
        std::slice::from_ref(&group),
        Duration::from_millis(200),
        Duration::from_secs_f64(secs),
        &probe,
    )?;
    let s = &results[0].summary;
    println!(
        "{} req/s, p50 {} us, p99 {} us, {} errors, {} denied",
        count(s.rate()),
        micros(s.p50()),
        micros(s.p99()),
        s.errors,
        s.denied
    );
    Ok(())
}

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

pub(crate) fn progress(what: &str) {
    eprintln!("flux-bench: {what}");
}

fn run(options: &Options) -> Res<()> {
    let quick = options.quick;
    let server_workers = options.server_workers;
    let sizes = Sizes::new(quick);
    let started = Instant::now();
    let mut report = Report {
        quick,
        ..Report::default()
    };
    let load_start = load_average();
    report.preamble = preamble(quick, server_workers);
    for line in &report.preamble {
        progress(line);
    }

    let mut redis = RedisServer::start()?;
    progress(&format!(
        "redis-server pid {} on port {} (dir {})",
        redis.pid(),
        redis.port(),
        redis.dir().display()
    ));
    // The in-process callers (parts 1, 4, 6) run on the runtime a `#[tokio::main]` server
    // gets on this machine: multi-threaded, one worker per core.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;

    let flux = Flux::builder().redis(redis.url()).build()?;
    runtime.block_on(flux.ping(Duration::from_secs(5)))?;
    let sha = redis.query(&["SCRIPT", "LOAD", include_str!("../../lua/gcra.lua")])?;

    if options.runs(1) {
        part1_decisions(&mut report, &sizes, &runtime, &flux, &redis, &sha)?;
        part1b_callers(&mut report, &sizes, &runtime, &flux, &redis, &sha)?;
        part1c_batching(&mut report, &sizes, &runtime, &flux, &redis)?;
    }
    if options.runs(2) {
        part2_http(
            &mut report,
            &sizes,
            &redis,
            server_workers,
            &options.http_keys,
        )?;
    }
    if options.runs(3) {
        part3_flood(&mut report, &sizes, &redis, server_workers)?;
    }
    if options.runs(4) {
        part4_outage(&mut report, &sizes, &runtime, &mut redis)?;
    }
    if options.runs(5) {
        part5_micro(&mut report, &sizes);
    }
    if options.runs(6) {
        part6_memory(&mut report, &sizes, &runtime, &flux, &redis)?;
    }
    if options.runs(7) {
        part7_telemetry(&mut report, &sizes, &redis)?;
    }
    if options.runs(8) {
        part8_lease(&mut report, &sizes, &runtime, &redis)?;
    }
    if options.runs(9) {
        part9_overrides(&mut report, &sizes, &runtime, &redis)?;
    }

    report.preamble.push(format!(
        "run took {:.0} s; load average (1/5/15 min) at start {load_start}, at end {}",
        started.elapsed().as_secs_f64(),
        load_average()
    ));
    let text = report.render();
    println!("{text}");
    if let Some(path) = &options.out {
        std::fs::write(path, &text)?;
        progress(&format!("report written to {}", path.display()));
    }
    let dir = options
        .pictures
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("flux-bench-pictures"));
    let note = if quick || cfg!(debug_assertions) {
        " (quick or debug run: noise)"
    } else {
        ""
    };
    for path in pictures::draw(&report.pictures, &dir, note)? {
        progress(&format!("picture written to {}", path.display()));
    }
    drop(runtime);
    drop(redis);
    Ok(())
}

fn preamble(quick: bool, server_workers: usize) -> Vec<String> {
    let sh = |cmd: &str, args: &[&str]| -> String {
        Command::new(cmd)
            .args(args)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "unknown".to_owned())
    };
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    vec![
        format!(
            "Flux benchmark ({} mode{})",
            if quick { "quick" } else { "full" },
            if cfg!(debug_assertions) {
                ", DEBUG build: figures are meaningless"
            } else {
                ", release build"
            }
        ),
        format!("date: {}", sh("date", &["-u", "+%Y-%m-%d %H:%M:%S UTC"])),
        format!(
            "machine: {cores} cores, {cpu}, kernel {}",
            sh("uname", &["-r"])
        ),
        format!("redis: {}", sh("redis-server", &["--version"])),
        format!("rustc: {}", sh("rustc", &["--version"])),
        format!(
            "setup: harness callers on a 2-worker tokio runtime; HTTP servers are child processes \
             with {server_workers} workers; the HTTP load generator is one current-thread runtime; \
             all share the same cores with redis-server"
        ),
    ]
}

/// `/proc/loadavg`'s three averages: anything well above 0 means other processes shared the
/// cores during the run.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".to_owned())
}
