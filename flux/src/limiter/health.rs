//! [`Flux::health`]: the limiter's state as a readiness probe reads it.

use crate::Flux;
use crate::outage::health::{Health, LastError, OpenCircuit};
use crate::outage::policy::FailurePolicy;

impl Flux {
    /// The limiter's health, for a readiness probe or a status page. Cheap: it reads state,
    /// it does not call Redis (see [`Flux::ping`] for that).
    pub fn health(&self) -> Health {
        let inner = &self.inner;
        let (open_circuits, last_error) = match &inner.breaker {
            None => (Vec::new(), None),
            Some(breaker) => (
                breaker
                    .open_circuits()
                    .into_iter()
                    .map(|c| OpenCircuit {
                        circuit: inner.store.circuit_name(c.index).to_string(),
                        open_for_seconds: c.open_for.as_secs_f64(),
                    })
                    .collect(),
                breaker.last_error().map(|(message, ago)| LastError {
                    message,
                    seconds_ago: ago.as_secs_f64(),
                }),
            ),
        };
        let degraded = !open_circuits.is_empty();
        let failure_policy = self.failure_policy();
        Health {
            backend: inner.store.kind(),
            target: self.describe(),
            failure_policy,
            shadow: self.is_shadow(),
            degraded,
            ready: !(degraded && failure_policy == FailurePolicy::Closed),
            open_circuits,
            last_error,
            fleet_instances: inner.fleet.size(),
        }
    }
}
