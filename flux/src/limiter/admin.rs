//! The limiter's calls for operators and for limits at runtime: reading a bucket without
//! charging it ([`Flux::peek`]), registering limits, and setting, clearing and listing
//! overrides (what the `flux` command-line tool calls).

use std::sync::Arc;

use crate::Flux;
use crate::error::{ConfigOption, Error};
use crate::model::decision::{Decision, Source};
use crate::model::gcra;
use crate::model::key::{Key, ToKey};
use crate::model::limit::Limit;
use crate::overrides::{self, Override, field, registry};
use crate::store::redis::RedisStore;

impl Flux {
    /// Starts the background task of this limiter's overrides (Redis' watcher, or the
    /// poller of the `FLUX_OVERRIDES` file). Without a runtime yet, the next check tries.
    /// A change of the overrides in force clears the deny cache: denials remembered under
    /// the old limits would outlast the change.
    pub(crate) fn start_runtime(&self) {
        let inner = &self.inner;
        let cache = inner.deny_cache.as_ref().map(Arc::downgrade);
        let changed = move || {
            if let Some(cache) = cache.as_ref().and_then(std::sync::Weak::upgrade) {
                cache.clear();
            }
        };
        if !overrides::start(&inner.overrides, &inner.store, &inner.prefix, changed) {
            inner.overrides.unclaim_start();
        }
    }

    /// What checking `limits` for `key` would answer now, charging nothing: the same
    /// decision (overrides included), computed from the buckets as stored (on Redis, one
    /// read of the bucket keys and the server clock). `remaining` and `reset_after` are
    /// those after the check the decision describes, so a bucket holds `remaining + cost`
    /// tokens when the decision admits.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), flux::Error> {
    /// use flux::{Flux, Limit, Rate};
    ///
    /// static API: Limit = Limit::new("api", Rate::per_minute::<5>());
    /// let flux = Flux::builder().build()?;
    /// flux.check("alice", &API).await;
    /// let peeked = flux.peek("alice", std::slice::from_ref(&API)).await?;
    /// assert_eq!(peeked.remaining, 3); // 4 left, one more check would leave 3
    /// assert_eq!(flux.peek("alice", std::slice::from_ref(&API)).await?.remaining, 3);
    /// # Ok(()) }
    /// ```
    pub async fn peek(&self, key: impl ToKey, limits: &[Limit]) -> Result<Decision, Error> {
        let key = self.stored_key(key);
        let applied = self.inner.overrides.apply(&key, limits);
        let in_force = applied.as_ref().map_or(limits, |a| &a.limits[..]);
        if in_force.is_empty() {
            return Ok(Decision::unchecked(true, Source::Exempt));
        }
        let buckets: Vec<String> = in_force
            .iter()
            .map(|l| key.bucket(&self.inner.prefix, l.name()))
            .collect();
        let (now, mut tats) = self.inner.store.read(&key, &buckets).await?;
        let params: Vec<_> = in_force.iter().map(Limit::params).collect();
        let mut out = Vec::with_capacity(in_force.len());
        // `tats` is a copy: what the check would store is dropped.
        let allowed = gcra::decide(now, &params, &mut tats, &mut out);
        let mut decision = Decision::summarize(allowed, &out, in_force, Source::Backend);
        if let Some(applied) = &applied {
            decision.index = applied.original(decision.index);
        }
        Ok(decision)
    }

    /// Registers `limits` in Redis (`<prefix>:limits`) so that `flux limits` lists them
    /// before their first check. Checked limits register themselves; this is for those
    /// an operator may want to override before any request used them. Nothing on the
    /// in-memory backend. The write happens in the background.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), flux::Error> {
    /// use flux::{Flux, Limit, Rate};
    ///
    /// static EXPORT: Limit = Limit::new("export", Rate::per_hour::<10>());
    /// let flux = Flux::builder().redis("redis://127.0.0.1:6379/").install()?;
    /// flux.register(std::slice::from_ref(&EXPORT)); // listed by `flux limits` from now on
    /// # Ok(()) }
    /// ```
    pub fn register(&self, limits: &[Limit]) {
        if self.is_redis() {
            if self.inner.overrides.claim_start() {
                self.start_runtime();
            }
            self.inner.overrides.registry.note(limits);
        }
    }

    /// Stores `o` in Redis and announces it: every instance applies it within a second.
    /// An override of the same limit (and key) is replaced. Redis backend only: the
    /// in-memory backend reads its overrides from the `FLUX_OVERRIDES` file. Refused
    /// ([`ConfigOption::Override`]) when the limit's name is empty or contains `@`, or the
    /// override expires more than [`MAX_TTL`](crate::overrides::MAX_TTL) from now.
    pub async fn set_override(&self, o: &Override) -> Result<(), Error> {
        // A name without '@', an expiry within `MAX_TTL` (`ConfigOption::Override`).
        o.check(std::time::SystemTime::now())?;
        let redis = self.redis()?;
        // Stored under the client's digest, as its buckets are.
        let mut stored = o.clone();
        stored.key = o.key.as_deref().map(|k| {
            redis
                .at_rest()
                .apply(Key::from_encoded(k))
                .as_str()
                .to_owned()
        });
        overrides::redis::set(redis, &self.inner.prefix, &stored).await
    }

    /// `key` as Redis holds it: the name under which its buckets, concurrency slots and
    /// per-key overrides are stored. On Redis a keyed digest (see
    /// [`Builder::key_secret`](crate::Builder::key_secret)) unless keys are kept in clear;
    /// on the in-memory backend the key as it is.
    ///
    /// ```
    /// use flux::{Flux, Key};
    ///
    /// let redis = Flux::builder().redis("redis://127.0.0.1:6379/").build()?;
    /// let stored = redis.stored_key("203.0.113.9");
    /// assert_eq!(stored.as_str().len(), 32);
    /// assert!(!stored.as_str().contains("203.0.113.9"));
    /// let memory = Flux::builder().build()?;
    /// assert_eq!(memory.stored_key("203.0.113.9"), Key::new("203.0.113.9"));
    /// # Ok::<(), flux::Error>(())
    /// ```
    pub fn stored_key(&self, key: impl ToKey) -> Key {
        self.inner.store.stored_key(key.to_key())
    }

    /// Removes the override of `limit` (for the client `key` only, if given) and announces
    /// it. Returns whether there was one. Redis backend only.
    ///
    /// `key` is the client key (its digest is what Redis holds), or the digest itself as
    /// [`overrides`](Self::overrides) and `flux limits` list it.
    pub async fn clear_override(&self, limit: &str, key: Option<&str>) -> Result<bool, Error> {
        // `a@b` would be the field of the override of `a` for the key `b`.
        overrides::check_name(limit).map_err(|e| Error::config(ConfigOption::Override, e))?;
        let redis = self.redis()?;
        let Some(key) = key else {
            return overrides::redis::clear(redis, &self.inner.prefix, &field(limit, None)).await;
        };
        let stored = redis.at_rest().apply(Key::new(key));
        let digested = field(limit, Some(stored.as_str()));
        if overrides::redis::clear(redis, &self.inner.prefix, &digested).await? {
            return Ok(true);
        }
        // The digest as listed, or a field written by hand in clear.
        let listed = field(limit, Some(key));
        Ok(listed != digested
            && overrides::redis::clear(redis, &self.inner.prefix, &listed).await?)
    }

    /// The overrides stored in Redis now, expired ones left out (malformed ones too, each
    /// reported once as a warning). A per-key override's key is the client's digest, as
    /// [`stored_key`](Self::stored_key) gives it (unless keys are kept in clear). Redis
    /// backend only.
    pub async fn overrides(&self) -> Result<Vec<Override>, Error> {
        let redis = self.redis()?;
        let key = overrides::redis::overrides_key(&self.inner.prefix);
        let mut list = Vec::new();
        for (f, v) in redis.hash(&key).await? {
            match Override::parse(&f, &v) {
                Ok(mut o) if !overrides::redis::expired(&o) => {
                    if let Some(k) = &o.key {
                        o.key = Some(redis.at_rest().stored(k).as_str().to_owned());
                    }
                    list.push(o);
                }
                Ok(_) => {}
                Err(e) => self
                    .inner
                    .overrides
                    .warn_once(&format!("{key}\n{f}\n{v}"), || {
                        format!("malformed override {f:?} in Redis hash {key} ignored: {e}")
                    }),
            }
        }
        list.sort_by(|a, b| (&a.limit, &a.key).cmp(&(&b.limit, &b.key)));
        Ok(list)
    }

    /// The limits the instances registered (as they declared them, without overrides),
    /// sorted by name; those no running instance wrote for a day are left out. Redis backend
    /// only.
    pub async fn registered_limits(&self) -> Result<Vec<Limit>, Error> {
        let key = overrides::redis::limits_key(&self.inner.prefix);
        let mut list = Vec::new();
        let now = registry::now_millis();
        for (name, value) in self.redis()?.hash(&key).await? {
            match registry::parse(&name, &value, now) {
                Ok(Some(limit)) => list.push(limit),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(target: "flux", "malformed entry {name:?} in {key} ignored: {e}")
                }
            }
        }
        list.sort_by(|a, b| a.name().cmp(b.name()));
        Ok(list)
    }

    /// Reads the overrides now, instead of waiting for the background task (at most a
    /// second): for a startup that must not run one request on the code's limits when an
    /// override exists. Also starts the background task. On the in-memory backend, reads
    /// the `FLUX_OVERRIDES` file.
    pub async fn sync_overrides(&self) -> Result<(), Error> {
        let overrides = &self.inner.overrides;
        if overrides.claim_start() {
            self.start_runtime();
        }
        let table = match self.inner.store.redis() {
            Some(redis) => {
                Some(overrides::redis::read(redis, &self.inner.prefix, overrides).await?)
            }
            None => overrides::read_file(overrides),
        };
        if let Some(table) = table
            && overrides.replace(table)
            && let Some(cache) = &self.inner.deny_cache
        {
            cache.clear();
        }
        Ok(())
    }

    /// The Redis store, or the error that overrides need one.
    fn redis(&self) -> Result<&RedisStore, Error> {
        self.inner.store.redis().ok_or_else(|| {
            Error::config(
                ConfigOption::Backend,
                "overrides are stored in Redis: set FLUX_REDIS_URL or FLUX_REDIS_CLUSTER \
                 (the in-memory backend reads them from the FLUX_OVERRIDES file)",
            )
        })
    }
}
