//! `Health`: what a readiness probe reads ([`Flux::health`](crate::Flux::health) fills it).

use super::policy::FailurePolicy;

/// The limiter's health: which backend, which circuits are open and since when, the last
/// error, the failure policy in force, and whether the service should be considered ready.
///
/// With the `serde` feature it serializes to JSON (durations in seconds):
///
/// ```json
/// {"backend":"redis","target":"Redis at redis://127.0.0.1:6379/","failure_policy":"open",
///  "shadow":false,"degraded":true,"ready":true,
///  "open_circuits":[{"circuit":"redis","open_for_seconds":4.2}],
///  "last_error":{"message":"Redis did not answer within the 50ms deadline","seconds_ago":0.3},
///  "fleet_instances":3}
/// ```
///
/// ```
/// let health = flux::Flux::builder().build()?.health();
/// assert_eq!(health.backend, "memory");
/// assert!(health.ready && !health.degraded && health.open_circuits.is_empty());
/// assert_eq!(health.fleet_instances, None); // no fleet without Redis
/// # Ok::<(), flux::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Health {
    /// `"memory"`, `"redis"` or `"redis_cluster"`.
    pub backend: &'static str,
    /// The backend in words, without passwords ([`Flux::describe`](crate::Flux::describe)).
    pub target: String,
    /// The default failure policy: what checks do while a circuit is open.
    pub failure_policy: FailurePolicy,
    /// Whether every limit runs in shadow mode (decides and counts, never denies).
    pub shadow: bool,
    /// Whether some circuit of the breaker is open: some checks skip Redis and take the
    /// failure policy.
    pub degraded: bool,
    /// False only when requests are being refused because of the limiter: the failure
    /// policy is `closed` and Redis is unavailable. A readiness probe answers 503 then.
    pub ready: bool,
    /// The open circuits: `redis` for a single Redis, a master's `host:port` on a cluster.
    pub open_circuits: Vec<OpenCircuit>,
    /// The last failed call to Redis, if any since the limiter was built.
    pub last_error: Option<LastError>,
    /// Live instances sharing the Redis (this one included) at the last heartbeat that Redis
    /// answered: during an outage the `local` policy gives each instance this share of every
    /// limit. `None` on the in-memory backend, before the first heartbeat, and when no check
    /// may fall back to `local` (only those announce the instance).
    pub fleet_instances: Option<u32>,
}

/// One open circuit of the breaker.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct OpenCircuit {
    /// `redis`, or the master's `host:port` on a cluster.
    pub circuit: String,
    /// How long it has been open, in seconds.
    pub open_for_seconds: f64,
}

/// The last failed call to Redis.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct LastError {
    /// What went wrong.
    pub message: String,
    /// How long ago, in seconds.
    pub seconds_ago: f64,
}
