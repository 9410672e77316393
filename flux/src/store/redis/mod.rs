//! The Redis store: atomic Lua calls on a multiplexed connection (one Redis, or a Cluster),
//! each within the store's deadline. The breaker and the failure policy are the limiter's:
//! this store says which circuit a key's calls belong to and how it names it.
//!
//! `scripts` holds the Lua scripts and what the store knows of Redis' script cache; `batch`
//! decides concurrent checks on a single connection in one script call; `nodes` maps a
//! cluster's hash slots to masters (one breaker circuit each); `fleet` is the heartbeat that
//! counts the instances sharing this Redis; `admin` holds the calls off the requests' path
//! (hashes, messages, reading buckets).

pub(crate) mod admin;
mod batch;
mod fleet;
mod link;
mod nodes;
mod redact;
mod scripts;

use std::hash::BuildHasher;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::IntoConnectionInfo;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use tokio::sync::OnceCell;

pub(crate) use self::admin::Messages;
pub use self::batch::set_one_call_batches;
use self::batch::{Batcher, Call, Reply};
use self::link::{CONNECT_TIMEOUT, Link};
pub(crate) use self::nodes::NODE_CIRCUITS;
use self::nodes::NodeMap;
use self::redact::redact;
use self::scripts::Cache;
use super::SlotOp;
use crate::error::{BackendError, BackendErrorKind, ConfigOption, Error};
use crate::model::gcra::{Bucket, Params};
use crate::model::key::{AtRest, DEFAULT_KEY_SECRET};
use crate::outage::breaker::Breaker;
use crate::telemetry;
use metrics::SharedString;

pub(crate) struct RedisStore {
    conn: Conn,
    /// Longest a call may take.
    deadline: Duration,
    metrics: telemetry::BackendMetrics,
    /// Whether Redis holds the scripts (single Redis; a cluster reloads on `NOSCRIPT`).
    scripts: Arc<Cache>,
    /// The target with any password removed, for logs and errors.
    display: String,
    /// How client keys appear in key names.
    at_rest: AtRest,
}

enum Conn {
    Single {
        /// The connection, replaced when it fails in a way a new one can cure.
        link: Arc<Link>,
        batcher: Batcher,
    },
    Cluster {
        client: Box<ClusterClient>,
        conn: OnceCell<ClusterConnection>,
        nodes: Arc<NodeMap>,
        /// The limiter's breaker, whose circuits of masters gone from the cluster are
        /// forgotten when the slot map is read again.
        breaker: Arc<Breaker>,
        /// The node URLs given, for subscriptions (each on a connection of its own).
        urls: Vec<String>,
    },
}

impl RedisStore {
    /// A store for one Redis at `url`, whose calls take at most `deadline`; connects
    /// lazily, on first use.
    pub(crate) fn single(url: &str, deadline: Duration) -> Result<RedisStore, Error> {
        ensure_crypto_provider();
        let display = redact(url);
        let invalid = |e: redis::RedisError| {
            Error::config(
                ConfigOption::RedisUrl,
                format!("invalid Redis URL {display}: {e}"),
            )
        };
        let info = url
            .into_connection_info()
            .map_err(invalid)?
            .set_tcp_settings(link::tcp_settings());
        let client = redis::Client::open(info).map_err(invalid)?;
        let conn = Conn::Single {
            link: Arc::new(Link::new(client, deadline, display.clone())),
            batcher: Batcher::new(),
        };
        Ok(RedisStore::new(conn, deadline, display))
    }

    fn new(conn: Conn, deadline: Duration, display: String) -> RedisStore {
        RedisStore {
            conn,
            deadline,
            metrics: telemetry::BackendMetrics::default(),
            scripts: Arc::default(),
            display,
            at_rest: AtRest::digest(DEFAULT_KEY_SECRET),
        }
    }

    /// Stores client keys `at_rest` (a keyed digest by default).
    pub(crate) fn with_keys(mut self, at_rest: AtRest) -> RedisStore {
        self.at_rest = at_rest;
        self
    }

    /// How client keys appear in key names.
    pub(crate) fn at_rest(&self) -> &AtRest {
        &self.at_rest
    }

    /// A store for a Redis Cluster reached through any of `urls`; connects on first use.
    /// Its calls fall into one circuit of `breaker` (made with [`NODE_CIRCUITS`]) per
    /// master: a lost master fails only its own slots.
    pub(crate) fn cluster(
        urls: &[String],
        deadline: Duration,
        breaker: Arc<Breaker>,
    ) -> Result<RedisStore, Error> {
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
            .tcp_settings(link::tcp_settings())
            .build()
            .map_err(|e| {
                Error::config(
                    ConfigOption::RedisCluster,
                    format!("invalid Redis Cluster nodes {display}: {e}"),
                )
            })?;
        let conn = Conn::Cluster {
            client: Box::new(client),
            conn: OnceCell::new(),
            nodes: Arc::new(NodeMap::new()),
            breaker,
            urls: urls.to_vec(),
        };
        Ok(RedisStore::new(conn, deadline, display))
    }

    /// Runs the script within the deadline, taking up to `want` checks at once (a lease; 1
    /// for a plain check): `Ok(taken)`, 0 for a denial, with the buckets in `out`, or the
    /// error (a missed deadline is [`Error::Timeout`]). Records the call's time and errors.
    pub(crate) async fn check(
        &self,
        keys: &[String],
        params: &[Params],
        want: u64,
        at: Option<u64>,
        out: &mut Vec<Bucket>,
    ) -> Result<u64, Error> {
        let call = Call::Check {
            keys: keys.into(),
            params: params.into(),
            want,
            now: at,
        };
        let reply = self.call(call).await?;
        parse_reply(&reply, keys.len(), out)
    }

    /// Runs `op` on the slot set `key` for slot `id` within the deadline: `Ok((ok,
    /// in_flight))` (see `scripts::SLOTS`) or the error. Records the call as `check` does.
    pub(crate) async fn slots(
        &self,
        key: &str,
        id: u64,
        op: SlotOp,
        lease: Duration,
    ) -> Result<(bool, u32), Error> {
        let (name, max) = match op {
            SlotOp::Acquire { max } => ("acquire", max),
            SlotOp::Renew => ("renew", 0),
            SlotOp::Release => ("release", 0),
        };
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(scripts::SLOTS.get_hash())
            .arg(1)
            .arg(key)
            .arg(name)
            .arg(member(id))
            .arg(max)
            .arg(lease.as_millis() as u64);
        match self.call(Call::Slots(cmd)).await?[..] {
            [ok, held] => Ok((ok == 1, u32::try_from(held).unwrap_or(0))),
            ref other => Err(Error::Protocol(format!(
                "the concurrency script returned {} values, not 2",
                other.len()
            ))),
        }
    }

    /// Makes one script call within the deadline, recording its time and errors.
    async fn call(&self, call: Call<'_>) -> Result<Vec<i64>, Error> {
        let started = std::time::Instant::now();
        let generation = self.link().map(|link| link.generation());
        let result = match tokio::time::timeout(self.deadline, self.run(call)).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout(self.deadline)),
        };
        if let (Some(link), Some(generation)) = (self.link(), generation) {
            link.observe(generation, &result);
        }
        telemetry::backend_call(&self.metrics, started.elapsed());
        if let Err(e) = &result {
            telemetry::backend_error(e);
            self.scripts.failed(e);
        }
        result
    }

    async fn run(&self, call: Call<'_>) -> Result<Vec<i64>, Error> {
        match &self.conn {
            Conn::Single { link, batcher } => {
                let (conn, generation) = link.get()?;
                batcher.run(call, conn, generation, &self.scripts).await
            }
            Conn::Cluster {
                client,
                conn,
                nodes,
                ..
            } => {
                let conn = conn
                    .get_or_try_init(|| async {
                        let mut conn = client.get_async_connection().await.map_err(backend)?;
                        // Loaded on every master before the first check, as far as they
                        // answer (a master that does not recovers on `NOSCRIPT`).
                        for id in [scripts::Id::Gcra, scripts::Id::Slots] {
                            let _ = id.script().load_async(&mut conn).await;
                        }
                        Ok::<_, Error>(conn)
                    })
                    .await?;
                if !nodes.is_known() {
                    self.refresh_nodes();
                }
                // The cluster client routes by the first key; `SCRIPT LOAD` goes to every
                // master, so a node that never saw the script recovers too.
                let (id, cmd) = batch::single(&call);
                direct(id.script(), &cmd, conn.clone()).await
            }
        }
    }

    /// The connection of a single Redis (`None` on a cluster, whose client heals its own).
    fn link(&self) -> Option<&Arc<Link>> {
        match &self.conn {
            Conn::Single { link, .. } => Some(link),
            Conn::Cluster { .. } => None,
        }
    }

    /// How many times the connection to a single Redis was replaced (0 on a cluster): a
    /// subscription made before a replacement may be on the server the checks left.
    pub(crate) fn generation(&self) -> u64 {
        self.link().map_or(0, |link| link.generation())
    }

    /// The circuit of the calls for a client key in hash slot `slot` (on a cluster, its
    /// master's).
    pub(crate) fn circuit(&self, slot: usize) -> usize {
        match &self.conn {
            Conn::Single { .. } => 0,
            Conn::Cluster { nodes, .. } => nodes.circuit(slot),
        }
    }

    /// The `circuit` label of a breaker circuit: `redis` for a single Redis, the master's
    /// `host:port` on a cluster.
    pub(crate) fn circuit_name(&self, index: usize) -> SharedString {
        match &self.conn {
            Conn::Single { .. } => SharedString::const_str("redis"),
            Conn::Cluster { nodes, .. } => nodes.address(index).map_or_else(
                || SharedString::from(format!("circuit-{index}")),
                Into::into,
            ),
        }
    }

    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self.conn, Conn::Cluster { .. })
    }

    /// The target with any password removed, for logs and errors.
    pub(crate) fn display(&self) -> &str {
        &self.display
    }

    /// After a failed call: on a cluster, the slot map is read again (a master may have
    /// failed over).
    pub(crate) fn after_failure(&self) {
        self.refresh_nodes();
    }

    /// On a cluster, re-reads which master serves which slot, in the background (at most
    /// once a second), and forgets the breaker circuits of masters that are gone. Called
    /// after connecting and after failures.
    fn refresh_nodes(&self) {
        let Conn::Cluster {
            conn,
            nodes,
            breaker,
            ..
        } = &self.conn
        else {
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
                    if breaker.forget(orphan) {
                        let name = map
                            .address(orphan)
                            .unwrap_or_else(|| format!("circuit-{orphan}"));
                        telemetry::breaker_state(name.into(), false);
                    }
                }
            }
        });
    }

    /// Sends `PING`.
    pub(crate) async fn ping(&self) -> Result<(), Error> {
        self.query::<String>(&redis::cmd("PING")).await.map(drop)
    }

    /// Runs `cmd` on the checks' connection (outside the batch, with no deadline of its own).
    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, Error> {
        match &self.conn {
            Conn::Single { link, .. } => cmd
                .query_async::<T>(&mut link.get()?.0)
                .await
                .map_err(backend),
            Conn::Cluster { client, conn, .. } => {
                let conn = conn
                    .get_or_try_init(|| client.get_async_connection())
                    .await
                    .map_err(backend)?;
                cmd.query_async::<T>(&mut conn.clone())
                    .await
                    .map_err(backend)
            }
        }
    }
}

/// `rediss://` needs a process-wide rustls crypto provider; install ring's unless the
/// application chose one already (then `install_default` fails harmlessly).
fn ensure_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// One `EVALSHA` of `script` on a cluster connection, reloading the script after
/// `NOSCRIPT`. A check that failed inside the script is its error.
async fn direct<C: redis::aio::ConnectionLike>(
    script: &redis::Script,
    cmd: &redis::Cmd,
    mut conn: C,
) -> Result<Vec<i64>, Error> {
    let reply = match cmd.query_async::<redis::Value>(&mut conn).await {
        Err(e) if scripts::is_noscript(&e) => {
            script.load_async(&mut conn).await.map_err(backend)?;
            cmd.query_async::<redis::Value>(&mut conn)
                .await
                .map_err(backend)
        }
        other => other.map_err(backend),
    }?;
    Reply::parse(reply)?.whole()
}

/// The script's answer to one check: checks taken (0: denied; more than 1 only for a lease),
/// and the buckets in `out`.
fn parse_reply(reply: &[i64], n: usize, out: &mut Vec<Bucket>) -> Result<u64, Error> {
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
    Ok(nonneg(reply[0]))
}

/// A Redis client error as Flux's own: its kind, Redis' error code, its message.
pub(super) fn backend(e: redis::RedisError) -> Error {
    let kind = if e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
    {
        BackendErrorKind::Connection
    } else if matches!(
        e.kind(),
        redis::ErrorKind::Server(_) | redis::ErrorKind::Extension
    ) {
        // An error reply, whether the client library knows its code (`NOSCRIPT`) or not
        // (`WRONGTYPE` from inside a script).
        BackendErrorKind::Server
    } else {
        BackendErrorKind::Other
    };
    let code = e.code().map(str::to_owned);
    Error::Backend(BackendError::new(
        kind,
        code,
        e.to_string(),
        Some(Arc::new(e)),
    ))
}

/// This process' part of every slot id, so that instances never share one.
static INSTANCE: LazyLock<u64> =
    LazyLock::new(|| std::hash::RandomState::new().hash_one(std::process::id()));

/// A slot's member in Redis: `<instance>-<counter>`.
fn member(id: u64) -> String {
    format!("{:016x}-{id}", *INSTANCE)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_crate_carries_the_script_of_lua_folder() {
        // gcra.lua here is a link to lua/gcra.lua (which `cargo package` follows): a checkout
        // without symbolic links would hold the link's path instead of the script.
        let script = include_str!("gcra.lua");
        assert!(script.starts_with("-- Flux: token bucket"), "{script}");
        assert!(script.contains("redis.call('TIME')"));
        let slots = include_str!("concurrency.lua");
        assert!(slots.starts_with("-- Flux: concurrency slots"), "{slots}");
        let fleet = include_str!("fleet.lua");
        assert!(fleet.starts_with("-- Flux: fleet heartbeat"), "{fleet}");
    }
}
