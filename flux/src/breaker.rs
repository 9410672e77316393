//! The circuit breaker in front of Redis.
//!
//! Closed: every check goes to Redis. After `threshold` consecutive failures (errors or
//! missed deadlines) it opens: checks skip Redis and take the failure policy at once, so an
//! outage costs requests nothing. Every `probe_interval` one check is let through as a
//! probe (half-open); its success closes the breaker, its failure keeps it open. Each change
//! of state is logged once.

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

/// When the breaker opens and how often it probes Redis while open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker (at least 1).
    pub threshold: u32,
    /// While open, the time between two probes of Redis.
    pub probe_interval: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            threshold: 3,
            probe_interval: Duration::from_millis(500),
        }
    }
}

/// What the breaker says about one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pass {
    /// Ask Redis.
    Call,
    /// Ask Redis: this check is the probe of an open breaker.
    Probe,
    /// Do not ask Redis; apply the failure policy.
    Skip,
}

/// One circuit: closed, open or half-open, with its failure count.
struct Circuit {
    state: AtomicU8,
    failures: AtomicU32,
    /// When the circuit last opened or its current probe started, in µs since `origin`.
    since: AtomicU64,
}

/// The breakers of one limiter: one circuit for a single Redis, one per master for a Redis
/// Cluster, so that a lost master takes only its own slots to the failure policy.
/// Logs are per limiter: the first circuit to open says "unavailable", the last to close
/// says "reachable again".
pub(crate) struct Breaker {
    config: BreakerConfig,
    /// Longest a probe can take before another may start (the call deadline, with slack).
    probe_timeout: Duration,
    circuits: Box<[Circuit]>,
    open: AtomicUsize,
    origin: Instant,
}

impl Breaker {
    pub(crate) fn new(config: BreakerConfig, deadline: Duration, circuits: usize) -> Breaker {
        Breaker {
            config: BreakerConfig {
                threshold: config.threshold.max(1),
                ..config
            },
            probe_timeout: deadline * 2 + Duration::from_millis(100),
            circuits: (0..circuits.max(1))
                .map(|_| Circuit {
                    state: AtomicU8::new(CLOSED),
                    failures: AtomicU32::new(0),
                    since: AtomicU64::new(0),
                })
                .collect(),
            open: AtomicUsize::new(0),
            origin: Instant::now(),
        }
    }

    fn now(&self) -> u64 {
        self.origin.elapsed().as_micros() as u64
    }

    fn circuit(&self, index: usize) -> &Circuit {
        &self.circuits[index % self.circuits.len()]
    }

    /// Whether this check, on circuit `index`, may call Redis.
    pub(crate) fn pass(&self, index: usize) -> Pass {
        let c = self.circuit(index);
        match c.state.load(Ordering::Acquire) {
            CLOSED => Pass::Call,
            state => {
                let wait = if state == OPEN {
                    self.config.probe_interval
                } else {
                    // A probe whose caller was cancelled never reports: let another one go.
                    self.probe_timeout
                };
                let since = c.since.load(Ordering::Acquire);
                let now = self.now();
                if now.saturating_sub(since) >= wait.as_micros() as u64
                    && c.since
                        .compare_exchange(since, now, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                {
                    c.state.store(HALF_OPEN, Ordering::Release);
                    Pass::Probe
                } else {
                    Pass::Skip
                }
            }
        }
    }

    /// Reports a successful call on circuit `index`.
    pub(crate) fn success(&self, index: usize) {
        let c = self.circuit(index);
        if c.failures.load(Ordering::Relaxed) != 0 {
            c.failures.store(0, Ordering::Relaxed);
        }
        if c.state.load(Ordering::Acquire) != CLOSED
            && c.state.swap(CLOSED, Ordering::AcqRel) != CLOSED
            && self.open.fetch_sub(1, Ordering::AcqRel) == 1
        {
            tracing::info!(target: "flux", "Redis is reachable again: rate limiting through Redis resumes");
        }
    }

    /// Reports a failed call; `policy` and `error` are only for the log line.
    pub(crate) fn failure(
        &self,
        index: usize,
        pass: Pass,
        policy: &str,
        error: &dyn std::fmt::Display,
    ) {
        let c = self.circuit(index);
        let failures = c.failures.fetch_add(1, Ordering::AcqRel) + 1;
        match pass {
            Pass::Probe => {
                c.since.store(self.now(), Ordering::Release);
                c.state.store(OPEN, Ordering::Release);
                tracing::debug!(target: "flux", %error, "Redis probe failed; breaker stays open");
            }
            Pass::Call if failures >= self.config.threshold => {
                if c.state
                    .compare_exchange(CLOSED, OPEN, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    c.since.store(self.now(), Ordering::Release);
                    if self.open.fetch_add(1, Ordering::AcqRel) == 0 {
                        tracing::warn!(
                            target: "flux",
                            %error,
                            "Redis unavailable after {failures} consecutive failures: the `{policy}` failure \
                             policy applies until Redis answers again (probing every {:?})",
                            self.config.probe_interval
                        );
                    }
                }
            }
            Pass::Call | Pass::Skip => {
                tracing::debug!(target: "flux", %error, "Redis call failed ({failures} in a row)");
            }
        }
    }

    /// Whether any circuit is open (some checks skip Redis).
    pub(crate) fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_and_probes_once_per_interval() {
        let breaker = Breaker::new(
            BreakerConfig {
                threshold: 2,
                probe_interval: Duration::from_millis(20),
            },
            Duration::from_millis(10),
            1,
        );
        assert_eq!(breaker.pass(0), Pass::Call);
        breaker.failure(0, Pass::Call, "open", &"boom");
        assert_eq!(breaker.pass(0), Pass::Call);
        breaker.failure(0, Pass::Call, "open", &"boom");
        assert_eq!(breaker.pass(0), Pass::Skip);
        std::thread::sleep(Duration::from_millis(25));
        assert_eq!(breaker.pass(0), Pass::Probe);
        assert_eq!(breaker.pass(0), Pass::Skip, "one probe at a time");
        breaker.failure(0, Pass::Probe, "open", &"still down");
        assert_eq!(breaker.pass(0), Pass::Skip);
        std::thread::sleep(Duration::from_millis(25));
        assert_eq!(breaker.pass(0), Pass::Probe);
        breaker.success(0);
        assert_eq!(breaker.pass(0), Pass::Call);
        assert!(!breaker.is_open());
    }

    #[test]
    fn circuits_are_independent() {
        let breaker = Breaker::new(BreakerConfig::default(), Duration::from_millis(10), 16_384);
        for _ in 0..3 {
            breaker.failure(7, Pass::Call, "open", &"node down");
        }
        assert_eq!(breaker.pass(7), Pass::Skip);
        assert_eq!(
            breaker.pass(8),
            Pass::Call,
            "other slots keep calling Redis"
        );
        assert!(breaker.is_open());
    }

    #[test]
    fn a_lost_probe_does_not_wedge_the_breaker() {
        let breaker = Breaker::new(
            BreakerConfig {
                threshold: 1,
                probe_interval: Duration::from_millis(1),
            },
            Duration::from_millis(1),
            1,
        );
        breaker.failure(0, Pass::Call, "open", &"boom");
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(breaker.pass(0), Pass::Probe);
        // The probe's caller was cancelled and never reports; after the probe timeout
        // (2 x deadline + 100 ms) another probe goes.
        std::thread::sleep(Duration::from_millis(110));
        assert_eq!(breaker.pass(0), Pass::Probe);
    }
}
