//! The registry of declared limits: each instance writes the limits it uses to the Redis
//! hash `<prefix>:limits` (name -> `RATE burst=N cost=N`), so that operators can list them
//! (`flux limits`).
//!
//! A limit is registered the first time this limiter checks it, and at start when the
//! application passes it to [`Flux::register`](crate::Flux::register). `#[rate_limit]`
//! statics are not collected at link time: the crates that can do that (`linkme`,
//! `inventory`) place statics with `#[link_section]`, an unsafe attribute that crates
//! forbidding `unsafe_code` (this workspace among them) cannot expand.
//!
//! A check pays one atomic load per limit for this (the limit remembers which limiter
//! registered it); the write to Redis happens in the overrides' background task.
//!
//! Bounded: names built at run time past [`MAX_LIMIT_NAMES`](crate::limit::MAX_LIMIT_NAMES)
//! are not registered.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

use flux_core::Rate;

use super::{Setting, Stored};
use crate::model::limit::Limit;
use crate::telemetry;

/// Identities of limiters, so a limit knows whether this one registered it already.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

pub(crate) struct Registry {
    id: u64,
    /// Every limit registered, by name: rate, burst, cost. Compared without formatting, since
    /// limits built per request (`limit = EXPR`) come here on every check.
    known: Mutex<HashMap<Box<str>, (Rate, u32, u32)>>,
    /// Registered but not yet written to Redis.
    pending: Mutex<Vec<(String, String)>>,
    /// Wakes the background task when something is pending.
    wake: Arc<Notify>,
}

impl Registry {
    pub(crate) fn new() -> Registry {
        Registry {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            known: Mutex::new(HashMap::new()),
            pending: Mutex::new(Vec::new()),
            wake: Arc::new(Notify::new()),
        }
    }

    /// Registers each of `limits` not registered yet with this limiter.
    pub(crate) fn note(&self, limits: &[Limit]) {
        for limit in limits {
            let mark = &limit.counters().registered_with;
            if mark.load(Ordering::Relaxed) != self.id {
                self.add(limit);
                mark.store(self.id, Ordering::Relaxed);
            }
        }
    }

    fn add(&self, limit: &Limit) {
        if !telemetry::name_admitted(limit.name_cow()) {
            // Past the cap on names built at run time: enforced, not listed.
            return;
        }
        let declared = (limit.rate(), limit.burst(), limit.cost());
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        if known.get(limit.name()) != Some(&declared) {
            known.insert(limit.name().into(), declared);
            self.pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((limit.name().to_owned(), stored(limit)));
            self.wake.notify_one();
        }
    }

    /// What to write: the pending entries, or with `all` every one (Redis may have lost
    /// them: flushed, restarted, failed over).
    pub(crate) fn take(&self, all: bool) -> Vec<(String, String)> {
        // Locks in the order `add` takes them (known, then pending): never the reverse.
        let known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if all {
            pending.clear();
            known
                .iter()
                .map(|(name, &(rate, burst, cost))| (name.to_string(), form(rate, burst, cost)))
                .collect()
        } else {
            std::mem::take(&mut *pending)
        }
    }

    /// What wakes the background task when a limit is registered.
    pub(crate) fn woken(&self) -> Arc<Notify> {
        Arc::clone(&self.wake)
    }

    /// Puts back entries whose write failed.
    pub(crate) fn retry(&self, entries: Vec<(String, String)>) {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(entries);
    }
}

/// A limit's stored form: `RATE burst=N cost=N`.
pub(crate) fn stored(limit: &Limit) -> String {
    form(limit.rate(), limit.burst(), limit.cost())
}

fn form(rate: Rate, burst: u32, cost: u32) -> String {
    format!("{rate} burst={burst} cost={cost}")
}

/// Reads a registered limit back.
pub(crate) fn parse(name: &str, value: &str) -> Result<Limit, String> {
    let stored = Stored::parse(value)?;
    let Setting::Limited { rate, burst } = stored.setting else {
        return Err(format!("{value:?} is not a limit"));
    };
    Limit::named(name.to_owned(), rate)
        .with_burst(burst)
        .and_then(|l| l.with_cost(stored.cost.unwrap_or(1)))
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_registers_once_and_reads_back() {
        static API: Limit = Limit::new("api", Rate::per_minute::<60>());
        let registry = Registry::new();
        registry.note(&[API.clone(), API.clone()]);
        registry.note(std::slice::from_ref(&API));
        let written = registry.take(false);
        assert_eq!(
            written,
            [("api".to_owned(), "60/min burst=60 cost=1".to_owned())]
        );
        assert!(registry.take(false).is_empty());
        assert_eq!(registry.take(true).len(), 1);
        assert_eq!(parse("api", &written[0].1), Ok(API.clone()));
    }
}
