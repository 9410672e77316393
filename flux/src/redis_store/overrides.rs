//! Redis' side of limits at runtime: the overrides hash and its channel, the registry of
//! declared limits, and reading buckets without charging them (`peek`).
//!
//! | Redis name | type | content |
//! |---|---|---|
//! | `<prefix>:overrides` | hash | field `NAME` or `NAME@KEY`, value `RATE [burst=N] [until=UNIX_MS]` or `off [until=..]` |
//! | `<prefix>:overrides` | pub/sub channel | any message: "read the hash again" |
//! | `<prefix>:limits` | hash | field `NAME`, value `RATE burst=N cost=N` |
//!
//! Each is one key, so it lives on one node of a Redis Cluster; a message published on any
//! node of a cluster reaches the subscribers of every node.
//!
//! Every instance runs one background task ([`watch`]) that subscribes to the channel,
//! reads the hash on each message and at least once a second (which also ends expired
//! overrides, picks up hand-written entries and covers a lost subscription), and writes the
//! limits the instance registered. Checks never wait for any of it.

use std::sync::{Arc, LazyLock, Weak};
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt;
use redis::FromRedisValue;
use redis::aio::PubSubStream;

use super::{Conn, RedisStore, direct};
use crate::Error;
use crate::limiter::{Backend, Inner};
use crate::overrides::{Override, Overrides};

/// Longest an operator's or the background task's call may take: these are off the
/// requests' path, so they get more than a check's deadline.
const ADMIN_DEADLINE: Duration = Duration::from_secs(2);

/// How often the overrides are read again without being told.
const REREAD: Duration = Duration::from_secs(1);

/// How often every registered limit is written again (Redis may have lost them).
const REREGISTER: Duration = Duration::from_secs(30);

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

/// The hash of overrides, also the name of the channel announcing changes.
pub(crate) fn overrides_key(prefix: &str) -> String {
    format!("{prefix}:overrides")
}

/// The hash of registered limits.
pub(crate) fn limits_key(prefix: &str) -> String {
    format!("{prefix}:limits")
}

impl RedisStore {
    /// Runs `cmd` within [`ADMIN_DEADLINE`], outside the breaker and the check metrics.
    async fn admin<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, Error> {
        let call = async {
            match &self.conn {
                Conn::Single {
                    client, manager, ..
                } => Ok(cmd
                    .query_async::<T>(&mut self.manager(client, manager)?)
                    .await?),
                Conn::Cluster { client, conn, .. } => {
                    let conn = conn
                        .get_or_try_init(|| client.get_async_connection())
                        .await?;
                    Ok(cmd.query_async::<T>(&mut conn.clone()).await?)
                }
            }
        };
        let result = tokio::time::timeout(ADMIN_DEADLINE, call)
            .await
            .map_err(|_| Error::Timeout(ADMIN_DEADLINE))
            .and_then(|r| r);
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

    /// Stores `o` and tells every instance.
    pub(crate) async fn set_override(&self, prefix: &str, o: &Override) -> Result<(), Error> {
        let key = overrides_key(prefix);
        self.admin::<()>(redis::cmd("HSET").arg(&key).arg(o.field()).arg(o.value()))
            .await?;
        self.announce(&key).await
    }

    /// Removes the override stored as `field` and tells every instance; false if there was
    /// none.
    pub(crate) async fn clear_override(&self, prefix: &str, field: &str) -> Result<bool, Error> {
        let key = overrides_key(prefix);
        let removed: u64 = self.admin(redis::cmd("HDEL").arg(&key).arg(field)).await?;
        self.announce(&key).await?;
        Ok(removed > 0)
    }

    async fn announce(&self, channel: &str) -> Result<(), Error> {
        self.admin::<()>(redis::cmd("PUBLISH").arg(channel).arg("changed"))
            .await
    }

    /// Writes registered limits (`name`, stored form).
    pub(crate) async fn register(
        &self,
        prefix: &str,
        entries: &[(String, String)],
    ) -> Result<(), Error> {
        let mut cmd = redis::cmd("HSET");
        cmd.arg(limits_key(prefix));
        for (name, value) in entries {
            cmd.arg(name).arg(value);
        }
        self.admin::<()>(&cmd).await
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
                Conn::Single {
                    client, manager, ..
                } => direct(&PEEK_SCRIPT, &cmd, self.manager(client, manager)?).await,
                Conn::Cluster { client, conn, .. } => {
                    let conn = conn
                        .get_or_try_init(|| client.get_async_connection())
                        .await?;
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
    async fn subscribe(&self, channel: &str) -> Result<PubSubStream, Error> {
        let clients = match &self.conn {
            Conn::Single { client, .. } => vec![client.clone()],
            Conn::Cluster { urls, .. } => urls
                .iter()
                .filter_map(|u| redis::Client::open(u.as_str()).ok())
                .collect(),
        };
        let mut last = Error::Config("no Redis node to subscribe to".to_owned());
        for client in clients {
            let attempt = async {
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe(channel).await?;
                Ok::<_, Error>(pubsub.into_on_message())
            };
            match tokio::time::timeout(ADMIN_DEADLINE, attempt).await {
                Ok(Ok(stream)) => return Ok(stream),
                Ok(Err(e)) => last = e,
                Err(_) => last = Error::Timeout(ADMIN_DEADLINE),
            }
        }
        Err(last)
    }

    /// The overrides stored now, as a table for `overrides` (malformed ones reported).
    pub(crate) async fn read_overrides(
        &self,
        prefix: &str,
        overrides: &Overrides,
    ) -> Result<crate::overrides::Table, Error> {
        let key = overrides_key(prefix);
        let entries = self.hash(&key).await?;
        let source = format!("Redis hash {key}");
        Ok(overrides.load(
            &source,
            entries.iter().map(|(f, v)| (f.as_str(), v.as_str())),
        ))
    }
}

/// Keeps a limiter's overrides current and writes its registered limits, for as long as
/// the limiter lives (see the module docs).
pub(crate) async fn watch(limiter: Weak<Inner>, overrides: Arc<Overrides>) {
    let mut messages: Option<PubSubStream> = None;
    let mut registered_all: Option<Instant> = None;
    let mut failing = false;
    loop {
        {
            let Some(inner) = limiter.upgrade() else {
                return;
            };
            let Backend::Redis(redis) = &inner.backend else {
                return;
            };
            if messages.is_none() {
                // Subscribe before reading, so that no change falls between the two.
                messages = redis.subscribe(&overrides_key(&inner.prefix)).await.ok();
            }
            match redis.read_overrides(&inner.prefix, &overrides).await {
                Ok(table) => {
                    // Denials remembered under the old limits would outlast the change.
                    if overrides.replace(table)
                        && let Some(cache) = &inner.deny_cache
                    {
                        cache.clear();
                    }
                    if std::mem::take(&mut failing) {
                        tracing::info!(target: "flux", "overrides read from Redis again");
                    }
                }
                Err(e) => {
                    // The overrides in force stay: an outage changes no limit.
                    if !std::mem::replace(&mut failing, true) {
                        tracing::warn!(target: "flux", "cannot read the overrides from Redis ({e}); keeping those in force");
                    }
                }
            }
            let all = registered_all.is_none_or(|at| at.elapsed() >= REREGISTER);
            let entries = overrides.registry.take(all);
            if !entries.is_empty() {
                match redis.register(&inner.prefix, &entries).await {
                    Ok(()) if all => registered_all = Some(Instant::now()),
                    Ok(()) => {}
                    Err(_) => overrides.registry.retry(entries),
                }
            }
        }
        tokio::select! {
            more = next(&mut messages) => if !more { messages = None },
            () = tokio::time::sleep(REREAD) => {}
            () = overrides.registry.wake.notified() => {}
        }
    }
}

/// Waits for the next message: false when the subscription ended.
async fn next(messages: &mut Option<PubSubStream>) -> bool {
    match messages {
        Some(stream) => stream.next().await.is_some(),
        None => std::future::pending().await,
    }
}

/// Whether `at` is past, for listing stored overrides.
pub(crate) fn expired(o: &Override) -> bool {
    o.expires.is_some_and(|at| at <= SystemTime::now())
}
