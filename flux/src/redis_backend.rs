//! The Redis backend: one atomic Lua call per check, on a multiplexed connection.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use tokio::sync::{OnceCell, mpsc, oneshot};

use crate::Error;
use crate::breaker::Breaker;
use crate::gcra::{Bucket, Params};

/// The token-bucket script, `lua/gcra.lua`, one per process. Checks send `EVALSHA` with its
/// hash (concurrent ones pipelined together, see `run_batches`); a `NOSCRIPT` reply (a flushed
/// script cache, a restarted or failed-over Redis) loads it with `SCRIPT LOAD` and runs the
/// check again, inside the same check.
///
/// KEYS: the bucket keys of one client (one hash tag). ARGV: `now` in µs or `""` (server
/// `TIME`), then per key: emission interval, tolerance, increment (µs). Returns
/// `[allowed, (remaining, retry_after_us, reset_after_us) per key]`.
static GCRA_SCRIPT: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("gcra.lua")));

pub(crate) struct RedisStore {
    conn: Conn,
    /// The target with any password removed, for logs and errors.
    pub(crate) display: String,
}

enum Conn {
    Single {
        client: redis::Client,
        /// Made on first use, inside the runtime (building a `Flux` needs none).
        manager: OnceLock<ConnectionManager>,
        /// The queue of the batch task that pipelines concurrent checks (see `Job`).
        batcher: Mutex<Option<mpsc::UnboundedSender<Job>>>,
        /// Checks in flight: a check that finds none goes straight to the connection (a
        /// batch would only add a hop); concurrent ones are pipelined by the batch task.
        inflight: AtomicUsize,
    },
    Cluster {
        client: Box<ClusterClient>,
        conn: OnceCell<ClusterConnection>,
        nodes: Arc<NodeMap>,
    },
}

/// Circuits a cluster's masters map to; more masters than this share circuits.
pub(crate) const NODE_CIRCUITS: usize = 256;

/// Which master serves each hash slot, as an index per master address: the breaker keeps one
/// circuit per master, so a lost master opens one circuit for all of its slots at once and
/// its clients stop waiting for it, while other masters' slots keep calling Redis. Learned
/// from `CLUSTER SLOTS` after connecting and again (at most once a second) after a failure,
/// so a failover moves the slots to the promoted replica's circuit.
struct NodeMap {
    slots: Box<[AtomicU16]>,
    addresses: Mutex<HashMap<String, u16>>,
    /// When the map was last refreshed, in ms since `origin` (0: never).
    refreshed: AtomicU64,
    origin: Instant,
}

impl NodeMap {
    fn new() -> NodeMap {
        NodeMap {
            slots: (0..crate::key::SLOTS).map(|_| AtomicU16::new(0)).collect(),
            addresses: Mutex::new(HashMap::new()),
            refreshed: AtomicU64::new(0),
            origin: Instant::now(),
        }
    }

    /// Claims the right to refresh: never refreshed, or the last one over a second ago.
    fn due(&self) -> bool {
        let now = self.origin.elapsed().as_millis() as u64 + 1_000;
        let last = self.refreshed.load(Ordering::Acquire);
        (last == 0 || now - last >= 1_000)
            && self
                .refreshed
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }

    /// Takes in a `CLUSTER SLOTS` reply; returns the circuits that no slot maps to any more.
    fn apply(&self, reply: &redis::Value) -> Vec<usize> {
        let redis::Value::Array(ranges) = reply else {
            return Vec::new();
        };
        let mut addresses = self
            .addresses
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for range in ranges {
            let redis::Value::Array(fields) = range else {
                continue;
            };
            let (Some(start), Some(end), Some(redis::Value::Array(master))) =
                (fields.first(), fields.get(1), fields.get(2))
            else {
                continue;
            };
            let (Ok(start), Ok(end)) = (
                redis::from_redis_value_ref::<usize>(start),
                redis::from_redis_value_ref::<usize>(end),
            ) else {
                continue;
            };
            let address = master
                .iter()
                .take(2)
                .filter_map(|v| redis::from_redis_value_ref::<String>(v).ok())
                .collect::<Vec<_>>()
                .join(":");
            let next = addresses.len();
            let index = *addresses
                .entry(address)
                .or_insert((next % NODE_CIRCUITS) as u16);
            for slot in self.slots.iter().take(end.saturating_add(1)).skip(start) {
                slot.store(index, Ordering::Relaxed);
            }
        }
        let mut owning = vec![false; NODE_CIRCUITS];
        for slot in self.slots.iter() {
            owning[usize::from(slot.load(Ordering::Relaxed)) % NODE_CIRCUITS] = true;
        }
        addresses
            .values()
            .map(|&i| usize::from(i))
            .filter(|&i| !owning[i])
            .collect()
    }
}

/// How long one attempt to open a connection may take (TLS handshakes included). Checks
/// never wait for it longer than their own deadline.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

impl RedisStore {
    /// A store for one Redis at `url`; connects lazily, on first use.
    pub(crate) fn single(url: &str) -> Result<RedisStore, Error> {
        ensure_crypto_provider();
        let display = redact(url);
        let client = redis::Client::open(url)
            .map_err(|e| Error::Config(format!("invalid Redis URL {display}: {e}")))?;
        Ok(RedisStore {
            conn: Conn::Single {
                client,
                manager: OnceLock::new(),
                batcher: Mutex::new(None),
                inflight: AtomicUsize::new(0),
            },
            display,
        })
    }

    fn manager(
        &self,
        client: &redis::Client,
        cell: &OnceLock<ConnectionManager>,
    ) -> Result<ConnectionManager, Error> {
        if let Some(manager) = cell.get() {
            return Ok(manager.clone());
        }
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
        let manager =
            ConnectionManager::new_lazy_with_config(client.clone(), config).map_err(|e| {
                Error::Config(format!(
                    "cannot set up the Redis client for {}: {e}",
                    self.display
                ))
            })?;
        Ok(cell.get_or_init(|| manager).clone())
    }

    /// A store for a Redis Cluster reached through any of `urls`; connects on first use.
    pub(crate) fn cluster(urls: &[String]) -> Result<RedisStore, Error> {
        ensure_crypto_provider();
        let display = format!(
            "cluster [{}]",
            urls.iter()
                .map(|u| redact(u))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let client = ClusterClient::builder(urls.iter().map(String::as_str))
            .connection_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|e| Error::Config(format!("invalid Redis Cluster nodes {display}: {e}")))?;
        Ok(RedisStore {
            conn: Conn::Cluster {
                client: Box::new(client),
                conn: OnceCell::new(),
                nodes: Arc::new(NodeMap::new()),
            },
            display,
        })
    }

    /// Runs the script: `Ok((allowed, buckets))`, or the Redis error.
    pub(crate) async fn check(
        &self,
        breaker: &Arc<Breaker>,
        keys: &[String],
        params: &[Params],
        at: Option<u64>,
        out: &mut Vec<Bucket>,
    ) -> Result<bool, Error> {
        // EVALSHA <sha> <n> KEYS... now (interval tolerance increment)...
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(GCRA_SCRIPT.get_hash()).arg(keys.len());
        for key in keys {
            cmd.arg(key.as_str());
        }
        match at {
            Some(now) => cmd.arg(now),
            None => cmd.arg(""),
        };
        for p in params {
            cmd.arg(p.interval).arg(p.tolerance).arg(p.increment);
        }
        let reply: Vec<i64> = match &self.conn {
            Conn::Single {
                client,
                manager,
                batcher,
                inflight,
            } => {
                let conn = self.manager(client, manager)?;
                let flight = InFlight::enter(inflight);
                if flight.alone {
                    direct(&cmd, conn).await?
                } else {
                    batched(cmd, conn, batcher).await?
                }
            }
            Conn::Cluster {
                client,
                conn,
                nodes,
                ..
            } => {
                let conn = conn
                    .get_or_try_init(|| client.get_async_connection())
                    .await?;
                if nodes.refreshed.load(Ordering::Relaxed) == 0 {
                    self.refresh_nodes(breaker);
                }
                // The cluster client routes by the first key; `SCRIPT LOAD` goes to every
                // master, so a node that never saw the script recovers too.
                direct(&cmd, conn.clone()).await?
            }
        };
        parse_reply(&reply, keys.len(), out)
    }

    /// The breaker circuit of a client key's hash slot: its master's on a cluster, else 0.
    pub(crate) fn circuit(&self, slot: usize) -> usize {
        match &self.conn {
            Conn::Single { .. } => 0,
            Conn::Cluster { nodes, .. } => nodes
                .slots
                .get(slot)
                .map_or(0, |n| usize::from(n.load(Ordering::Relaxed))),
        }
    }

    /// On a cluster, re-reads which master serves which slot, in the background (at most
    /// once a second). Called after connecting and after failures.
    pub(crate) fn refresh_nodes(&self, breaker: &Arc<Breaker>) {
        let Conn::Cluster { conn, nodes, .. } = &self.conn else {
            return;
        };
        let Some(conn) = conn.get() else {
            return;
        };
        if !nodes.due() {
            return;
        }
        let mut conn = conn.clone();
        let map = Arc::clone(nodes);
        let breaker = Arc::clone(breaker);
        tokio::spawn(async move {
            let cmd = redis::cmd("CLUSTER").arg("SLOTS").clone();
            let reply = cmd.query_async::<redis::Value>(&mut conn);
            if let Ok(Ok(reply)) = tokio::time::timeout(Duration::from_secs(2), reply).await {
                for orphan in map.apply(&reply) {
                    breaker.forget(orphan);
                }
            }
        });
    }

    /// Sends `PING`.
    pub(crate) async fn ping(&self) -> Result<(), Error> {
        let cmd = redis::cmd("PING");
        match &self.conn {
            Conn::Single {
                client, manager, ..
            } => {
                cmd.query_async::<String>(&mut self.manager(client, manager)?)
                    .await?;
            }
            Conn::Cluster { client, conn, .. } => {
                let conn = conn
                    .get_or_try_init(|| client.get_async_connection())
                    .await?;
                cmd.query_async::<String>(&mut conn.clone()).await?;
            }
        }
        Ok(())
    }
}

/// `rediss://` needs a process-wide rustls crypto provider; install ring's unless the
/// application chose one already (then `install_default` fails harmlessly).
fn ensure_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// One check on the connection itself, reloading the script after `NOSCRIPT`.
async fn direct<C: redis::aio::ConnectionLike>(
    cmd: &redis::Cmd,
    mut conn: C,
) -> Result<Vec<i64>, Error> {
    match cmd.query_async::<Vec<i64>>(&mut conn).await {
        Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
            GCRA_SCRIPT.load_async(&mut conn).await?;
            Ok(cmd.query_async::<Vec<i64>>(&mut conn).await?)
        }
        other => Ok(other?),
    }
}

/// One check through the batch task. The task lives on the runtime that first used this
/// limiter; if that runtime is gone (tests, or an application that restarts its runtime),
/// another starts on the current one.
async fn batched(
    cmd: redis::Cmd,
    conn: ConnectionManager,
    batcher: &Mutex<Option<mpsc::UnboundedSender<Job>>>,
) -> Result<Vec<i64>, Error> {
    let (reply, answer) = oneshot::channel();
    let mut job = Job { cmd, reply };
    for _ in 0..2 {
        let sender = {
            let mut slot = batcher.lock().unwrap_or_else(PoisonError::into_inner);
            match slot.as_ref().filter(|tx| !tx.is_closed()) {
                Some(tx) => tx.clone(),
                None => {
                    let (tx, rx) = mpsc::unbounded_channel();
                    tokio::spawn(run_batches(rx, conn.clone()));
                    *slot = Some(tx.clone());
                    tx
                }
            }
        };
        match sender.send(job) {
            Ok(()) => break,
            Err(mpsc::error::SendError(back)) => job = back,
        }
    }
    answer
        .await
        .map_err(|_| Error::Protocol("the batch task ended before answering".to_owned()))?
}

/// Counts a check in flight for as long as it lives (also when its caller gives up).
struct InFlight<'a> {
    counter: &'a AtomicUsize,
    /// No other check was in flight when this one started.
    alone: bool,
}

impl<'a> InFlight<'a> {
    fn enter(counter: &'a AtomicUsize) -> InFlight<'a> {
        let alone = counter.fetch_add(1, Ordering::AcqRel) == 0;
        InFlight { counter, alone }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One check waiting for the batch task: its `EVALSHA` and where to send Redis' answer.
struct Job {
    cmd: redis::Cmd,
    reply: oneshot::Sender<Result<Vec<i64>, Error>>,
}

/// Most checks sent in one pipeline.
const MAX_BATCH: usize = 256;

/// Sends concurrent checks to Redis as pipelines: one write (and one read on Redis' side) for
/// all the checks queued while the task yielded once, instead of one per check. A pipeline
/// is in flight on its own task, so the next batch forms while Redis answers this one.
async fn run_batches(mut jobs: mpsc::UnboundedReceiver<Job>, conn: ConnectionManager) {
    while let Some(first) = jobs.recv().await {
        // Let the handlers that are ready now queue their checks too.
        tokio::task::yield_now().await;
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        tokio::spawn(send_batch(batch, conn.clone()));
    }
}

async fn send_batch(batch: Vec<Job>, mut conn: ConnectionManager) {
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    let mut replies = Vec::with_capacity(batch.len());
    for Job { cmd, reply } in batch {
        pipe.add_command(cmd);
        replies.push(reply);
    }
    let results: Vec<redis::RedisResult<Vec<i64>>> = match pipe.query_async(&mut conn).await {
        Ok(results) => results,
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(Error::Redis(e.clone())));
            }
            return;
        }
    };
    let mut reloaded = false;
    for ((result, reply), cmd) in results.into_iter().zip(replies).zip(pipe.cmd_iter()) {
        let answer = match result {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                // A flushed script cache (restart, failover, SCRIPT FLUSH): load the script
                // once for the batch, then run this check again.
                if !reloaded {
                    reloaded = GCRA_SCRIPT.load_async(&mut conn).await.is_ok();
                }
                cmd.query_async::<Vec<i64>>(&mut conn)
                    .await
                    .map_err(Error::Redis)
            }
            other => other.map_err(Error::Redis),
        };
        let _ = reply.send(answer);
    }
}

fn parse_reply(reply: &[i64], n: usize, out: &mut Vec<Bucket>) -> Result<bool, Error> {
    if reply.len() != 1 + 3 * n {
        return Err(Error::Protocol(format!(
            "the rate-limit script returned {} values for {n} keys",
            reply.len()
        )));
    }
    out.clear();
    let nonneg = |v: i64| u64::try_from(v).unwrap_or(0);
    for chunk in reply[1..].chunks_exact(3) {
        out.push(Bucket {
            remaining: nonneg(chunk[0]),
            retry_after: nonneg(chunk[1]),
            reset_after: nonneg(chunk[2]),
        });
    }
    Ok(reply[0] == 1)
}

/// `redis://user:secret@host/` -> `redis://user:***@host/`: URLs in logs never carry secrets.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or("", |(user, _)| user);
            format!("{scheme}://{user}:***@{host}{path}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_slots_map_each_slot_to_its_master() {
        use redis::Value::{Array, BulkString, Int};
        let master = |port: i64| {
            Array(vec![
                BulkString(b"127.0.0.1".to_vec()),
                Int(port),
                BulkString(b"id".to_vec()),
            ])
        };
        let reply = Array(vec![
            Array(vec![Int(0), Int(5460), master(7000), master(7003)]),
            Array(vec![Int(5461), Int(10922), master(7001)]),
            Array(vec![Int(10923), Int(16383), master(7002)]),
        ]);
        let map = NodeMap::new();
        assert!(map.apply(&reply).is_empty());
        let circuit = |slot: usize| map.slots[slot].load(Ordering::Relaxed);
        assert_eq!(circuit(0), circuit(5460));
        assert_ne!(circuit(5460), circuit(5461));
        assert_eq!(circuit(5461), circuit(10922));
        assert_ne!(circuit(10922), circuit(10923));
        assert_ne!(circuit(0), circuit(16383));
        // A failover moves slots to another master: the map follows.
        let orphans = map.apply(&Array(vec![Array(vec![Int(0), Int(5460), master(7003)])]));
        assert_eq!(
            orphans.len(),
            1,
            "the replaced master's circuit has no slot left"
        );
        assert_ne!(circuit(0), circuit(5461));
        assert_ne!(circuit(0), circuit(16383));
        assert_eq!(map.addresses.lock().map(|a| a.len()).unwrap_or(0), 4);
    }

    #[test]
    fn passwords_never_reach_logs() {
        assert_eq!(
            redact("redis://:hunter2@10.0.0.1:6379/0"),
            "redis://:***@10.0.0.1:6379/0"
        );
        assert_eq!(redact("rediss://app:p@ss@host/"), "rediss://app:***@host/");
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }
}
