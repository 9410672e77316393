//! The overrides' Redis side: the overrides hash and its channel, the registry's hash, and
//! the background task that keeps an instance current.
//!
//! | Redis name | type | content | expiry |
//! |---|---|---|---|
//! | `<prefix>:overrides` | hash | field `NAME` or `NAME@KEY`, value `RATE [burst=N] [until=UNIX_MS]` or `off [until=..]` | 7 days ([`OVERRIDES_RETENTION`]) after the last set or the last running instance |
//! | `<prefix>:overrides` | pub/sub channel | any message: "read the hash again" | (no key) |
//! | `<prefix>:limits` | hash | field `NAME`, value `RATE burst=N cost=N seen=UNIX_MS` | a day ([`registry::RETENTION`]) after the last running instance; each field a day after the last instance that wrote it |
//!
//! Each is one key, so it lives on one node of a Redis Cluster; a message published on any
//! node of a cluster reaches the subscribers of every node.
//!
//! Every instance runs one background task ([`watch`]) that subscribes to the channel,
//! reads the hash on each message and at least once a second (which also ends expired
//! overrides, picks up hand-written entries and covers a lost subscription), and writes the
//! limits the instance registered. Checks never wait for any of it.
//!
//! A fleet that is gone leaves nothing behind: every [`REREGISTER`] each instance writes its
//! registered limits again (stamped `seen=`), renews both hashes' expiry, and deletes the
//! registry's entries no instance wrote for a day. Once no instance runs, the registry is
//! gone after a day and the overrides after a week (so an operator's override outlives a
//! restart of the whole fleet, or a weekend without one).

use std::sync::Weak;
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt;

use super::{Override, Overrides, Table, registry};
use crate::error::Error;
use crate::store::Store;
use crate::store::redis::{Messages, RedisStore};

/// How often the overrides are read again without being told.
const REREAD: Duration = Duration::from_secs(1);

/// How often every registered limit is written again (Redis may have lost them), the
/// hashes' expiries renewed and the registry cleaned.
const REREGISTER: Duration = Duration::from_secs(30);

/// How long the overrides hash outlives the last set and the last running instance.
pub(crate) const OVERRIDES_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// The hash of overrides, also the name of the channel announcing changes.
pub(crate) fn overrides_key(prefix: &str) -> String {
    format!("{prefix}:overrides")
}

/// The hash of registered limits.
pub(crate) fn limits_key(prefix: &str) -> String {
    format!("{prefix}:limits")
}

/// Stores `o` and tells every instance.
pub(crate) async fn set(redis: &RedisStore, prefix: &str, o: &Override) -> Result<(), Error> {
    let key = overrides_key(prefix);
    redis
        .hash_set(&key, &[(o.field(), o.value())], OVERRIDES_RETENTION)
        .await?;
    redis.publish(&key, "changed").await
}

/// Removes the override stored as `field` and tells every instance; false if there was none.
pub(crate) async fn clear(redis: &RedisStore, prefix: &str, field: &str) -> Result<bool, Error> {
    let key = overrides_key(prefix);
    let removed = redis.hash_delete(&key, field).await?;
    redis.publish(&key, "changed").await?;
    Ok(removed)
}

/// The overrides stored now, as a table (malformed ones reported once).
pub(crate) async fn read(
    redis: &RedisStore,
    prefix: &str,
    overrides: &Overrides,
) -> Result<Table, Error> {
    let key = overrides_key(prefix);
    let mut entries = redis.hash(&key).await?;
    // Per-key fields name the client by its digest; one written in clear (by hand, or
    // before keys were digested) applies to the same client.
    let at_rest = redis.at_rest();
    if at_rest.is_digest() {
        for (field, _) in &mut entries {
            if let Some((limit, client)) = field.split_once('@') {
                *field = super::field(limit, Some(at_rest.stored(client).as_str()));
            }
        }
    }
    let source = format!("Redis hash {key}");
    Ok(overrides.load(
        &source,
        entries.iter().map(|(f, v)| (f.as_str(), v.as_str())),
    ))
}

/// Keeps `overrides` current and writes its registered limits, for as long as the limiter
/// lives (`store` and `overrides` upgrade); `changed` runs when the table in force changed.
pub(crate) async fn watch(
    store: Weak<Store>,
    prefix: String,
    overrides: Weak<Overrides>,
    changed: impl Fn() + Send + Sync + 'static,
) {
    let mut messages: Option<Messages> = None;
    // The store's connection when subscribing: once it is replaced (a failover, a black
    // hole), the subscription may be on the server the checks left, so it is made again.
    let mut subscribed = 0;
    let mut registered_all: Option<Instant> = None;
    let mut failing = false;
    let channel = overrides_key(&prefix);
    loop {
        let wake = {
            let (Some(store), Some(overrides)) = (store.upgrade(), overrides.upgrade()) else {
                return;
            };
            let Some(redis) = store.redis() else {
                return;
            };
            if messages.is_none() || subscribed != redis.generation() {
                // Subscribe before reading, so that no change falls between the two.
                subscribed = redis.generation();
                messages = redis.subscribe(&channel).await.ok();
            }
            match read(redis, &prefix, &overrides).await {
                Ok(table) => {
                    // Denials remembered under the old limits would outlast the change.
                    if overrides.replace(table) {
                        changed();
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
            match register(redis, &prefix, &entries, all).await {
                Ok(()) if all => registered_all = Some(Instant::now()),
                Ok(()) => {}
                Err(_) => overrides.registry.retry(entries),
            }
            overrides.registry.woken()
        };
        tokio::select! {
            more = next(&mut messages) => if !more { messages = None },
            () = tokio::time::sleep(REREAD) => {}
            () = wake.notified() => {}
        }
    }
}

/// Writes `entries` of the registry, stamped with the time (`seen=`), and renews the
/// registry's expiry; with `all` (every [`REREGISTER`]) also renews the overrides' expiry and
/// cleans the registry of entries no running instance wrote for a day.
async fn register(
    redis: &RedisStore,
    prefix: &str,
    entries: &[(String, String)],
    all: bool,
) -> Result<(), Error> {
    let key = limits_key(prefix);
    let now = registry::now_millis();
    if !entries.is_empty() {
        let stamped: Vec<(String, String)> = entries
            .iter()
            .map(|(name, value)| (name.clone(), registry::stamp(value, now)))
            .collect();
        redis.hash_set(&key, &stamped, registry::RETENTION).await?;
    }
    if all {
        redis
            .hash_set(&overrides_key(prefix), &[], OVERRIDES_RETENTION)
            .await?;
        let stale = registry::prune(&redis.hash(&key).await?, now);
        redis.hash_replace(&key, &stale).await?;
    }
    Ok(())
}

/// Waits for the next message: false when the subscription ended.
async fn next(messages: &mut Option<Messages>) -> bool {
    match messages {
        Some(stream) => stream.next().await.is_some(),
        None => std::future::pending().await,
    }
}

/// Whether `o` has expired, for listing stored overrides.
pub(crate) fn expired(o: &Override) -> bool {
    o.expires.is_some_and(|at| at <= SystemTime::now())
}
