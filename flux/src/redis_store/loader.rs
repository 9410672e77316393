//! Keeping the scripts in Redis' script cache: loaded before the first `EVALSHA`, loaded
//! again after a reconnection, and reloaded once (not once per caller) when a flushed cache
//! answers `NOSCRIPT` to many checks at once.

use std::sync::atomic::{AtomicU64, Ordering};

use redis::aio::ConnectionLike;

use crate::Error;

/// Whether a store's scripts are believed to be in the script cache of the Redis behind a
/// connection, and the single flight that loads them.
///
/// The state is one integer, an *epoch*: the number of loads so far times two, plus one while
/// the script is believed loaded. A check reads the epoch before sending `EVALSHA`
/// ([`Loader::ready`]); when Redis answers `NOSCRIPT` it asks for a reload with the epoch it
/// read ([`Loader::reload`]). Reloads take turns; one that finds the epoch moved on since its
/// caller read it (another caller loaded the script after that `EVALSHA` was sent) loads
/// nothing. So 64 checks that meet a flushed cache together cause one `SCRIPT LOAD`.
pub(super) struct Loader {
    /// Every script a store runs: they are loaded (and reloaded) together.
    scripts: Vec<&'static redis::Script>,
    epoch: AtomicU64,
    /// Held while a `SCRIPT LOAD` is in flight: the other callers wait for it.
    turn: tokio::sync::Mutex<()>,
}

/// The epoch's "believed loaded" bit.
const LOADED: u64 = 1;

impl Loader {
    /// A loader of `scripts`, which nothing has loaded yet.
    pub(super) fn new(scripts: Vec<&'static redis::Script>) -> Loader {
        Loader {
            scripts,
            epoch: AtomicU64::new(0),
            turn: tokio::sync::Mutex::new(()),
        }
    }

    /// The epoch to send `EVALSHA` under: at once while the script is believed loaded,
    /// otherwise after loading it (one load, however many callers wait for it).
    pub(super) async fn ready<C: ConnectionLike>(&self, conn: &mut C) -> Result<u64, Error> {
        let seen = self.epoch.load(Ordering::Acquire);
        if seen & LOADED != 0 {
            return Ok(seen);
        }
        self.reload(conn, seen).await
    }

    /// Loads the scripts after an `EVALSHA` sent under epoch `seen` got `NOSCRIPT`, unless
    /// they were loaded since; returns the epoch to send it again under.
    pub(super) async fn reload<C: ConnectionLike>(
        &self,
        conn: &mut C,
        seen: u64,
    ) -> Result<u64, Error> {
        let _turn = self.turn.lock().await;
        let now = self.epoch.load(Ordering::Acquire);
        if now != seen && now & LOADED != 0 {
            return Ok(now);
        }
        for script in &self.scripts {
            script.load_async(conn).await?;
        }
        let loaded = ((now >> 1) + 1) << 1 | LOADED;
        self.epoch.store(loaded, Ordering::Release);
        Ok(loaded)
    }

    /// The connection failed or a call missed its deadline: Redis may be another one (a
    /// restart, a failover) by the next call, so the next check loads the script first.
    pub(super) fn forget(&self) {
        self.epoch.fetch_and(!LOADED, Ordering::AcqRel);
    }
}

/// Whether `e` is Redis' `NOSCRIPT` reply.
pub(super) fn is_noscript(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
}

/// Whether a failed call leaves the script cache in doubt: anything but an error reply of
/// the server (a lost connection, a missed deadline).
pub(super) fn puts_script_in_doubt(e: &Error) -> bool {
    match e {
        Error::Timeout(_) => true,
        Error::Redis(e) => !matches!(e.kind(), redis::ErrorKind::Server(_)),
        _ => false,
    }
}
