//! The connection to a single Redis, and how it heals.
//!
//! The connection manager of the Redis client re-dials a connection that dropped. It cannot
//! know of two failures that leave the connection open:
//!
//! - a server demoted behind the same address (a failover; a manual `REPLICAOF`): every
//!   write answers `READONLY` (or `MASTERDOWN`, `LOADING` while it resynchronises), while the
//!   new primary waits at the same name;
//! - a black hole (a host replaced or partitioned without a TCP reset): no answer, no error,
//!   until the kernel gives up on the socket minutes later.
//!
//! So the calls' outcomes are reported here ([`Link::observe`]), and a connection failing in
//! a way a new one can cure is dropped for a fresh manager, which dials (and resolves the
//! address) again on first use: on one of those error codes, and after [`SILENT_MISSES`]
//! missed deadlines in a row with no answer for at least a deadline. At most one replacement
//! every [`MIN_REPLACE_INTERVAL`], so a Redis that is simply down is not hammered with
//! connections. Every connection also sets TCP keepalive ([`tcp_settings`]), so an idle one
//! to a dead peer (a subscription) is noticed too.
//!
//! The hot path costs one atomic load for the connection and one for the miss count.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::io::tcp::{TcpSettings, socket2::TcpKeepalive};

use crate::error::{ConfigOption, Error};
use crate::telemetry;

/// How long one attempt to open a connection may take (TLS handshakes included). Checks
/// never wait for it longer than their own deadline.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Idle time before the first keepalive probe.
pub(crate) const KEEPALIVE_TIME: Duration = Duration::from_secs(5);
/// Time between keepalive probes.
pub(crate) const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
/// Unanswered probes before the connection is dropped.
pub(crate) const KEEPALIVE_RETRIES: u32 = 3;
/// Longest sent data may stay unacknowledged before the connection is dropped (Linux'
/// `TCP_USER_TIMEOUT`; keepalive covers only idle connections): as long as keepalive takes.
const USER_TIMEOUT: Duration = Duration::from_secs(11);

/// Missed deadlines in a row (no answer between them) that condemn a connection.
pub(crate) const SILENT_MISSES: u32 = 3;
/// Fewest time between two replacements of the connection.
pub(crate) const MIN_REPLACE_INTERVAL: Duration = Duration::from_millis(250);

/// Error codes that mean "this server will not take the checks' writes, another may": the
/// connection is replaced when a call meets one. With the `reason` label of each.
pub(crate) const HEALING_CODES: [(&str, &str); 3] = [
    ("READONLY", "readonly"),
    ("MASTERDOWN", "masterdown"),
    ("LOADING", "loading"),
];

/// Which of [`HEALING_CODES`] an error reply carries: as its code, or (Redis before 7, where
/// an error inside a script comes back as `ERR Error running script ...: -READONLY You
/// can't write ...`) inside the script's error.
fn healing_code(e: &crate::error::BackendError) -> Option<(&'static str, &'static str)> {
    if let Some(code) = e.code() {
        if let Some(&known) = HEALING_CODES.iter().find(|(c, _)| *c == code) {
            return Some(known);
        }
        if code != "ERR" {
            return None;
        }
    }
    let message = e.to_string();
    HEALING_CODES
        .into_iter()
        .find(|(code, _)| message.contains(&format!("-{code} ")))
}

/// The TCP settings of every connection Flux opens: keepalive (probes after
/// [`KEEPALIVE_TIME`] idle, every [`KEEPALIVE_INTERVAL`], [`KEEPALIVE_RETRIES`] of them) and a
/// user timeout of as long.
pub(super) fn tcp_settings() -> TcpSettings {
    let keepalive = TcpKeepalive::new()
        .with_time(KEEPALIVE_TIME)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_RETRIES);
    let settings = TcpSettings::default().set_keepalive(keepalive);
    #[cfg(any(target_os = "android", target_os = "fuchsia", target_os = "linux"))]
    let settings = settings.set_user_timeout(USER_TIMEOUT);
    settings
}

/// The connection in use, and which one it is (counting replacements).
struct Current {
    manager: ConnectionManager,
    generation: u64,
}

/// The connection to one Redis, replaced when it fails in a way a new one can cure.
pub(super) struct Link {
    client: redis::Client,
    /// Made on first use (inside the runtime: building a `Flux` needs none), then replaced.
    current: ArcSwapOption<Current>,
    /// The calls' deadline: a connection silent for longer is suspect.
    deadline: Duration,
    /// Missed deadlines since the last answer.
    misses: AtomicU32,
    /// When the first of those missed, µs since `origin`.
    silent_since: AtomicU64,
    /// When the connection was last replaced, µs since `origin` (0: never).
    replaced: AtomicU64,
    origin: Instant,
    /// The target with any password removed, for logs.
    display: String,
}

impl Link {
    pub(super) fn new(client: redis::Client, deadline: Duration, display: String) -> Link {
        Link {
            client,
            current: ArcSwapOption::empty(),
            deadline,
            misses: AtomicU32::new(0),
            silent_since: AtomicU64::new(0),
            replaced: AtomicU64::new(0),
            origin: Instant::now(),
            display,
        }
    }

    /// The client (for connections of their own: subscriptions).
    pub(super) fn client(&self) -> &redis::Client {
        &self.client
    }

    /// The connection to use now, and its generation (how many replacements preceded it).
    pub(super) fn get(&self) -> Result<(ConnectionManager, u64), Error> {
        // The hot path: a load and a clone of the manager, no reference count on `Current`.
        if let Some(current) = &*self.current.load() {
            return Ok((current.manager.clone(), current.generation));
        }
        let fresh = Arc::new(Current {
            manager: self.manager()?,
            generation: 0,
        });
        let previous = self
            .current
            .compare_and_swap(&None::<Arc<Current>>, Some(Arc::clone(&fresh)));
        let current = previous.as_ref().unwrap_or(&fresh);
        Ok((current.manager.clone(), current.generation))
    }

    /// How many times the connection was replaced.
    pub(super) fn generation(&self) -> u64 {
        self.current.load().as_ref().map_or(0, |c| c.generation)
    }

    fn manager(&self) -> Result<ConnectionManager, Error> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            // Flux puts its own deadline on every call (checks never wait for a reconnection
            // longer than that). A lost connection is re-dialled in the background for about
            // a second (20 ms, 40 ms, ... capped at 250 ms), so that a Redis that comes back
            // is connected before the breaker's next probe; after that, the next failed call
            // starts another round.
            .set_response_timeout(None)
            .set_number_of_retries(6)
            .set_min_delay(Duration::from_millis(20))
            .set_max_delay(Duration::from_millis(250));
        ConnectionManager::new_lazy_with_config(self.client.clone(), config).map_err(|e| {
            Error::config(
                ConfigOption::RedisUrl,
                format!("cannot set up the Redis client for {}: {e}", self.display),
            )
        })
    }

    fn now(&self) -> u64 {
        self.origin.elapsed().as_micros() as u64
    }

    /// Reports how a call on the connection `generation` ended; replaces the connection
    /// when it failed in a way a new one can cure. `deadline` is the call's own (a check's,
    /// or a longer one off the requests' path).
    pub(super) fn observe<T>(&self, generation: u64, result: &Result<T, Error>) {
        match result {
            Ok(_) => self.answered(),
            Err(Error::Timeout(_)) => {
                let now = self.now();
                let misses = self.misses.fetch_add(1, Ordering::AcqRel) + 1;
                if misses == 1 {
                    self.silent_since.store(now, Ordering::Release);
                    return;
                }
                let silent = now.saturating_sub(self.silent_since.load(Ordering::Acquire));
                if misses >= SILENT_MISSES && silent >= self.deadline.as_micros() as u64 {
                    let why = format_args!("{misses} calls in a row unanswered");
                    self.replace(generation, "silent", &why);
                }
            }
            Err(Error::Backend(e)) => {
                if let Some((code, reason)) = healing_code(e) {
                    self.replace(generation, reason, &format_args!("it answered {code}"));
                } else if e.kind() == crate::error::BackendErrorKind::Server {
                    // An error reply is an answer: the connection is alive.
                    self.answered();
                }
            }
            Err(_) => {}
        }
    }

    fn answered(&self) {
        if self.misses.load(Ordering::Acquire) != 0 {
            self.misses.store(0, Ordering::Release);
        }
    }

    /// Drops connection `generation` for a fresh manager (which dials on first use), unless
    /// it was replaced already or was replaced less than [`MIN_REPLACE_INTERVAL`] ago.
    fn replace(&self, generation: u64, reason: &'static str, why: &dyn std::fmt::Display) {
        let now = self.now();
        let last = self.replaced.load(Ordering::Acquire);
        if (last != 0 && now.saturating_sub(last) < MIN_REPLACE_INTERVAL.as_micros() as u64)
            || self.generation() != generation
            || self
                .replaced
                .compare_exchange(last, now.max(1), Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            return;
        }
        let Ok(manager) = self.manager() else {
            return;
        };
        self.current.store(Some(Arc::new(Current {
            manager,
            generation: generation + 1,
        })));
        self.misses.store(0, Ordering::Release);
        telemetry::redis_reconnect(reason);
        // Once per incident at WARN (a failover is worth a line); a server that keeps
        // failing replaces its connection up to 4 times a second, logged at DEBUG.
        if last == 0 || now.saturating_sub(last) > 60_000_000 {
            tracing::warn!(target: "flux", "reconnecting to Redis at {}: {why}", self.display);
        } else {
            tracing::debug!(target: "flux", "reconnecting to Redis at {}: {why}", self.display);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{BackendError, BackendErrorKind};

    fn link(deadline_ms: u64) -> Link {
        let client = redis::Client::open("redis://127.0.0.1:1/").expect("valid URL");
        Link::new(
            client,
            Duration::from_millis(deadline_ms),
            "127.0.0.1:1".into(),
        )
    }

    fn reply(code: &str) -> Result<(), Error> {
        Err(Error::Backend(BackendError::new(
            BackendErrorKind::Server,
            Some(code.to_owned()),
            format!("{code} test"),
            None,
        )))
    }

    fn timeout() -> Result<(), Error> {
        Err(Error::Timeout(Duration::from_millis(1)))
    }

    #[tokio::test]
    async fn a_server_that_refuses_writes_gets_a_new_connection_at_most_every_interval() {
        let link = link(10);
        link.get().expect("a manager");
        assert_eq!(link.generation(), 0);
        link.observe(0, &reply("READONLY"));
        assert_eq!(link.generation(), 1, "READONLY replaces the connection");
        link.observe(1, &reply("MASTERDOWN"));
        assert_eq!(link.generation(), 1, "not twice within the interval");
        tokio::time::sleep(MIN_REPLACE_INTERVAL + Duration::from_millis(10)).await;
        link.observe(0, &reply("LOADING"));
        assert_eq!(
            link.generation(),
            1,
            "a late answer of a replaced connection"
        );
        link.observe(1, &reply("WRONGTYPE"));
        assert_eq!(link.generation(), 1, "other errors are answers");
        link.observe(1, &reply("LOADING"));
        assert_eq!(link.generation(), 2);
    }

    #[test]
    fn a_script_s_write_refused_by_a_replica_of_redis_6_is_recognised() {
        let wrapped = BackendError::new(
            BackendErrorKind::Server,
            Some("ERR".to_owned()),
            "ERR Error running script (call to f_7965b3067f66bd3eafbe40deab2e70dae75529f3): \
             @user_script:88: @user_script: 88: -READONLY You can't write against a read only \
             replica."
                .to_owned(),
            None,
        );
        assert_eq!(healing_code(&wrapped), Some(("READONLY", "readonly")));
        let other = BackendError::new(
            BackendErrorKind::Server,
            Some("WRONGTYPE".to_owned()),
            "WRONGTYPE -READONLY ".to_owned(),
            None,
        );
        assert_eq!(healing_code(&other), None);
    }

    #[tokio::test]
    async fn a_silent_connection_is_replaced_after_misses_in_a_row() {
        let link = link(10);
        link.get().expect("a manager");
        link.observe(0, &timeout());
        link.observe(0, &timeout());
        link.observe(0, &Ok(()));
        std::thread::sleep(Duration::from_millis(15));
        link.observe(0, &timeout());
        assert_eq!(link.generation(), 0, "an answer between misses clears them");
        link.observe(0, &timeout());
        link.observe(0, &timeout());
        assert_eq!(link.generation(), 0, "silent for less than a deadline");
        std::thread::sleep(Duration::from_millis(15));
        link.observe(0, &timeout());
        assert_eq!(link.generation(), 1, "silent for a deadline, 4 misses");
    }
}
