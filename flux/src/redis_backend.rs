//! The Redis backend: one atomic Lua call per check, on a multiplexed connection.

use std::sync::{LazyLock, OnceLock};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use tokio::sync::OnceCell;

use crate::Error;
use crate::gcra::{Bucket, Params};

/// The token-bucket script, `lua/gcra.lua`: one per process, loaded with `SCRIPT LOAD` on
/// first use by `invoke_async`, which re-loads it by itself after a `NOSCRIPT` reply (a
/// flushed script cache, a restarted or failed-over Redis).
///
/// KEYS: the bucket keys of one client (one hash tag). ARGV: `now` in µs or `""` (server
/// `TIME`), then per key: emission interval, tolerance, increment (µs). Returns
/// `[allowed, (remaining, retry_after_us, reset_after_us) per key]`.
static GCRA_SCRIPT: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("../../lua/gcra.lua")));

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
    },
    Cluster {
        client: Box<ClusterClient>,
        conn: OnceCell<ClusterConnection>,
    },
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
            // Flux puts its own deadline on every call; the manager must not add retries
            // that outlive it by much. Reconnection starts again on the next failed call.
            .set_response_timeout(None)
            .set_number_of_retries(2)
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
            },
            display,
        })
    }

    /// Runs the script: `Ok((allowed, buckets))`, or the Redis error.
    pub(crate) async fn check(
        &self,
        keys: &[String],
        params: &[Params],
        at: Option<u64>,
        out: &mut Vec<Bucket>,
    ) -> Result<bool, Error> {
        let mut invocation = GCRA_SCRIPT.prepare_invoke();
        for key in keys {
            invocation.key(key.as_str());
        }
        match at {
            Some(now) => invocation.arg(now),
            None => invocation.arg(""),
        };
        for p in params {
            invocation.arg(p.interval).arg(p.tolerance).arg(p.increment);
        }
        let reply: Vec<i64> = match &self.conn {
            Conn::Single { client, manager } => {
                invocation
                    .invoke_async(&mut self.manager(client, manager)?)
                    .await?
            }
            Conn::Cluster { client, conn } => {
                let conn = conn
                    .get_or_try_init(|| client.get_async_connection())
                    .await?;
                invocation.invoke_async(&mut conn.clone()).await?
            }
        };
        parse_reply(&reply, keys.len(), out)
    }

    /// Sends `PING`.
    pub(crate) async fn ping(&self) -> Result<(), Error> {
        let cmd = redis::cmd("PING");
        match &self.conn {
            Conn::Single { client, manager } => {
                cmd.query_async::<String>(&mut self.manager(client, manager)?)
                    .await?;
            }
            Conn::Cluster { client, conn } => {
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
    fn passwords_never_reach_logs() {
        assert_eq!(
            redact("redis://:hunter2@10.0.0.1:6379/0"),
            "redis://:***@10.0.0.1:6379/0"
        );
        assert_eq!(redact("rediss://app:p@ss@host/"), "rediss://app:***@host/");
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }
}
