//! Memory per active key (part 6): Redis' `used_memory` over many distinct buckets, and the
//! in-memory backend's resident set growth in a fresh child process (`flux-bench memprobe`).

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use flux::{Flux, Key, Limit, Rate};

use crate::Res;
use crate::redis_server::RedisServer;
use crate::stats::rss_bytes;

/// A long-window limit, so no bucket expires while the keys are counted: one token per 6
/// minutes (the bucket's time to live after one request is 6 minutes).
pub(crate) static MEMORY_LIMIT: Limit = Limit::new("app::api::search", Rate::per_hour::<10>());

/// Client key `i` as an IPv4 address, the most common key (`key = "ip"`).
pub(crate) fn ip_key(i: usize) -> Key {
    let n = 0x0A00_0000_u32.wrapping_add(u32::try_from(i).unwrap_or(u32::MAX));
    Key::from_ip(Ipv4Addr::from(n).into())
}

pub(crate) struct RedisMemory {
    pub(crate) keys: u64,
    pub(crate) bytes_per_key: f64,
    pub(crate) sample_key: String,
}

/// Flushes Redis, checks `n` distinct clients through `flux` (64 at a time), and divides
/// the growth of `used_memory` by the number of keys Redis then holds.
pub(crate) async fn redis_bytes_per_key(
    flux: &Flux,
    server: &RedisServer,
    n: usize,
) -> Res<RedisMemory> {
    server.query(&["FLUSHALL"])?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = used_memory(server)?;
    let callers = 64;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let flux = flux.clone();
        let next = Arc::clone(&next);
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let _ = flux
                    .try_check(ip_key(i), std::slice::from_ref(&MEMORY_LIMIT))
                    .await;
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    let after = used_memory(server)?;
    let mut con = server.connection()?;
    let keys: u64 = redis::cmd("DBSIZE").query(&mut con)?;
    let sample_key: Option<String> = redis::cmd("RANDOMKEY").query(&mut con)?;
    Ok(RedisMemory {
        keys,
        bytes_per_key: after.saturating_sub(before) as f64 / keys.max(1) as f64,
        sample_key: sample_key.unwrap_or_default(),
    })
}

fn used_memory(server: &RedisServer) -> Res<u64> {
    let info = server.info("memory")?;
    info.iter()
        .find(|(k, _)| k == "used_memory")
        .and_then(|(_, v)| v.parse().ok())
        .ok_or_else(|| "INFO memory has no used_memory".into())
}

pub(crate) struct LocalMemory {
    pub(crate) keys: usize,
    pub(crate) bytes_per_key: f64,
}

/// `flux-bench memprobe --keys N`: in a fresh process, the RSS growth of checking `n`
/// distinct clients on the in-memory backend. Prints `MEMPROBE <rss before> <rss after>
/// <buckets held>`.
pub(crate) fn memprobe(n: usize) -> Res<()> {
    // No cap: every bucket is counted (the default cap is the full run's 1,000,000 keys).
    let flux = Flux::builder()
        .memory()
        .memory_max_buckets(usize::MAX)
        .build()?;
    // Warm the allocator and the limiter's shards with a few keys first.
    for i in 0..1_000 {
        flux_bench::micro::block_ready(flux.check(Key::new(format!("warm-{i}")), &MEMORY_LIMIT));
    }
    let before = rss_bytes().ok_or("no /proc/self/statm")?;
    for i in 0..n {
        flux_bench::micro::block_ready(flux.check(ip_key(i), &MEMORY_LIMIT));
    }
    let after = rss_bytes().ok_or("no /proc/self/statm")?;
    println!("MEMPROBE {before} {after} {}", flux.local_buckets() - 1_000);
    Ok(())
}

/// Runs [`memprobe`] in a child process and reads its figures.
pub(crate) fn local_bytes_per_key(n: usize) -> Res<LocalMemory> {
    let figures = child_figures(&["memprobe", "--keys", &n.to_string()], "MEMPROBE")?;
    let [before, after, buckets] = figures[..] else {
        return Err(format!("unexpected memprobe figures: {figures:?}").into());
    };
    Ok(LocalMemory {
        keys: usize::try_from(buckets).unwrap_or(usize::MAX),
        bytes_per_key: after.saturating_sub(before) as f64 / buckets.max(1) as f64,
    })
}

/// Part 6b's floods: rotating keys against a per-day limit, each visit of a key one or two
/// requests, every key visited twice (the second pass finds its bucket, or a fresh one if it
/// was evicted).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flood {
    /// 10/day, one request per visit: each flood bucket holds 9 or 8 tokens of 10, near full.
    Light,
    /// 1/day, two requests per visit: every visit drains its key (one admitted, one denied).
    Draining,
}

impl Flood {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Flood::Light => "10/day, 1 request per visit",
            Flood::Draining => "1/day, 2 requests per visit",
        }
    }

    fn arg(self) -> &'static str {
        match self {
            Flood::Light => "light",
            Flood::Draining => "draining",
        }
    }

    pub(crate) fn parse(arg: &str) -> Option<Flood> {
        match arg {
            "light" => Some(Flood::Light),
            "draining" => Some(Flood::Draining),
            _ => None,
        }
    }
}

static DAILY_10: Limit = Limit::new("app::api::daily", Rate::per_day::<10>());
static DAILY_1: Limit = Limit::new("app::api::daily", Rate::per_day::<1>());

/// Client `i` of a flood of rotating IPv6 addresses: one /64 each, out of 2001:db8::/32.
fn rotating_key(i: usize) -> Key {
    let n = (0x2001_0db8_u128 << 96) | ((i as u128) << 64) | 1;
    Key::from_ip(std::net::Ipv6Addr::from(n).into())
}

/// What a flood did in its own process.
pub(crate) struct FloodRun {
    pub(crate) requests: u64,
    pub(crate) admitted: u64,
    /// Requests of the drained client admitted after it drained its bucket (0 when its
    /// bucket is kept); `requests` and `admitted` are the flood's own.
    pub(crate) drained_admitted: u64,
    pub(crate) buckets: u64,
    pub(crate) evictions: u64,
    /// RSS growth after each third of the flood, and the peak's (bytes).
    pub(crate) rss: [u64; 3],
    pub(crate) peak: u64,
}

/// `flux-bench memflood --keys N --cap C --flood light|draining`: in a fresh process, a
/// flood of `keys` rotating clients (two passes) against a per-day limit on the in-memory
/// backend capped at `cap` buckets, with one client that drained its bucket first and comes
/// back every 1,000 visits. Prints `MEMFLOOD <requests> <admitted> <drained admitted>
/// <buckets> <evictions> <rss growth after each third, 3 figures> <peak growth>`.
pub(crate) fn memflood(keys: usize, cap: usize, flood: Flood) -> Res<()> {
    let flux = Flux::builder().memory().memory_max_buckets(cap).build()?;
    let limit = match flood {
        Flood::Light => &DAILY_10,
        Flood::Draining => &DAILY_1,
    };
    let drained = Key::new("drained-client");
    let check = |key: Key| flux_bench::micro::block_ready(flux.check(key, limit)).allowed;
    while check(drained.clone()) {}
    let before = rss_bytes().ok_or("no /proc/self/statm")?;
    let per_visit = match flood {
        Flood::Light => 1,
        Flood::Draining => 2,
    };
    let visits = 2 * keys;
    let (mut requests, mut admitted, mut drained_admitted) = (0_u64, 0_u64, 0_u64);
    let mut rss = [0; 3];
    let marks = [visits / 3, 2 * visits / 3, visits];
    for visit in 0..visits {
        for _ in 0..per_visit {
            requests += 1;
            admitted += u64::from(check(rotating_key(visit % keys)));
        }
        if visit % 1_000 == 999 {
            drained_admitted += u64::from(check(drained.clone()));
        }
        if let Some(third) = marks.iter().position(|&m| m == visit + 1) {
            rss[third] = rss_bytes().unwrap_or(0).saturating_sub(before);
        }
    }
    let peak = peak_rss_bytes()
        .ok_or("no VmHWM in /proc/self/status")?
        .saturating_sub(before);
    println!(
        "MEMFLOOD {requests} {admitted} {drained_admitted} {} {} {} {} {} {peak}",
        flux.local_buckets(),
        flux.local_evictions(),
        rss[0],
        rss[1],
        rss[2],
    );
    Ok(())
}

/// `VmHWM` of `/proc/self/status`: the process' peak resident set (bytes).
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1_024)
}

/// Runs this binary with `args` in a child process (no Redis) and reads the numbers of its
/// line starting with `tag`.
fn child_figures(args: &[&str], tag: &str) -> Res<Vec<u64>> {
    let output = Command::new(std::env::current_exe()?)
        .args(args)
        .env_remove("FLUX_REDIS_URL")
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix(tag)?.strip_prefix(' '))
        .ok_or_else(|| format!("{} printed no figures: {stdout}", args[0]))?;
    Ok(line
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect())
}

/// Runs [`memflood`] in a child process and reads its figures.
pub(crate) fn rotation_flood(keys: usize, cap: usize, flood: Flood) -> Res<FloodRun> {
    let (keys, cap) = (keys.to_string(), cap.to_string());
    let args = [
        "memflood",
        "--keys",
        &keys,
        "--cap",
        &cap,
        "--flood",
        flood.arg(),
    ];
    let f = child_figures(&args, "MEMFLOOD")?;
    let [
        requests,
        admitted,
        drained_admitted,
        buckets,
        evictions,
        r1,
        r2,
        r3,
        peak,
    ] = f[..]
    else {
        return Err(format!("unexpected memflood figures: {f:?}").into());
    };
    Ok(FloodRun {
        requests,
        admitted,
        drained_admitted,
        buckets,
        evictions,
        rss: [r1, r2, r3],
        peak,
    })
}
