//! The circuit breaker in front of Redis.
//!
//! Closed: every check goes to Redis. After `threshold` consecutive failures (errors or
//! missed deadlines) it opens: checks skip Redis and take the failure policy at once, so an
//! outage costs requests nothing. Every `probe_interval` one check is let through as a
//! probe (half-open); its success closes the breaker, its failure keeps it open. Each change
//! of state is logged once.

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
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

pub(crate) struct Breaker {
    config: BreakerConfig,
    /// Longest a probe can take before another may start (the call deadline, with slack).
    probe_timeout: Duration,
    state: AtomicU8,
    failures: AtomicU32,
    /// When the breaker last opened or the current probe started, in µs since `origin`.
    since: AtomicU64,
    origin: Instant,
}

impl Breaker {
    pub(crate) fn new(config: BreakerConfig, deadline: Duration) -> Breaker {
        Breaker {
            config: BreakerConfig {
                threshold: config.threshold.max(1),
                ..config
            },
            probe_timeout: deadline * 2 + Duration::from_millis(100),
            state: AtomicU8::new(CLOSED),
            failures: AtomicU32::new(0),
            since: AtomicU64::new(0),
            origin: Instant::now(),
        }
    }

    fn now(&self) -> u64 {
        self.origin.elapsed().as_micros() as u64
    }

    /// Whether this check may call Redis.
    pub(crate) fn pass(&self) -> Pass {
        match self.state.load(Ordering::Acquire) {
            CLOSED => Pass::Call,
            state => {
                let wait = if state == OPEN {
                    self.config.probe_interval
                } else {
                    // A probe whose caller was cancelled never reports: let another one go.
                    self.probe_timeout
                };
                let since = self.since.load(Ordering::Acquire);
                let now = self.now();
                if now.saturating_sub(since) >= wait.as_micros() as u64
                    && self
                        .since
                        .compare_exchange(since, now, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                {
                    self.state.store(HALF_OPEN, Ordering::Release);
                    Pass::Probe
                } else {
                    Pass::Skip
                }
            }
        }
    }

    /// Reports a successful call.
    pub(crate) fn success(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
        if self.state.swap(CLOSED, Ordering::AcqRel) != CLOSED {
            tracing::info!(target: "flux", "Redis is reachable again: rate limiting through Redis resumes");
        }
    }

    /// Reports a failed call; `policy` and `error` are only for the log line.
    pub(crate) fn failure(&self, pass: Pass, policy: &str, error: &dyn std::fmt::Display) {
        let failures = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        match pass {
            Pass::Probe => {
                self.since.store(self.now(), Ordering::Release);
                self.state.store(OPEN, Ordering::Release);
                tracing::debug!(target: "flux", %error, "Redis probe failed; breaker stays open");
            }
            Pass::Call if failures >= self.config.threshold => {
                if self
                    .state
                    .compare_exchange(CLOSED, OPEN, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    self.since.store(self.now(), Ordering::Release);
                    tracing::warn!(
                        target: "flux",
                        %error,
                        "Redis unavailable after {failures} consecutive failures: the `{policy}` failure \
                         policy applies until Redis answers again (probing every {:?})",
                        self.config.probe_interval
                    );
                }
            }
            Pass::Call | Pass::Skip => {
                tracing::debug!(target: "flux", %error, "Redis call failed ({failures} in a row)");
            }
        }
    }

    /// Whether the breaker is currently open (checks skip Redis).
    pub(crate) fn is_open(&self) -> bool {
        self.state.load(Ordering::Acquire) != CLOSED
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
        );
        assert_eq!(breaker.pass(), Pass::Call);
        breaker.failure(Pass::Call, "open", &"boom");
        assert_eq!(breaker.pass(), Pass::Call);
        breaker.failure(Pass::Call, "open", &"boom");
        assert_eq!(breaker.pass(), Pass::Skip);
        std::thread::sleep(Duration::from_millis(25));
        assert_eq!(breaker.pass(), Pass::Probe);
        assert_eq!(breaker.pass(), Pass::Skip, "one probe at a time");
        breaker.failure(Pass::Probe, "open", &"still down");
        assert_eq!(breaker.pass(), Pass::Skip);
        std::thread::sleep(Duration::from_millis(25));
        assert_eq!(breaker.pass(), Pass::Probe);
        breaker.success();
        assert_eq!(breaker.pass(), Pass::Call);
        assert!(!breaker.is_open());
    }

    #[test]
    fn a_lost_probe_does_not_wedge_the_breaker() {
        let breaker = Breaker::new(
            BreakerConfig {
                threshold: 1,
                probe_interval: Duration::from_millis(1),
            },
            Duration::from_millis(1),
        );
        breaker.failure(Pass::Call, "open", &"boom");
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(breaker.pass(), Pass::Probe);
        // The probe's caller was cancelled and never reports; after the probe timeout
        // (2 x deadline + 100 ms) another probe goes.
        std::thread::sleep(Duration::from_millis(110));
        assert_eq!(breaker.pass(), Pass::Probe);
    }
}
