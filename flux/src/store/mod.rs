//! The store: where buckets and concurrency slots live, behind one seam ([`Store`]) so that
//! the layers above never ask which store they talk to.
//!
//! - `memory`: per-process buckets and slots (the in-memory backend, and the `Local`
//!   failure policy's fallback); its calls cannot fail.
//! - `redis`: one Redis or a Cluster; calls may fail or miss their deadline. The breaker, the
//!   failure policy and the fleet's share wrap it in the limiter, which asks this seam only
//!   which circuit a call belongs to.
//!
//! A third store (a test double, a server's native command) is one more folder here and one
//! more arm in each method of [`Store`]. The store uses the model and the outage types
//! (the breaker's circuits, the fleet), never the layers above.

pub(crate) mod memory;
pub(crate) mod redis;
mod slots;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use metrics::SharedString;

use self::memory::MemoryStore;
use self::redis::RedisStore;
use crate::error::Error;
use crate::model::gcra::{Bucket, Params};
use crate::model::key::{AtRest, Key};
use crate::outage::fleet::Fleet;

/// An operation on a slot set (see `lua/concurrency.lua`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SlotOp {
    Acquire { max: u32 },
    Renew,
    Release,
}

/// The store a limiter decides with.
pub(crate) enum Store {
    /// This process' buckets: limits hold per process.
    Memory(MemoryStore),
    /// Redis: limits hold across every instance sharing it.
    Redis(Box<RedisStore>),
}

impl Store {
    /// Whether calls can fail (a remote store): only then do the breaker, the failure policy
    /// and the hot-key caches apply.
    pub(crate) fn is_remote(&self) -> bool {
        !matches!(self, Store::Memory(_))
    }

    /// `"memory"`, `"redis"` or `"redis_cluster"` (the `backend` of `Health`).
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Store::Memory(_) => "memory",
            Store::Redis(redis) if redis.is_cluster() => "redis_cluster",
            Store::Redis(_) => "redis",
        }
    }

    /// The store in words, for logs: `in-memory (limits per process)` or the Redis URL
    /// without its password.
    pub(crate) fn describe(&self) -> String {
        match self {
            Store::Memory(_) => "in-memory (limits per process)".to_owned(),
            Store::Redis(redis) => format!("Redis at {}", redis.display()),
        }
    }

    /// How this store keeps client keys: the Redis store as keyed digests (unless configured
    /// clear), the in-memory store as they are (they never leave the process).
    pub(crate) fn at_rest(&self) -> &AtRest {
        match self {
            Store::Memory(_) => &AtRest::Clear,
            Store::Redis(redis) => redis.at_rest(),
        }
    }

    /// `key` as this store keeps it: every bucket, slot set and per-key override of a client
    /// is found under this form.
    pub(crate) fn stored_key(&self, key: Key) -> Key {
        self.at_rest().apply(key)
    }

    /// [`stored_key`](Self::stored_key) of a borrowed key, cloned only when it changes.
    pub(crate) fn stored_key_ref<'k>(&self, key: &'k Key) -> Cow<'k, Key> {
        match self.at_rest() {
            AtRest::Clear => Cow::Borrowed(key),
            at_rest => Cow::Owned(at_rest.apply(key.clone())),
        }
    }

    /// Decides a check of `buckets` (one per limit, with their `params`) for `key`, taking
    /// up to `want` checks at once (a lease; 1 for a plain check), at `at` µs when given
    /// (tests) instead of the store's clock: `Ok(taken)`, 0 for a denial, with each
    /// bucket's state in `out`.
    pub(crate) async fn check(
        &self,
        key: &Key,
        buckets: &[String],
        params: &[Params],
        want: u64,
        at: Option<u64>,
        out: &mut Vec<Bucket>,
    ) -> Result<u64, Error> {
        match self {
            Store::Memory(memory) => Ok(u64::from(memory.check(key, buckets, params, at, out))),
            Store::Redis(redis) => redis.check(buckets, params, want, at, out).await,
        }
    }

    /// The store's clock (µs) and each bucket's stored `tat`, changing nothing.
    pub(crate) async fn read(
        &self,
        key: &Key,
        buckets: &[String],
    ) -> Result<(u64, Vec<Option<u64>>), Error> {
        match self {
            Store::Memory(memory) => Ok(memory.read(key, buckets)),
            Store::Redis(redis) => redis.read_buckets(buckets).await,
        }
    }

    /// Runs `op` on the slot set `storage` for slot `id` under `lease`: whether it succeeded,
    /// and (for an acquisition) the slots held then.
    pub(crate) async fn slot(
        &self,
        storage: &str,
        id: u64,
        op: SlotOp,
        lease: Duration,
    ) -> Result<(bool, u32), Error> {
        match self {
            Store::Memory(memory) => Ok(memory.slot(storage, id, op, lease)),
            Store::Redis(redis) => redis.slots(storage, id, op, lease).await,
        }
    }

    /// Asks the store to answer (Redis: `PING`).
    pub(crate) async fn ping(&self) -> Result<(), Error> {
        match self {
            Store::Memory(_) => Ok(()),
            Store::Redis(redis) => redis.ping().await,
        }
    }

    /// The breaker circuit of calls for a client key in hash slot `slot`.
    pub(crate) fn circuit(&self, slot: usize) -> usize {
        match self {
            Store::Memory(_) => 0,
            Store::Redis(redis) => redis.circuit(slot),
        }
    }

    /// The `circuit` label of a breaker circuit.
    pub(crate) fn circuit_name(&self, index: usize) -> SharedString {
        match self {
            Store::Memory(_) => SharedString::const_str("memory"),
            Store::Redis(redis) => redis.circuit_name(index),
        }
    }

    /// Called after a failed call (a cluster reads its slot map again).
    pub(crate) fn after_failure(&self) {
        if let Store::Redis(redis) = self {
            redis.after_failure();
        }
    }

    /// Keeps `fleet` counted: a remote store announces the instance (a heartbeat task,
    /// started once); the in-memory one has no fleet.
    pub(crate) fn ensure_heartbeat(&self, fleet: &Arc<Fleet>, prefix: &str) {
        if let Store::Redis(redis) = self {
            redis.ensure_heartbeat(fleet, prefix);
        }
    }

    /// The Redis store, for what only Redis holds (overrides, the registry of limits).
    pub(crate) fn redis(&self) -> Option<&RedisStore> {
        match self {
            Store::Redis(redis) => Some(redis),
            Store::Memory(_) => None,
        }
    }
}
