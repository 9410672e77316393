//! Flux's two Lua scripts, and whether the Redis behind a store holds them in its script cache.
//!
//! No check ever waits for a script to load. A call sent while a script is not known to be
//! loaded (the first calls after start-up, after a lost connection or a missed deadline, after
//! a `NOSCRIPT` reply) carries `SCRIPT LOAD` in front of its `EVALSHA`, in the same write:
//! Redis runs a connection's commands in order, so the `EVALSHA` finds the script. A cold start
//! under 64 concurrent requests therefore sees no `NOSCRIPT` at all, and a flushed script cache
//! costs one reload per batch of checks in flight, not one per check.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

use crate::error::{BackendErrorKind, Error};

/// The token-bucket script, `lua/gcra.lua` (carried in this folder as a link, so that the
/// published crate holds it): one call decides a batch of checks.
///
/// KEYS: the bucket keys of every check, check after check (the keys of one check are those
/// of one client, one hash tag). ARGV: `now` in µs or `""` (server `TIME`), then per check:
/// its number of keys, then per key: emission interval, tolerance, increment (µs). Returns,
/// check after check, `[allowed, (remaining, retry_after_us, reset_after_us) per key]`; a
/// check whose read or write Redis refused has Redis' error text for `allowed` (and zeros),
/// which `batch::Reply` turns into that check's error alone.
pub(super) static GCRA: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(GCRA_CODE));
const GCRA_CODE: &str = include_str!("gcra.lua");

/// The concurrency-slot script, `lua/concurrency.lua` (a link here, as `gcra.lua`).
///
/// KEYS: the slot set of one (limit, client). ARGV: operation (`acquire`, `renew` or
/// `release`), slot id, max, lease in ms. Returns `[ok, in_flight]`: acquire adds the slot
/// if fewer than max unexpired slots are held; renew moves a held slot's expiry to now +
/// lease; release removes it.
pub(super) static SLOTS: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(SLOTS_CODE));
const SLOTS_CODE: &str = include_str!("concurrency.lua");

/// One of the two scripts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Id {
    Gcra = 0,
    Slots = 1,
}

impl Id {
    pub(super) fn script(self) -> &'static redis::Script {
        match self {
            Id::Gcra => &GCRA,
            Id::Slots => &SLOTS,
        }
    }

    /// `SCRIPT LOAD <body>`.
    pub(super) fn load_cmd(self) -> redis::Cmd {
        let mut cmd = redis::cmd("SCRIPT");
        cmd.arg("LOAD").arg(match self {
            Id::Gcra => GCRA_CODE,
            Id::Slots => SLOTS_CODE,
        });
        cmd
    }
}

/// What a store believes of each script: one *epoch* per script, the number of times the
/// belief was dropped (times four), plus [`LOADED`] while the script is believed loaded, or
/// [`RELOADING`] while one call reloads it after `NOSCRIPT`. A call remembers the epoch it was
/// sent under, so that a reply to an old call never overrides what a newer one learned (a
/// load answered after a reconnection says nothing of the new server).
#[derive(Debug, Default)]
pub(super) struct Cache {
    epochs: [AtomicU64; 2],
    /// Wakes the calls waiting for a reload ([`Cache::settled`]).
    reloaded: Notify,
}

/// The epoch's "believed loaded" bit.
const LOADED: u64 = 1;
/// The epoch's "one call reloads it" bit.
const RELOADING: u64 = 2;

impl Cache {
    /// The epoch to send a call of `id` under.
    pub(super) fn epoch(&self, id: Id) -> u64 {
        self.epochs[id as usize].load(Ordering::Acquire)
    }

    /// Whether a call sent under `epoch` must carry `SCRIPT LOAD`.
    pub(super) fn needs_load(epoch: u64) -> bool {
        epoch & LOADED == 0
    }

    /// A call sent under `epoch` with `SCRIPT LOAD` in front succeeded: the script is loaded,
    /// unless the belief was dropped since.
    pub(super) fn loaded(&self, id: Id, epoch: u64) {
        let _ = self.epochs[id as usize].compare_exchange(
            epoch,
            (epoch & !RELOADING) | LOADED,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    /// Redis answered `NOSCRIPT` to a call sent under `epoch`. The first call to report it for
    /// that epoch gets the reload to do (the guard; its next write loads the script), and the
    /// others wait for it ([`Cache::settled`]): a flushed cache that meets many writes in
    /// flight is loaded again once.
    pub(super) fn missing(&self, id: Id, epoch: u64) -> Option<Reload<'_>> {
        if epoch & LOADED == 0 {
            return None;
        }
        let reloading = next(epoch) | RELOADING;
        self.epochs[id as usize]
            .compare_exchange(epoch, reloading, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| Reload {
                cache: self,
                id,
                epoch: reloading,
            })
    }

    /// Returns once no call reloads `id`. Only calls that met `NOSCRIPT` wait here, for the
    /// one write that loads the script again: Redis was answering a moment ago.
    pub(super) async fn settled(&self, id: Id) {
        loop {
            let notified = self.reloaded.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.epoch(id) & RELOADING == 0 {
                return;
            }
            notified.await;
        }
    }

    /// A call on the connection failed with `e`. Anything but an error reply of the server (a
    /// lost connection, a missed deadline) means that whatever answers next may be another
    /// server (a restart, a failover), so every script is loaded again with the next calls.
    pub(super) fn failed(&self, e: &Error) {
        let in_doubt = match e {
            Error::Timeout(_) => true,
            Error::Backend(e) => e.kind() != BackendErrorKind::Server,
            _ => false,
        };
        if in_doubt {
            self.doubt();
        }
    }

    /// Redis may be another server by the next call: every script is loaded again with it.
    fn doubt(&self) {
        for epoch in &self.epochs {
            if epoch.load(Ordering::Acquire) & (LOADED | RELOADING) != 0 {
                let _ = epoch.fetch_update(Ordering::AcqRel, Ordering::Acquire, |e| {
                    (e & (LOADED | RELOADING) != 0).then_some(next(e))
                });
            }
        }
        self.reloaded.notify_waiters();
    }
}

/// The reload one call does after `NOSCRIPT` (see [`Cache::missing`]). Dropped, it releases
/// the calls waiting for it, whether the load succeeded or not (a failed one leaves the
/// script to be loaded by the next write).
pub(super) struct Reload<'a> {
    cache: &'a Cache,
    id: Id,
    epoch: u64,
}

impl Reload<'_> {
    pub(super) fn id(&self) -> Id {
        self.id
    }
}

impl Drop for Reload<'_> {
    fn drop(&mut self) {
        let _ = self.cache.epochs[self.id as usize].compare_exchange(
            self.epoch,
            self.epoch & !RELOADING,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        self.cache.reloaded.notify_waiters();
    }
}

/// The epoch after `epoch` is dropped: the next count, neither loaded nor reloading.
fn next(epoch: u64) -> u64 {
    ((epoch >> 2) + 1) << 2
}

/// Whether `e` is Redis' `NOSCRIPT` reply.
pub(super) fn is_noscript(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_load_answered_after_the_belief_was_dropped_counts_for_nothing() {
        let cache = Cache::default();
        let sent = cache.epoch(Id::Gcra);
        assert!(Cache::needs_load(sent));
        cache.loaded(Id::Gcra, sent);
        let loaded = cache.epoch(Id::Gcra);
        assert!(!Cache::needs_load(loaded));
        assert!(Cache::needs_load(cache.epoch(Id::Slots)));

        // A reconnection while a load was in flight.
        cache.doubt();
        let after = cache.epoch(Id::Gcra);
        assert!(Cache::needs_load(after));
        cache.loaded(Id::Gcra, sent); // a stale reply
        assert_eq!(cache.epoch(Id::Gcra), after);
    }

    #[test]
    fn the_first_noscript_of_an_epoch_reloads_and_the_others_wait() {
        let cache = Cache::default();
        cache.loaded(Id::Gcra, cache.epoch(Id::Gcra));
        let sent = cache.epoch(Id::Gcra);
        let reload = cache.missing(Id::Gcra, sent).expect("the first reloads");
        assert!(cache.missing(Id::Gcra, sent).is_none(), "the second waits");
        let reloading = cache.epoch(Id::Gcra);
        assert!(Cache::needs_load(reloading));
        cache.loaded(Id::Gcra, reloading);
        drop(reload);
        assert!(!Cache::needs_load(cache.epoch(Id::Gcra)));

        // A reload that fails (dropped before its load was answered) leaves the script to
        // be loaded by the next write, and waits no more.
        let sent = cache.epoch(Id::Gcra);
        drop(cache.missing(Id::Gcra, sent).expect("reload"));
        let now = cache.epoch(Id::Gcra);
        assert!(Cache::needs_load(now));
        assert_eq!(now & RELOADING, 0);
    }
}
