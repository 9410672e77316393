//! The fleet heartbeat: each Redis-backed limiter announces itself once a second, and learns
//! how many instances are alive (the outage layer's fleet says what the count is for).

use std::sync::{Arc, Weak};
use std::time::Duration;

use redis::cluster_async::ClusterConnection;

use super::link::Link;
use super::{Conn, RedisStore};
use crate::outage::fleet::Fleet;

/// The heartbeat script, `lua/fleet.lua` (a link here, as `gcra.lua`), sent whole with `EVAL`
/// once a second: never a `NOSCRIPT`, never a `SCRIPT LOAD`, so the checks' script cache and
/// its counters are not touched.
///
/// KEYS: the fleet's sorted set, `<prefix>:fleet`. ARGV: this instance's id, the heartbeat's
/// time to live in ms. Returns `[live]`: the number of live instances (members whose
/// heartbeat has not expired on Redis' clock), this one included.
const FLEET_SCRIPT: &str = include_str!("fleet.lua");

/// How often an instance announces itself.
pub(crate) const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// How long an announcement counts: three heartbeats, so that one late or lost call does not
/// drop a live instance from the count; an instance that stopped drops out within this.
pub(crate) const HEARTBEAT_TTL: Duration = Duration::from_secs(3);

/// The connection the heartbeat task uses: the checks' own (on a single Redis, whichever
/// it is at each beat, and healed by the beats' failures as by the checks').
enum BeatConn {
    Single(Arc<Link>),
    Cluster(ClusterConnection),
}

impl RedisStore {
    /// Starts this limiter's heartbeat on the current tokio runtime unless it runs already;
    /// called by every check, where it costs one atomic load once the task runs. On a
    /// cluster it waits until the checks have connected.
    pub(crate) fn ensure_heartbeat(&self, fleet: &Arc<Fleet>, prefix: &str) {
        if fleet.is_running() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let conn = match &self.conn {
            Conn::Single { link, .. } => BeatConn::Single(Arc::clone(link)),
            Conn::Cluster { conn, .. } => match conn.get() {
                Some(conn) => BeatConn::Cluster(conn.clone()),
                None => return,
            },
        };
        if fleet.claim() {
            let fleet = Arc::downgrade(fleet);
            runtime.spawn(heartbeat(fleet, conn, format!("{prefix}:fleet")));
        }
    }
}

/// Clears the fleet's `running` flag when the task ends, however it ends (a runtime that
/// shuts down drops its tasks): the next check then starts another.
struct Stopped(Weak<Fleet>);

impl Drop for Stopped {
    fn drop(&mut self) {
        if let Some(fleet) = self.0.upgrade() {
            fleet.stopped();
        }
    }
}

/// Announces the instance every `HEARTBEAT_EVERY` and records the count, until the limiter
/// is dropped. A heartbeat that fails (Redis unavailable) changes nothing: the last count
/// stands, which is the one the `Local` policy needs during an outage.
async fn heartbeat(fleet: Weak<Fleet>, conn: BeatConn, key: String) {
    let _stopped = Stopped(fleet.clone());
    let ttl = HEARTBEAT_TTL.as_millis() as u64;
    let mut every = tokio::time::interval(HEARTBEAT_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(id) = fleet.upgrade().map(|f| f.id().to_owned()) else {
            return;
        };
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(FLEET_SCRIPT).arg(1).arg(&key).arg(id).arg(ttl);
        let reply = match &conn {
            BeatConn::Single(link) => {
                let generation = link.generation();
                let call = async {
                    let (mut manager, _) = link.get()?;
                    cmd.query_async::<Vec<i64>>(&mut manager)
                        .await
                        .map_err(super::backend)
                };
                let reply = tokio::time::timeout(HEARTBEAT_EVERY, call)
                    .await
                    .unwrap_or(Err(crate::error::Error::Timeout(HEARTBEAT_EVERY)));
                link.observe(generation, &reply);
                reply.ok()
            }
            BeatConn::Cluster(c) => {
                let mut c = c.clone();
                let call = cmd.query_async::<Vec<i64>>(&mut c);
                tokio::time::timeout(HEARTBEAT_EVERY, call)
                    .await
                    .ok()
                    .and_then(Result::ok)
            }
        };
        if let Some(reply) = reply
            && let (Some(&live), Some(fleet)) = (reply.first(), fleet.upgrade())
        {
            fleet.record(u32::try_from(live).unwrap_or(u32::MAX));
        }
    }
}
