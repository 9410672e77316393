//! When the store cannot answer: the failure policy, the circuit breaker that stops calling
//! a store that is down, the fleet whose share of each limit an instance keeps during an
//! outage, and the health a readiness probe reads. Uses the model only; the limiter wraps a
//! store in these.
//!
//! - `policy`: [`FailurePolicy`](crate::FailurePolicy): open, closed or local.
//! - `breaker`: one circuit per store node; after consecutive failures checks skip the
//!   store, and one probe at intervals closes it again.
//! - `fleet`: the live instances and each one's share of a limit.
//! - `health`: [`Health`](crate::health::Health) and what it reports.

pub(crate) mod breaker;
pub(crate) mod fleet;
pub(crate) mod health;
pub(crate) mod policy;
