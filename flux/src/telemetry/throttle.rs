//! Log lines a client's requests can trigger, bounded: at most one WARN per key (a limit's
//! name) per interval, carrying the count of those held back since the last one; the ones
//! held back are DEBUG events. Nothing a client sends makes the service log more at WARN
//! than one line per limit per interval, however many requests, of whatever size.
//!
//! ```ignore
//! static REFUSED: Throttled = Throttled::new(WARN_EVERY);
//! warn_throttled!(REFUSED, limit_name, limit = limit_name, "request refused: {reason}");
//! // WARN ... suppressed=0 limit="api" request refused: ...   (the first one)
//! // DEBUG ... limit="api" request refused: ...               (the next ones, for 10 s)
//! // WARN ... suppressed=41 limit="api" request refused: ...  (the first one after 10 s)
//! ```

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How often a throttled WARN is logged at most, per key.
pub(crate) const WARN_EVERY: Duration = Duration::from_secs(10);

/// Keys tracked at most by one [`Throttled`]: past them, new keys share one tally
/// ([`OVERFLOW`]), so the memory of a throttle is bounded whatever the keys.
const MAX_KEYS: usize = 1024;

/// The tally shared by the keys past [`MAX_KEYS`].
const OVERFLOW: &str = "_other";

/// One kind of log line, throttled per key. A `static` per call site.
pub(crate) struct Throttled {
    every: Duration,
    tallies: Mutex<BTreeMap<Box<str>, Tally>>,
}

struct Tally {
    /// When the last line of this key was logged.
    logged: Instant,
    /// Events held back since then.
    held: u64,
}

impl Throttled {
    /// A throttle that lets one event per key through every `every`.
    pub(crate) const fn new(every: Duration) -> Throttled {
        Throttled {
            every,
            tallies: Mutex::new(BTreeMap::new()),
        }
    }

    /// Whether an event of `key` is logged now: `Some(n)`, with the `n` events of that key
    /// held back since its last one; `None` if it is held back (and counted).
    pub(crate) fn due(&self, key: &str) -> Option<u64> {
        self.due_at(key, Instant::now())
    }

    fn due_at(&self, key: &str, now: Instant) -> Option<u64> {
        let mut tallies = self.tallies.lock().unwrap_or_else(PoisonError::into_inner);
        let key = if tallies.len() < MAX_KEYS || tallies.contains_key(key) {
            key
        } else {
            OVERFLOW
        };
        match tallies.get_mut(key) {
            Some(tally) if now.saturating_duration_since(tally.logged) < self.every => {
                tally.held += 1;
                None
            }
            Some(tally) => {
                tally.logged = now;
                Some(std::mem::take(&mut tally.held))
            }
            None => {
                tallies.insert(
                    key.into(),
                    Tally {
                        logged: now,
                        held: 0,
                    },
                );
                Some(0)
            }
        }
    }
}

/// Logs at WARN (target `flux`) if `$throttle` lets the event of `$key` through, with a
/// `suppressed` field counting those held back since; else at DEBUG. The remaining
/// arguments are those of `tracing::warn!` after the target.
macro_rules! warn_throttled {
    ($throttle:expr, $key:expr, $($rest:tt)+) => {
        match $throttle.due($key) {
            Some(suppressed) => ::tracing::warn!(target: "flux", suppressed, $($rest)+),
            None => ::tracing::debug!(target: "flux", $($rest)+),
        }
    };
}
pub(crate) use warn_throttled;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_per_key_per_interval_with_the_count_held_back() {
        let throttle = Throttled::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(throttle.due_at("a", t0), Some(0));
        for _ in 0..1000 {
            assert_eq!(throttle.due_at("a", t0 + Duration::from_secs(1)), None);
        }
        // Another key has its own interval.
        assert_eq!(throttle.due_at("b", t0 + Duration::from_secs(1)), Some(0));
        assert_eq!(
            throttle.due_at("a", t0 + Duration::from_secs(10)),
            Some(1000)
        );
        assert_eq!(throttle.due_at("a", t0 + Duration::from_secs(11)), None);
        assert_eq!(throttle.due_at("a", t0 + Duration::from_secs(20)), Some(1));
    }

    #[test]
    fn keys_past_the_bound_share_one_tally() {
        let throttle = Throttled::new(Duration::from_secs(10));
        let t0 = Instant::now();
        for n in 0..MAX_KEYS {
            assert_eq!(throttle.due_at(&format!("k{n}"), t0), Some(0));
        }
        // One line for all the keys past the bound, then none for any of them.
        assert_eq!(throttle.due_at("new-1", t0), Some(0));
        for n in 0..10_000 {
            assert_eq!(throttle.due_at(&format!("new-{n}"), t0), None);
        }
        let tracked = throttle.tallies.lock().expect("not poisoned").len();
        assert_eq!(tracked, MAX_KEYS + 1);
        // Keys tracked before keep their own.
        assert_eq!(throttle.due_at("k0", t0 + Duration::from_secs(10)), Some(0));
    }
}
