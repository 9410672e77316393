//! Latency histograms, run summaries and CPU accounting.

use std::fs;
use std::time::Duration;

use hdrhistogram::Histogram;

/// Latencies in nanoseconds, 3 significant digits, up to a minute.
pub(crate) struct Hist(Histogram<u64>);

impl Hist {
    pub(crate) fn new() -> Hist {
        match Histogram::new_with_bounds(1, 60_000_000_000, 3) {
            Ok(h) => Hist(h),
            Err(e) => panic!("valid histogram bounds: {e}"),
        }
    }

    pub(crate) fn record(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.0.saturating_record(ns.max(1));
    }

    pub(crate) fn merge(&mut self, other: &Hist) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.0.add(&other.0);
    }

    /// The `q` quantile in microseconds (NaN when empty).
    pub(crate) fn quantile_us(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        self.0.value_at_quantile(q) as f64 / 1_000.0
    }

    pub(crate) fn max_us(&self) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        self.0.max() as f64 / 1_000.0
    }
}

/// What one measured run produced.
pub(crate) struct Summary {
    /// Operations completed inside the measured window.
    pub(crate) ops: u64,
    pub(crate) secs: f64,
    pub(crate) hist: Hist,
    /// Operations that failed (errors, timeouts, unexpected statuses).
    pub(crate) errors: u64,
    /// Operations denied (429 / `allowed == false`).
    pub(crate) denied: u64,
    /// CPU seconds spent in the measured window, by whom.
    pub(crate) cpu: Cpu,
}

impl Summary {
    pub(crate) fn rate(&self) -> f64 {
        if self.secs > 0.0 {
            self.ops as f64 / self.secs
        } else {
            f64::NAN
        }
    }

    pub(crate) fn p50(&self) -> f64 {
        self.hist.quantile_us(0.5)
    }

    pub(crate) fn p99(&self) -> f64 {
        self.hist.quantile_us(0.99)
    }

    pub(crate) fn p999(&self) -> f64 {
        self.hist.quantile_us(0.999)
    }

    /// µs of CPU per operation of `seconds` of CPU.
    pub(crate) fn per_op_us(&self, seconds: Option<f64>) -> Option<f64> {
        seconds
            .filter(|_| self.ops > 0)
            .map(|s| s * 1e6 / self.ops as f64)
    }
}

/// CPU seconds used during a measured window.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Cpu {
    /// This process (the in-process callers, or the HTTP load generator).
    pub(crate) harness: Option<f64>,
    /// The HTTP server child.
    pub(crate) server: Option<f64>,
    /// `redis-server`.
    pub(crate) redis: Option<f64>,
}

impl Cpu {
    pub(crate) fn since(&self, start: &Cpu) -> Cpu {
        let d = |a: Option<f64>, b: Option<f64>| Some(a? - b?);
        Cpu {
            harness: d(self.harness, start.harness),
            server: d(self.server, start.server),
            redis: d(self.redis, start.redis),
        }
    }
}

/// CPU seconds (user + system) of this process so far, all threads.
pub(crate) fn self_cpu() -> Option<f64> {
    use nix::sys::resource::{UsageWho, getrusage};
    let usage = getrusage(UsageWho::RUSAGE_SELF).ok()?;
    let secs = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
    Some(secs(usage.user_time()) + secs(usage.system_time()))
}

/// CPU seconds (user + system) of the waited-for children of this process so far.
pub(crate) fn children_cpu() -> Option<f64> {
    use nix::sys::resource::{UsageWho, getrusage};
    let usage = getrusage(UsageWho::RUSAGE_CHILDREN).ok()?;
    let secs = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
    Some(secs(usage.user_time()) + secs(usage.system_time()))
}

/// CPU seconds another process has run so far: the sum of its threads' run time from
/// `/proc/PID/task/*/schedstat` (nanoseconds).
pub(crate) fn process_cpu(pid: u32) -> Option<f64> {
    let mut ns: u64 = 0;
    for task in fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let path = task.ok()?.path().join("schedstat");
        let text = fs::read_to_string(path).ok()?;
        ns += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(ns as f64 / 1e9)
}

/// Resident set size of this process in bytes (`/proc/self/statm`).
pub(crate) fn rss_bytes() -> Option<u64> {
    let text = fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4_096)
}
