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
//! are not registered. And nothing stays forever: each entry carries `seen=UNIX_MS`, the last
//! time a running instance wrote it (every instance writes all of its entries again every
//! 30 s); an entry not seen for [`RETENTION`] is left out by readers and deleted by the
//! instances, and the hash itself expires [`RETENTION`] after its last write. Entries written
//! without `seen=` (by older versions, or by hand) read as before, and get one the first time
//! an instance cleans the hash, so they too go a day after the last instance that wrote them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;

use flux_core::Rate;

use super::{Setting, Stored};
use crate::model::limit::Limit;
use crate::telemetry;

/// How long an entry of the registry (and the hash) outlives the last instance that wrote it.
pub(crate) const RETENTION: Duration = Duration::from_secs(24 * 3600);

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

/// Milliseconds since the Unix epoch, now (0 before it).
pub(crate) fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A stored form as written at `now_ms`: `RATE burst=N cost=N seen=UNIX_MS`.
pub(crate) fn stamp(value: &str, now_ms: u64) -> String {
    format!("{value} seen={now_ms}")
}

/// The stored form without its `seen=` word, and that word's time (`None`: not stamped).
fn seen(value: &str) -> Result<(String, Option<u64>), String> {
    let mut seen = None;
    let mut rest = Vec::new();
    for word in value.split_whitespace() {
        match word.strip_prefix("seen=") {
            Some(v) if seen.is_none() => {
                seen =
                    Some(v.parse::<u64>().map_err(|_| {
                        format!("{value:?}: seen={v:?} is not a time in milliseconds")
                    })?);
            }
            Some(_) => return Err(format!("{value:?}: more than one seen=")),
            None => rest.push(word),
        }
    }
    Ok((rest.join(" "), seen))
}

/// Whether an entry seen at `seen_ms` is past [`RETENTION`] at `now_ms`.
fn stale(seen_ms: u64, now_ms: u64) -> bool {
    now_ms.saturating_sub(seen_ms) > RETENTION.as_millis() as u64
}

/// Reads a registered limit back: `None` when no instance wrote it for [`RETENTION`]
/// before `now_ms`.
pub(crate) fn parse(name: &str, value: &str, now_ms: u64) -> Result<Option<Limit>, String> {
    let (value, seen) = seen(value)?;
    if seen.is_some_and(|at| stale(at, now_ms)) {
        return Ok(None);
    }
    read(name, &value).map(Some)
}

/// What cleaning the registry's `entries` at `now_ms` changes, as `(field, value as read,
/// new value)`: `None` deletes an entry not seen for [`RETENTION`] (or with a garbled
/// `seen=`); an entry without `seen=` gets one of `now_ms`, so it ages from now on.
pub(crate) fn prune(
    entries: &[(String, String)],
    now_ms: u64,
) -> Vec<(String, String, Option<String>)> {
    entries
        .iter()
        .filter_map(|(field, value)| {
            let change = match seen(value) {
                Ok((_, Some(at))) if !stale(at, now_ms) => return None,
                Ok((_, None)) => Some(stamp(value, now_ms)),
                Ok((_, Some(_))) | Err(_) => None,
            };
            Some((field.clone(), value.clone(), change))
        })
        .collect()
}

/// Reads a registered limit's stored form (without `seen=`).
fn read(name: &str, value: &str) -> Result<Limit, String> {
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
        let now = now_millis();
        assert_eq!(parse("api", &written[0].1, now), Ok(Some(API.clone())));
        let stamped = stamp(&written[0].1, now);
        assert_eq!(stamped, format!("60/min burst=60 cost=1 seen={now}"));
        assert_eq!(parse("api", &stamped, now), Ok(Some(API.clone())));
    }

    #[test]
    fn an_entry_nobody_wrote_for_a_day_is_gone() {
        let day = RETENTION.as_millis() as u64;
        let now = 10 * day;
        let entry = |value: &str| ("api".to_owned(), value.to_owned());
        let fresh = stamp("1/s burst=1 cost=1", now - day);
        let old = stamp("1/s burst=1 cost=1", now - day - 1);
        assert!(parse("api", &fresh, now).expect("valid").is_some());
        assert_eq!(parse("api", &old, now), Ok(None));
        let entries = [
            entry(&fresh),
            entry(&old),
            entry("1/s burst=1 cost=1"),
            entry("1/s seen=soon"),
        ];
        assert_eq!(
            prune(&entries, now),
            [
                (entries[1].0.clone(), entries[1].1.clone(), None),
                (
                    entries[2].0.clone(),
                    entries[2].1.clone(),
                    Some(stamp("1/s burst=1 cost=1", now))
                ),
                (entries[3].0.clone(), entries[3].1.clone(), None),
            ]
        );
        assert!(parse("api", "1/s seen=1 seen=2", now).is_err());
    }
}
