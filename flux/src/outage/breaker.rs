//! The circuit breaker in front of Redis.
//!
//! Closed: every check goes to Redis. After `threshold` consecutive failures (errors or
//! missed deadlines) it opens: checks skip Redis and take the failure policy at once, so an
//! outage costs requests nothing. Every `probe_interval` one check is let through as a
//! probe (half-open); its success closes the breaker, its failure keeps it open. Each change
//! of state is logged once.
//!
//! The probe is a check itself, a script call that writes: its success proves that checks
//! would succeed, where a `PING` would not (a server demoted to a replica answers `PING` and
//! refuses every write with `READONLY`; the store replaces such a connection).

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

/// When the circuit breaker opens and how often it probes Redis while open; give it to
/// [`Builder::breaker`](crate::Builder::breaker).
///
/// ```
/// use flux::Flux;
/// use flux::config::BreakerConfig;
/// use std::num::NonZeroU32;
/// use std::time::Duration;
///
/// let config = BreakerConfig::new(NonZeroU32::new(5).unwrap(), Duration::from_millis(250));
/// assert_eq!(config.threshold().get(), 5);
/// assert_eq!(BreakerConfig::default().probe_interval(), Duration::from_millis(500));
/// let flux = Flux::builder().redis("redis://127.0.0.1/").breaker(config).build()?;
/// # Ok::<(), flux::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerConfig {
    threshold: NonZeroU32,
    probe_interval: Duration,
}

impl BreakerConfig {
    /// Opens after `threshold` consecutive failures (errors or missed deadlines; calls that
    /// fail together count once) and, while open, lets one probe through every
    /// `probe_interval`.
    pub const fn new(threshold: NonZeroU32, probe_interval: Duration) -> BreakerConfig {
        BreakerConfig {
            threshold,
            probe_interval,
        }
    }

    /// Consecutive failures that open the breaker.
    pub const fn threshold(&self) -> NonZeroU32 {
        self.threshold
    }

    /// While open, the time between two probes of Redis.
    pub const fn probe_interval(&self) -> Duration {
        self.probe_interval
    }
}

impl Default for BreakerConfig {
    /// 3 failures, a probe every 500 ms.
    fn default() -> Self {
        BreakerConfig {
            threshold: NonZeroU32::new(3).unwrap_or(NonZeroU32::MIN),
            probe_interval: Duration::from_millis(500),
        }
    }
}

/// What the breaker said about one check, on which circuit, and when the check started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ticket {
    pub(crate) pass: Pass,
    circuit: usize,
    /// µs since the breaker's origin.
    started: u64,
}

impl Ticket {
    /// The circuit this check went through.
    pub(crate) fn circuit(&self) -> usize {
        self.circuit
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
    /// Consecutive failures, counting the calls of one incident once (see `failure`).
    failures: AtomicU32,
    /// When the last counted failure was recorded, in µs since `origin`.
    last_failure: AtomicU64,
    /// When the circuit last opened or its current probe started, in µs since `origin`.
    since: AtomicU64,
    /// When the circuit last went from closed to open, in µs since `origin`.
    opened: AtomicU64,
}

/// An open circuit, for health reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Opened {
    pub(crate) index: usize,
    /// How long it has been open.
    pub(crate) open_for: Duration,
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
    /// The last failure's message and time, for health reports.
    last_error: Mutex<Option<(String, Instant)>>,
}

impl Breaker {
    pub(crate) fn new(config: BreakerConfig, deadline: Duration, circuits: usize) -> Breaker {
        Breaker {
            config,
            probe_timeout: deadline * 2 + Duration::from_millis(100),
            circuits: (0..circuits.max(1))
                .map(|_| Circuit {
                    state: AtomicU8::new(CLOSED),
                    failures: AtomicU32::new(0),
                    last_failure: AtomicU64::new(0),
                    since: AtomicU64::new(0),
                    opened: AtomicU64::new(0),
                })
                .collect(),
            open: AtomicUsize::new(0),
            origin: Instant::now(),
            last_error: Mutex::new(None),
        }
    }

    fn now(&self) -> u64 {
        self.origin.elapsed().as_micros() as u64
    }

    fn circuit(&self, index: usize) -> &Circuit {
        &self.circuits[index % self.circuits.len()]
    }

    /// Whether this check, on circuit `index`, may call Redis.
    pub(crate) fn pass(&self, index: usize) -> Ticket {
        let started = self.now();
        Ticket {
            pass: self.decide(index, started),
            circuit: index,
            started,
        }
    }

    fn decide(&self, index: usize, now: u64) -> Pass {
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

    /// Reports a successful call; true when it closed its circuit. Only a probe closes an
    /// open circuit: a call that started before the circuit opened says nothing about Redis
    /// now.
    pub(crate) fn success(&self, ticket: Ticket) -> bool {
        let c = self.circuit(ticket.circuit);
        if c.failures.load(Ordering::Relaxed) != 0 {
            c.failures.store(0, Ordering::Relaxed);
        }
        if ticket.pass == Pass::Probe && c.state.swap(CLOSED, Ordering::AcqRel) != CLOSED {
            if self.open.fetch_sub(1, Ordering::AcqRel) == 1 {
                tracing::info!(target: "flux", "Redis is reachable again: rate limiting through Redis resumes");
            }
            return true;
        }
        false
    }

    /// Reports a failed call; `policy` and `error` are only for the log line.
    ///
    /// Calls in flight together fail together (a dropped connection fails every request on
    /// it): a failure counts only if its call started after the last counted failure, so one
    /// incident counts once and only failures in a row open the circuit.
    ///
    /// Returns true when this failure opened the circuit.
    pub(crate) fn failure(
        &self,
        ticket: Ticket,
        policy: &str,
        error: &dyn std::fmt::Display,
    ) -> bool {
        let c = self.circuit(ticket.circuit);
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some((error.to_string(), Instant::now()));
        if ticket.pass == Pass::Probe {
            c.since.store(self.now(), Ordering::Release);
            c.state.store(OPEN, Ordering::Release);
            tracing::debug!(target: "flux", %error, "Redis probe failed; breaker stays open");
            return false;
        }
        let last = c.last_failure.load(Ordering::Acquire);
        if ticket.started < last
            || c.last_failure
                .compare_exchange(last, self.now(), Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            tracing::debug!(target: "flux", %error, "Redis call failed (same incident as the last failure)");
            return false;
        }
        let failures = c.failures.fetch_add(1, Ordering::AcqRel) + 1;
        if failures < self.config.threshold.get() {
            tracing::debug!(target: "flux", %error, "Redis call failed ({failures} in a row)");
            return false;
        }
        if c.state
            .compare_exchange(CLOSED, OPEN, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            let now = self.now();
            c.since.store(now, Ordering::Release);
            c.opened.store(now, Ordering::Release);
            if self.open.fetch_add(1, Ordering::AcqRel) == 0 {
                tracing::warn!(
                    target: "flux",
                    %error,
                    "Redis unavailable after {failures} consecutive failures: the `{policy}` failure \
                     policy applies until Redis answers again (probing every {:?})",
                    self.config.probe_interval
                );
            }
            return true;
        }
        false
    }

    /// Closes circuit `index` because no slot maps to it any more (its master was replaced
    /// in a failover): nothing would ever probe it again.
    /// Returns true when it was open.
    pub(crate) fn forget(&self, index: usize) -> bool {
        let c = self.circuit(index);
        c.failures.store(0, Ordering::Relaxed);
        if c.state.swap(CLOSED, Ordering::AcqRel) != CLOSED {
            if self.open.fetch_sub(1, Ordering::AcqRel) == 1 {
                tracing::info!(target: "flux", "Redis Cluster failed over: rate limiting through Redis resumes");
            }
            return true;
        }
        false
    }

    /// The circuits open now (half-open ones included: they await their probe).
    pub(crate) fn open_circuits(&self) -> Vec<Opened> {
        if !self.is_open() {
            return Vec::new();
        }
        let now = self.now();
        self.circuits
            .iter()
            .enumerate()
            .filter(|(_, c)| c.state.load(Ordering::Acquire) != CLOSED)
            .map(|(index, c)| Opened {
                index,
                open_for: Duration::from_micros(
                    now.saturating_sub(c.opened.load(Ordering::Acquire)),
                ),
            })
            .collect()
    }

    /// The last failure's message and how long ago it happened.
    pub(crate) fn last_error(&self) -> Option<(String, Duration)> {
        self.last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|(message, at)| (message.clone(), at.elapsed()))
    }

    /// Whether any circuit is open (some checks skip Redis).
    pub(crate) fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(threshold: u32, probe_ms: u64, deadline_ms: u64) -> Breaker {
        Breaker::new(
            BreakerConfig::new(
                NonZeroU32::new(threshold).expect("nonzero"),
                Duration::from_millis(probe_ms),
            ),
            Duration::from_millis(deadline_ms),
            1,
        )
    }

    /// One call that starts now and fails.
    fn fail(b: &Breaker, index: usize) {
        let t = b.pass(index);
        std::thread::sleep(Duration::from_micros(50));
        b.failure(t, "open", &"boom");
    }

    #[test]
    fn opens_after_threshold_and_probes_once_per_interval() {
        let b = breaker(2, 20, 10);
        fail(&b, 0);
        assert_eq!(b.pass(0).pass, Pass::Call);
        fail(&b, 0);
        assert_eq!(b.pass(0).pass, Pass::Skip);
        std::thread::sleep(Duration::from_millis(25));
        let probe = b.pass(0);
        assert_eq!(probe.pass, Pass::Probe);
        assert_eq!(b.pass(0).pass, Pass::Skip, "one probe at a time");
        b.failure(probe, "open", &"still down");
        assert_eq!(b.pass(0).pass, Pass::Skip);
        std::thread::sleep(Duration::from_millis(25));
        let probe = b.pass(0);
        assert_eq!(probe.pass, Pass::Probe);
        b.success(probe);
        assert_eq!(b.pass(0).pass, Pass::Call);
        assert!(!b.is_open());
    }

    #[test]
    fn calls_failing_together_count_as_one_failure() {
        // A dropped connection fails every call in flight on it at once.
        let b = breaker(3, 500, 10);
        let in_flight: Vec<Ticket> = (0..64).map(|_| b.pass(0)).collect();
        std::thread::sleep(Duration::from_micros(50));
        for t in in_flight {
            b.failure(t, "open", &"broken pipe");
        }
        assert!(!b.is_open(), "one incident is one failure");
        fail(&b, 0);
        fail(&b, 0);
        assert!(b.is_open(), "three failures in a row open it");
    }

    #[test]
    fn only_a_probe_closes_an_open_circuit() {
        let b = breaker(1, 1_000, 10);
        let late = b.pass(0);
        fail(&b, 0);
        assert!(b.is_open());
        // A call that started before the circuit opened answers late: stale news.
        b.success(late);
        assert!(b.is_open());
        assert_eq!(b.pass(0).pass, Pass::Skip);
    }

    #[test]
    fn circuits_are_independent() {
        let b = Breaker::new(BreakerConfig::default(), Duration::from_millis(10), 256);
        for _ in 0..3 {
            fail(&b, 7);
        }
        assert_eq!(b.pass(7).pass, Pass::Skip);
        assert_eq!(
            b.pass(8).pass,
            Pass::Call,
            "other masters keep calling Redis"
        );
        assert!(b.is_open());
    }

    #[test]
    fn a_lost_probe_does_not_wedge_the_breaker() {
        let b = breaker(1, 1, 1);
        fail(&b, 0);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(b.pass(0).pass, Pass::Probe);
        // The probe's caller was cancelled and never reports; after the probe timeout
        // (2 x deadline + 100 ms) another probe goes.
        std::thread::sleep(Duration::from_millis(110));
        assert_eq!(b.pass(0).pass, Pass::Probe);
    }
}
