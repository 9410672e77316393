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
    let flux = Flux::builder().memory().build()?;
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
    let output = Command::new(std::env::current_exe()?)
        .args(["memprobe", "--keys", &n.to_string()])
        .env_remove("FLUX_REDIS_URL")
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("MEMPROBE "))
        .ok_or_else(|| format!("memprobe printed no figures: {stdout}"))?;
    let figures: Vec<u64> = line
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    let [before, after, buckets] = figures[..] else {
        return Err(format!("unexpected memprobe line: {line}").into());
    };
    Ok(LocalMemory {
        keys: usize::try_from(buckets).unwrap_or(usize::MAX),
        bytes_per_key: after.saturating_sub(before) as f64 / buckets.max(1) as f64,
    })
}
