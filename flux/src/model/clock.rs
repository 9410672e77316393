//! Clocks: where the in-memory backend and the `Local` fallback read the time. Redis always
//! uses its own clock (`TIME` inside the script).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A source of time for the in-memory backend, in microseconds on any fixed origin.
///
/// Production uses [`MonotonicClock`]; tests drive a [`ManualClock`].
pub trait Clock: Send + Sync + 'static {
    /// Microseconds since this clock's origin; must never go backwards.
    fn now_micros(&self) -> u64;
}

/// The process' monotonic clock (`std::time::Instant`).
#[derive(Clone, Copy, Debug)]
pub struct MonotonicClock {
    origin: Instant,
}

impl Default for MonotonicClock {
    fn default() -> Self {
        MonotonicClock {
            origin: Instant::now(),
        }
    }
}

impl Clock for MonotonicClock {
    fn now_micros(&self) -> u64 {
        // An offset keeps `now` well above zero, like real time, without meaning anything.
        1_000_000_000 + self.origin.elapsed().as_micros() as u64
    }
}

/// A clock that moves only when told to: for tests of time-dependent behaviour.
///
/// ```
/// use flux::clock::{Clock, ManualClock};
/// use std::time::Duration;
///
/// let clock = ManualClock::new(1_000);
/// clock.advance(Duration::from_millis(2));
/// assert_eq!(clock.now_micros(), 3_000);
/// ```
#[derive(Clone, Debug, Default)]
pub struct ManualClock {
    now: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock reading `start_micros`.
    pub fn new(start_micros: u64) -> ManualClock {
        ManualClock {
            now: Arc::new(start_micros.into()),
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        self.now.fetch_add(by.as_micros() as u64, Ordering::SeqCst);
    }

    /// Sets the clock to `micros` (it may not go backwards: a smaller value is ignored).
    pub fn set(&self, micros: u64) {
        self.now.fetch_max(micros, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_micros(&self) -> u64 {
        self.now.load(Ordering::SeqCst)
    }
}
