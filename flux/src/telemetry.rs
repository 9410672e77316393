//! Metrics, through the `metrics` facade (the application installs the exporter): their
//! names, labels and handles. The bottom of the crate: it knows metric names and label
//! values, never limits, keys or decisions (those layers hand it names and labels).
//!
//! The names and labels are public API, listed in the README:
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `flux_decisions_total` | counter | `limit`, `outcome`, `source` |
//! | `flux_backend_duration_seconds` | histogram | none |
//! | `flux_backend_errors_total` | counter | `kind` |
//! | `flux_breaker_open` | gauge | `circuit` |
//! | `flux_deny_cache_entries` | gauge | none |
//! | `flux_concurrency_in_flight` | gauge | `limit` |
//! | `flux_fleet_instances` | gauge | none |
//! | `flux_memory_evictions_total` | counter | none |
//!
//! No label takes a client key: the cardinality is bounded by the number of limits, and the
//! `limit` label by [`MAX_LIMIT_NAMES`] names built at run time (`names`: past it, `_other`).
//!
//! Log lines a client's requests can trigger go through `throttle`: at most one WARN per
//! limit per interval.

use std::borrow::Cow;
use std::sync::OnceLock;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, SharedString, counter, gauge, histogram};

use crate::error::{BackendErrorKind, Error};

mod names;
mod throttle;
pub use names::MAX_LIMIT_NAMES;
pub(crate) use names::{admitted as name_admitted, shown as shown_name};
pub(crate) use throttle::{Throttled, WARN_EVERY, warn_throttled};

/// `flux_decisions_total`: decisions, per limit.
pub(crate) const DECISIONS: &str = "flux_decisions_total";
/// `flux_backend_duration_seconds`: the time of each call to Redis.
pub(crate) const BACKEND_DURATION: &str = "flux_backend_duration_seconds";
/// `flux_backend_errors_total`: failed calls to Redis, by kind.
pub(crate) const BACKEND_ERRORS: &str = "flux_backend_errors_total";
/// `flux_breaker_open`: 1 while a circuit of the breaker is open, else 0.
pub(crate) const BREAKER_OPEN: &str = "flux_breaker_open";
/// `flux_deny_cache_entries`: denials the deny cache holds.
pub(crate) const DENY_CACHE_ENTRIES: &str = "flux_deny_cache_entries";
/// `flux_concurrency_in_flight`: concurrency slots this instance holds, per limit.
pub(crate) const CONCURRENCY_IN_FLIGHT: &str = "flux_concurrency_in_flight";
/// `flux_fleet_instances`: live instances sharing the Redis, at the last heartbeat.
pub(crate) const FLEET_INSTANCES: &str = "flux_fleet_instances";

/// `flux_memory_evictions_total`: in-memory buckets evicted at the cap before they were full
/// again.
pub(crate) const MEMORY_EVICTIONS: &str = "flux_memory_evictions_total";

/// What happened to a request, as the `outcome` label says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Outcome {
    Allowed,
    Denied,
    /// Denied by the limit, admitted because the check ran in shadow mode.
    ShadowDenied,
    /// Never checked: the request is exempt.
    Exempt,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Denied => "denied",
            Outcome::ShadowDenied => "shadow_denied",
            Outcome::Exempt => "exempt",
        }
    }
}

/// The `source` label of a decision: who decided it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum SourceLabel {
    Redis,
    Memory,
    DenyCache,
    FallbackLocal,
    FallbackOpen,
    FallbackClosed,
    None,
    Lease,
}

impl SourceLabel {
    const COUNT: usize = 8;

    fn as_str(self) -> &'static str {
        match self {
            SourceLabel::Redis => "redis",
            SourceLabel::Memory => "memory",
            SourceLabel::DenyCache => "deny_cache",
            SourceLabel::FallbackLocal => "fallback_local",
            SourceLabel::FallbackOpen => "fallback_open",
            SourceLabel::FallbackClosed => "fallback_closed",
            SourceLabel::None => "none",
            SourceLabel::Lease => "lease",
        }
    }
}

/// How many outcomes there are (the variants of [`Outcome`]).
const OUTCOMES: usize = 4;

/// One limit's (rate or concurrency) `flux_decisions_total` series, one per (outcome, source), each registered
/// with the recorder on its first increment: a check then costs an index and an atomic add,
/// not a label lookup. The handles go to the recorder installed when they are registered,
/// so install the exporter before the first check.
#[derive(Default)]
pub(crate) struct Counters {
    series: [[OnceLock<Counter>; SourceLabel::COUNT]; OUTCOMES],
    /// The limiter that registered this limit last (the overrides' registry of limit names):
    /// kept with the state every check already touches, so that an already registered limit
    /// costs one atomic load.
    pub(crate) registered_with: std::sync::atomic::AtomicU64,
}

impl Counters {
    /// Counts one decision of the limit named `limit`.
    #[allow(clippy::ptr_arg)] // the Cow tells a borrowed name (no copy) from an owned one
    pub(crate) fn count(&self, limit: &Cow<'static, str>, outcome: Outcome, source: SourceLabel) {
        self.series[outcome as usize][source as usize]
            .get_or_init(|| {
                counter!(
                    DECISIONS,
                    "limit" => label(limit),
                    "outcome" => outcome.label(),
                    "source" => source.as_str()
                )
            })
            .increment(1);
    }
}

/// A concurrency limit's handles: its `flux_decisions_total` series and its
/// `flux_concurrency_in_flight` gauge.
#[derive(Default)]
pub(crate) struct SlotMetrics {
    pub(crate) counters: Counters,
    in_flight: OnceLock<Gauge>,
}

impl SlotMetrics {
    /// The `flux_concurrency_in_flight` gauge of `limit` (registered on first use).
    #[allow(clippy::ptr_arg)] // as `label`
    pub(crate) fn in_flight(&self, limit: &Cow<'static, str>) -> &Gauge {
        self.in_flight
            .get_or_init(|| gauge!(CONCURRENCY_IN_FLIGHT, "limit" => label(limit)))
    }
}

/// A limit's name as a label value, without a copy for names built in `const` context;
/// `_other` for a name built at run time past [`MAX_LIMIT_NAMES`].
#[allow(clippy::ptr_arg)] // the Cow tells a borrowed name (no copy) from an owned one
fn label(name: &Cow<'static, str>) -> SharedString {
    match name {
        Cow::Borrowed(name) => SharedString::const_str(name),
        Cow::Owned(_) if !name_admitted(name) => SharedString::const_str(names::OTHER),
        Cow::Owned(name) => SharedString::from_owned(name.clone()),
    }
}

/// Records the time of one call to Redis.
pub(crate) fn backend_call(store: &BackendMetrics, elapsed: Duration) {
    store
        .duration
        .get_or_init(|| histogram!(BACKEND_DURATION))
        .record(elapsed.as_secs_f64());
}

/// A store's `flux_backend_duration_seconds` handle, registered on first use (as
/// [`Counters`]).
#[derive(Default)]
pub(crate) struct BackendMetrics {
    duration: OnceLock<Histogram>,
}

/// Counts one failed call to Redis.
pub(crate) fn backend_error(error: &Error) {
    counter!(BACKEND_ERRORS, "kind" => error_kind(error)).increment(1);
}

/// `flux_redis_reconnects_total`: connections to a single Redis replaced because they could
/// not serve the checks, by `reason`: `readonly`, `masterdown`, `loading` (the error code a
/// call met) or `silent` (missed deadlines in a row).
pub(crate) const REDIS_RECONNECTS: &str = "flux_redis_reconnects_total";

/// Counts one replaced connection (see [`REDIS_RECONNECTS`]).
pub(crate) fn redis_reconnect(reason: &'static str) {
    counter!(REDIS_RECONNECTS, "reason" => reason).increment(1);
}

/// The `kind` label of a failed call: `timeout`, `connection`, `script` or `other`.
pub(crate) fn error_kind(error: &Error) -> &'static str {
    match error {
        Error::Timeout(_) => "timeout",
        Error::Backend(e) => match e.kind() {
            BackendErrorKind::Connection => "connection",
            BackendErrorKind::Server => "script",
            _ => "other",
        },
        Error::Protocol(_) => "script",
        _ => "other",
    }
}

/// Sets `flux_breaker_open` for one circuit (`redis`, or a master's address on a cluster).
pub(crate) fn breaker_state(circuit: SharedString, open: bool) {
    gauge!(BREAKER_OPEN, "circuit" => circuit).set(if open { 1.0 } else { 0.0 });
}

/// Sets `flux_deny_cache_entries`.
pub(crate) fn deny_cache_entries(entries: usize) {
    gauge!(DENY_CACHE_ENTRIES).set(entries as f64);
}

/// Sets `flux_fleet_instances`.
pub(crate) fn fleet_instances(live: u32) {
    gauge!(FLEET_INSTANCES).set(f64::from(live));
}

/// Counts one `flux_memory_evictions_total` on the store's handle (registered on first use,
/// as [`Counters`]).
pub(crate) fn memory_evicted(handle: &OnceLock<Counter>) {
    handle
        .get_or_init(|| counter!(MEMORY_EVICTIONS))
        .increment(1);
}
