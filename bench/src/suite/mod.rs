//! The eight parts of a benchmark run, each adding one section (and its targets) to the report.

mod batching;
mod callers;
mod decisions;
mod flood;
mod http;
mod lease;
mod memory;
mod micro;
mod outage;
mod overrides;
mod telemetry;

use std::time::Duration;

pub(crate) use self::batching::part1c_batching;
pub(crate) use self::callers::part1b_callers;
pub(crate) use self::decisions::part1_decisions;
pub(crate) use self::flood::part3_flood;
pub(crate) use self::http::{HttpKeys, part2_http};
pub(crate) use self::lease::part8_lease;
pub(crate) use self::memory::part6_memory;
pub(crate) use self::micro::part5_micro;
pub(crate) use self::outage::part4_outage;
pub(crate) use self::overrides::part9_overrides;
pub(crate) use self::telemetry::part7_telemetry;

use crate::driver::{BenchRun, Window};
use crate::report::{count, micros, opt_micros};
use crate::stats::Summary;

/// How big and long each measurement is.
pub(crate) struct Sizes {
    pub(crate) window: Window,
    /// `redis-benchmark -n` at 1 and at 64 clients.
    pub(crate) bench_requests: (u64, u64),
    pub(crate) raw_pings: usize,
    pub(crate) random_keys: usize,
    pub(crate) http: Window,
    pub(crate) http_rounds: usize,
    pub(crate) flood: Window,
    pub(crate) flood_rounds: usize,
    pub(crate) redis_memory_keys: usize,
    pub(crate) local_memory_keys: usize,
    /// Part 6b: rotating keys of the light flood and of the draining one, and the small cap.
    pub(crate) flood_keys: usize,
    pub(crate) draining_keys: usize,
    pub(crate) small_cap: usize,
    pub(crate) micro_iterations: u64,
}

impl Sizes {
    pub(crate) fn new(quick: bool) -> Sizes {
        if quick {
            Sizes {
                window: Window {
                    warmup: Duration::from_millis(30),
                    measure: Duration::from_millis(150),
                },
                bench_requests: (2_000, 10_000),
                raw_pings: 2_000,
                random_keys: 10_000,
                http: Window {
                    warmup: Duration::from_millis(50),
                    measure: Duration::from_millis(200),
                },
                http_rounds: 1,
                flood: Window {
                    warmup: Duration::from_millis(50),
                    measure: Duration::from_millis(300),
                },
                flood_rounds: 1,
                redis_memory_keys: 5_000,
                local_memory_keys: 20_000,
                flood_keys: 30_000,
                draining_keys: 10_000,
                small_cap: 4_096,
                micro_iterations: 2_000,
            }
        } else {
            Sizes {
                window: Window {
                    warmup: Duration::from_millis(500),
                    measure: Duration::from_secs(3),
                },
                bench_requests: (60_000, 300_000),
                raw_pings: 60_000,
                random_keys: 100_000,
                http: Window {
                    warmup: Duration::from_millis(300),
                    measure: Duration::from_secs(2),
                },
                http_rounds: 3,
                flood: Window {
                    warmup: Duration::from_millis(300),
                    measure: Duration::from_secs(3),
                },
                flood_rounds: 3,
                redis_memory_keys: 100_000,
                local_memory_keys: 1_000_000,
                flood_keys: 2_000_000,
                draining_keys: 300_000,
                small_cap: 100_000,
                micro_iterations: 200_000,
            }
        }
    }
}

/// The cells shared by latency rows: rate, p50, p99, p99.9.
pub(crate) fn latency_cells(s: &Summary) -> Vec<String> {
    vec![
        count(s.rate()),
        micros(s.p50()),
        micros(s.p99()),
        micros(s.p999()),
    ]
}

pub(crate) fn bench_row(name: &str, callers: usize, keys: &str, b: &BenchRun) -> Vec<String> {
    let per_op = |s: Option<f64>| s.map(|s| s * 1e6 / b.requests as f64);
    vec![
        name.to_owned(),
        callers.to_string(),
        keys.to_owned(),
        count(b.rps),
        micros(b.p50_us),
        micros(b.p99_us),
        "-".into(),
        opt_micros(per_op(b.cpu.harness)),
        opt_micros(per_op(b.cpu.redis)),
        String::new(),
        String::new(),
    ]
}

pub(crate) fn cpu_cells(s: &Summary) -> Vec<String> {
    vec![
        opt_micros(s.per_op_us(s.cpu.harness)),
        opt_micros(s.per_op_us(s.cpu.redis)),
    ]
}
