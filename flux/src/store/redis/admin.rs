//! The store's calls off the requests' path: reading and writing hashes, messages between
//! instances, and reading buckets without charging them. They get more time than a check
//! ([`ADMIN_DEADLINE`]) and stay outside the breaker and the check metrics; what they store
//! is the business of the layers above (the overrides, the registry of limits).

use std::sync::LazyLock;
use std::time::Duration;

use futures_util::Stream;
use redis::{FromRedisValue, IntoConnectionInfo};

use super::{Conn, RedisStore, backend, direct};
use crate::error::{ConfigOption, Error};

/// Longest an operator's or a background task's call may take: these are off the
/// requests' path, so they get more than a check's deadline.
pub(crate) const ADMIN_DEADLINE: Duration = Duration::from_secs(2);

/// Reads buckets without writing: KEYS are bucket keys; returns `[seconds, microseconds]`
/// of the server clock (`TIME`), then each key's stored `tat` (µs), or -1 when absent.
static PEEK_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        "local t = redis.call('TIME')\n\
         local out = {tonumber(t[1]), tonumber(t[2])}\n\
         for i = 1, #KEYS do out[i + 2] = tonumber(redis.call('GET', KEYS[i])) or -1 end\n\
         return out",
    )
});

/// Sets fields of a hash and the hash's time to live, atomically: nothing Flux writes
/// outlives its writers for good. Sent whole with `EVAL` (off the requests' path, rare: no
/// script cache to keep).
///
/// KEYS[1]: the hash. ARGV[1]: the time to live in ms; then field, value, field, value...
/// (none: the time to live is renewed only, if the hash exists). Returns 0.
const HASH_SET_SCRIPT: &str = "\
    for i = 2, #ARGV - 1, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end\n\
    redis.call('PEXPIRE', KEYS[1], ARGV[1])\n\
    return 0";

/// Changes fields of a hash only where they still hold what was read: an entry that
/// another instance rewrote meanwhile stays as that instance wrote it. Sent whole with
/// `EVAL`, as [`HASH_SET_SCRIPT`].
///
/// KEYS[1]: the hash. ARGV: field, value read, new value ("": delete the field), repeated.
/// Returns 0.
const HASH_REPLACE_SCRIPT: &str = "\
    for i = 1, #ARGV - 2, 3 do\n\
      if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then\n\
        if ARGV[i + 2] == '' then redis.call('HDEL', KEYS[1], ARGV[i])\n\
        else redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 2]) end\n\
      end\n\
    end\n\
    return 0";

/// A stream of the messages of a subscription: one item per message.
pub(crate) type Messages = std::pin::Pin<Box<dyn Stream<Item = ()> + Send>>;

impl RedisStore {
    /// Runs `cmd` within [`ADMIN_DEADLINE`], outside the breaker and the check metrics.
    async fn admin<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, Error> {
        let generation = self.generation();
        let call = self.query::<T>(cmd);
        let result = tokio::time::timeout(ADMIN_DEADLINE, call)
            .await
            .map_err(|_| Error::Timeout(ADMIN_DEADLINE))
            .and_then(|r| r);
        // They heal the connection as checks do (a watcher reading from a demoted primary).
        if let Some(link) = self.link() {
            link.observe(generation, &result);
        }
        // These calls share the checks' connection: a lost one puts the scripts in doubt as
        // a failed check does.
        if let Err(e) = &result {
            self.scripts.failed(e);
        }
        result
    }

    /// Every field and value of the hash `key`.
    pub(crate) async fn hash(&self, key: &str) -> Result<Vec<(String, String)>, Error> {
        self.admin(redis::cmd("HGETALL").arg(key)).await
    }

    /// Sets fields of the hash `key` (none: only renews its expiry), which then expires
    /// `ttl` from now unless written again: every hash Flux writes has an expiry.
    pub(crate) async fn hash_set(
        &self,
        key: &str,
        entries: &[(String, String)],
        ttl: Duration,
    ) -> Result<(), Error> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(HASH_SET_SCRIPT).arg(1).arg(key);
        cmd.arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1));
        for (field, value) in entries {
            cmd.arg(field).arg(value);
        }
        self.admin::<()>(&cmd).await
    }

    /// For each `(field, read, new)`: if `field` of the hash `key` still holds `read`, sets
    /// it to `new`, or deletes it when `new` is `None`. One atomic call.
    pub(crate) async fn hash_replace(
        &self,
        key: &str,
        changes: &[(String, String, Option<String>)],
    ) -> Result<(), Error> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(HASH_REPLACE_SCRIPT).arg(1).arg(key);
        for (field, read, new) in changes {
            cmd.arg(field).arg(read).arg(new.as_deref().unwrap_or(""));
        }
        self.admin::<()>(&cmd).await
    }

    /// Removes `field` of the hash `key`: whether it was there.
    pub(crate) async fn hash_delete(&self, key: &str, field: &str) -> Result<bool, Error> {
        let removed: u64 = self.admin(redis::cmd("HDEL").arg(key).arg(field)).await?;
        Ok(removed > 0)
    }

    /// Publishes `message` on `channel`.
    pub(crate) async fn publish(&self, channel: &str, message: &str) -> Result<(), Error> {
        self.admin::<()>(redis::cmd("PUBLISH").arg(channel).arg(message))
            .await
    }

    /// The server's clock (µs) and each bucket's stored `tat`, in one atomic read.
    pub(crate) async fn read_buckets(
        &self,
        keys: &[String],
    ) -> Result<(u64, Vec<Option<u64>>), Error> {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(PEEK_SCRIPT.get_hash()).arg(keys.len());
        for key in keys {
            cmd.arg(key.as_str());
        }
        let call = async {
            match &self.conn {
                Conn::Single { link, .. } => direct(&PEEK_SCRIPT, &cmd, link.get()?.0).await,
                Conn::Cluster { client, conn, .. } => {
                    let conn = conn
                        .get_or_try_init(|| client.get_async_connection())
                        .await
                        .map_err(backend)?;
                    direct(&PEEK_SCRIPT, &cmd, conn.clone()).await
                }
            }
        };
        let reply = tokio::time::timeout(ADMIN_DEADLINE, call)
            .await
            .map_err(|_| Error::Timeout(ADMIN_DEADLINE))
            .and_then(|r| r);
        if let Err(e) = &reply {
            self.scripts.failed(e);
        }
        let reply = reply?;
        let [secs, micros, tats @ ..] = &reply[..] else {
            return Err(Error::Protocol(
                "the peek script returned no time".to_owned(),
            ));
        };
        if tats.len() != keys.len() {
            return Err(Error::Protocol(format!(
                "the peek script returned {} values for {} keys",
                tats.len(),
                keys.len()
            )));
        }
        let now =
            u64::try_from(*secs).unwrap_or(0) * 1_000_000 + u64::try_from(*micros).unwrap_or(0);
        Ok((now, tats.iter().map(|&t| u64::try_from(t).ok()).collect()))
    }

    /// A subscription to `channel` on its own connection (on a cluster, the first node
    /// that answers).
    pub(crate) async fn subscribe(&self, channel: &str) -> Result<Messages, Error> {
        use futures_util::StreamExt;
        let clients = match &self.conn {
            Conn::Single { link, .. } => vec![link.client().clone()],
            Conn::Cluster { urls, .. } => urls
                .iter()
                .filter_map(|u| {
                    let info = u.as_str().into_connection_info().ok()?;
                    redis::Client::open(info.set_tcp_settings(super::link::tcp_settings())).ok()
                })
                .collect(),
        };
        let mut last = Error::config(ConfigOption::RedisCluster, "no Redis node to subscribe to");
        for client in clients {
            let attempt = async {
                let mut pubsub = client.get_async_pubsub().await.map_err(backend)?;
                pubsub.subscribe(channel).await.map_err(backend)?;
                Ok::<_, Error>(pubsub.into_on_message())
            };
            match tokio::time::timeout(ADMIN_DEADLINE, attempt).await {
                Ok(Ok(stream)) => return Ok(Box::pin(stream.map(drop))),
                Ok(Err(e)) => last = e,
                Err(_) => last = Error::Timeout(ADMIN_DEADLINE),
            }
        }
        Err(last)
    }
}
