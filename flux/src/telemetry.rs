//! Metrics (through the `metrics` facade: the application installs the exporter) and the
//! denial log.
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
//!
//! No label takes a client key: the cardinality is bounded by the number of limits.

use std::time::Duration;

use metrics::{SharedString, counter, gauge, histogram};

use crate::{Decision, Error, Key, Limit, Source};

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

/// What happened to a request, as the `outcome` label says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

/// The `source` label of a decision; `redis` says whether the backend is Redis or memory.
fn source_label(source: Source, redis: bool) -> &'static str {
    match source {
        Source::Backend if redis => "redis",
        Source::Backend => "memory",
        Source::Cached => "deny_cache",
        Source::Local => "fallback_local",
        Source::FailOpen => "fallback_open",
        Source::FailClosed => "fallback_closed",
        Source::Exempt => "none",
    }
}

/// Counts one check: one increment per limit checked, each with the check's outcome (a
/// stacked check is all or nothing, so a denial by one limit is a denial for all of them,
/// none of which was charged).
pub(crate) fn count(limits: &[Limit], outcome: Outcome, source: Source, redis: bool) {
    let outcome = outcome.label();
    let source = source_label(source, redis);
    for limit in limits {
        let name: SharedString = match limit.name_cow() {
            std::borrow::Cow::Borrowed(name) => SharedString::const_str(name),
            std::borrow::Cow::Owned(name) => SharedString::from_owned(name.clone()),
        };
        counter!(DECISIONS, "limit" => name, "outcome" => outcome, "source" => source).increment(1);
    }
}

/// Records the time of one call to Redis.
pub(crate) fn backend_call(elapsed: Duration) {
    histogram!(BACKEND_DURATION).record(elapsed.as_secs_f64());
}

/// Counts one failed call to Redis.
pub(crate) fn backend_error(error: &Error) {
    counter!(BACKEND_ERRORS, "kind" => error_kind(error)).increment(1);
}

/// The `kind` label of a failed call: `timeout`, `connection`, `script` or `other`.
pub(crate) fn error_kind(error: &Error) -> &'static str {
    match error {
        Error::Timeout(_) => "timeout",
        Error::Redis(e)
            if e.is_io_error()
                || e.is_connection_dropped()
                || e.is_connection_refusal()
                || e.is_timeout() =>
        {
            "connection"
        }
        Error::Redis(e) if matches!(e.kind(), redis::ErrorKind::Server(_)) => "script",
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

/// The denial log: one DEBUG event per denied request, with a digest of the key, never the
/// key itself (it may be an address or a user id).
pub(crate) fn log_denial(key: &Key, limits: &[Limit], decision: &Decision, shadow: bool) {
    if !tracing::enabled!(target: "flux", tracing::Level::DEBUG) {
        return;
    }
    let Some(limit) = limits.get(decision.index) else {
        return;
    };
    tracing::debug!(
        target: "flux",
        limit = limit.name(),
        key = %key.digest_hex(),
        cost = limit.cost(),
        retry_after_ms = decision.retry_after.as_millis() as u64,
        shadow,
        "rate limit denied a request"
    );
}
