//! The limiter: [`Flux`], what it is made of, and every call it answers. It composes the
//! layers below (the store, the breaker and failure policy around it, the hot-key caches,
//! the overrides) and knows nothing of HTTP or gRPC, which sit above it.
//!
//! Where to find a call: `builder` (configuration, [`Builder::from_env`]), `check`
//! ([`Flux::check`] and its kin, the one path every check takes), `charge`
//! ([`Flux::charge`]), `admin` ([`Flux::peek`], the overrides and the registry, the
//! operator's calls), `health` ([`Flux::health`] and what it reads). Concurrency slots
//! ([`Flux::acquire`]) live with the concurrency limits.

mod admin;
pub(crate) mod builder;
mod charge;
mod check;
mod health;

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

pub use self::builder::{
    Builder, DEFAULT_DEADLINE, DEFAULT_MEMORY_MAX_BUCKETS, DenyResponse, MIN_MEMORY_MAX_BUCKETS,
};
pub use self::charge::Charged;
use crate::error::Error;
use crate::hot::deny_cache::DenyCache;
use crate::hot::lease::Leases;
use crate::model::client::{IpSet, TrustedProxies};
use crate::outage::breaker::{Breaker, Pass, Ticket};
use crate::outage::fleet::Fleet;
use crate::outage::policy::FailurePolicy;
use crate::overrides::Overrides;
use crate::store::Store;
use crate::store::memory::MemoryStore;
use crate::telemetry;

/// A limiter's configuration and state, shared by its clones.
pub(crate) struct Inner {
    /// Where buckets and slots live.
    pub(crate) store: Arc<Store>,
    /// This process' buckets and slots: the in-memory backend's own (`store` holds the
    /// same), or the `Local` policy's fallback.
    pub(crate) local: MemoryStore,
    /// The breaker in front of a store whose calls can fail; `None` for the in-memory one.
    pub(crate) breaker: Option<Arc<Breaker>>,
    /// The instances sharing the store, as its heartbeat last counted them.
    pub(crate) fleet: Arc<Fleet>,
    /// Tokens this instance leased (limits with a lease, on a remote store).
    pub(crate) leases: Leases,
    /// The store's recent denials (remote stores only, unless turned off).
    pub(crate) deny_cache: Option<Arc<DenyCache>>,
    /// Limits changed at runtime, and the registry of declared limits.
    pub(crate) overrides: Arc<Overrides>,
    pub(crate) prefix: String,
    pub(crate) deadline: Duration,
    pub(crate) policy: FailurePolicy,
    pub(crate) proxies: TrustedProxies,
    /// Clients whose requests skip every limit.
    pub(crate) exempt_ips: IpSet,
    /// Whether checks admit what the limits deny (counting it as `shadow_denied`).
    pub(crate) shadow: bool,
    pub(crate) deny: Option<DenyResponse>,
}

/// The configured rate limiter. Cheap to clone: clones share connections and buckets.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), flux::Error> {
/// use flux::{Flux, Limit, Rate};
///
/// static LOGIN: Limit = Limit::new("login", Rate::per_minute::<5>());
/// let flux = Flux::builder().build()?; // in-memory; .redis(url) for Redis
/// for _ in 0..5 {
///     assert!(flux.check("alice", &LOGIN).await.allowed);
/// }
/// let denied = flux.check("alice", &LOGIN).await;
/// assert!(!denied.allowed);
/// assert!(denied.retry_after.as_secs() >= 11); // one token per 12 s
/// assert!(flux.check("bob", &LOGIN).await.allowed); // other clients are unaffected
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Flux {
    pub(crate) inner: Arc<Inner>,
}

static GLOBAL: OnceLock<Flux> = OnceLock::new();

impl Flux {
    pub(crate) fn new(inner: Inner) -> Flux {
        Flux {
            inner: Arc::new(inner),
        }
    }

    /// Makes `flux` the process-wide limiter, unless one is installed (or in use) already.
    pub(crate) fn install_global(flux: Flux) -> Result<(), Error> {
        GLOBAL.set(flux).map_err(|_| Error::AlreadyInstalled)
    }

    /// A builder with nothing set: in-memory backend, prefix `flux`, 50 ms deadline, `Open`.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// The process-wide limiter: the installed one, or else one built from the environment
    /// ([`Builder::from_env`]) on first use. An invalid environment is logged as an error
    /// and the in-memory backend used, so a typo never takes the service down.
    pub fn global() -> &'static Flux {
        GLOBAL.get_or_init(|| {
            Builder::from_env().and_then(Builder::build).unwrap_or_else(|e| {
                tracing::error!(target: "flux", "{e}; falling back to the in-memory backend (limits per process)");
                Builder::default()
                    .build()
                    .unwrap_or_else(|_| unreachable!("the default configuration is valid"))
            })
        })
    }

    /// Whether requests from `ip` skip every limit ([`Builder::exempt_ips`]).
    ///
    /// ```
    /// let flux = flux::Flux::builder().exempt_ips(["10.0.0.0/8"]).build()?;
    /// assert!(flux.is_exempt_ip("10.1.2.3".parse().unwrap()));
    /// assert!(!flux.is_exempt_ip("192.0.2.1".parse().unwrap()));
    /// # Ok::<(), flux::Error>(())
    /// ```
    pub fn is_exempt_ip(&self, ip: std::net::IpAddr) -> bool {
        self.inner.exempt_ips.contains(ip)
    }

    /// Whether some addresses are exempt (then the attribute needs every request's address).
    pub(crate) fn has_exempt_ips(&self) -> bool {
        !self.inner.exempt_ips.is_empty()
    }

    /// The store buckets and slots live in.
    pub(crate) fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The prefix of every storage key.
    pub(crate) fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The per-process buckets and slots: the in-memory backend's, or the `Local` policy's.
    pub(crate) fn local_store(&self) -> &MemoryStore {
        &self.inner.local
    }

    /// Whether every limit runs in shadow mode ([`Builder::shadow`]).
    pub fn is_shadow(&self) -> bool {
        self.inner.shadow
    }

    /// Whether the store is Redis (the `source` label says `redis`, not `memory`).
    pub(crate) fn is_redis(&self) -> bool {
        self.inner.store.is_remote()
    }

    /// Asks Redis for `PONG` (within `timeout`): a startup check that reports a wrong
    /// address, password or TLS setting as an error. Always `Ok` for the in-memory backend.
    pub async fn ping(&self, timeout: Duration) -> Result<(), Error> {
        tokio::time::timeout(timeout, self.inner.store.ping())
            .await
            .map_err(|_| Error::Timeout(timeout))?
    }

    /// The backend in words, for startup logs: `in-memory (per process)` or the Redis URL
    /// without its password (every part of the URL that may hold one reads `***`).
    pub fn describe(&self) -> String {
        self.inner.store.describe()
    }

    /// Whether the circuit breaker is open: Redis is considered down and checks take the
    /// failure policy without calling it.
    pub fn is_degraded(&self) -> bool {
        self.inner.breaker.as_ref().is_some_and(|b| b.is_open())
    }

    /// The default failure policy.
    pub fn failure_policy(&self) -> FailurePolicy {
        self.inner.policy
    }

    /// The number of buckets held in process memory (the in-memory backend, or the `Local`
    /// fallback): idle buckets are dropped, so this tracks recently active clients, up to
    /// the cap ([`Builder::memory_max_buckets`]; once there, it may count buckets already
    /// full again, which new ones replace first).
    pub fn local_buckets(&self) -> usize {
        self.inner.local.len()
    }

    /// Buckets evicted from process memory at the cap before they were full again (each a
    /// client whose next request finds a full bucket), since this limiter was built: the
    /// count behind `flux_memory_evictions_total`.
    ///
    /// ```
    /// let flux = flux::Flux::builder().build()?;
    /// assert_eq!(flux.local_evictions(), 0);
    /// # Ok::<(), flux::Error>(())
    /// ```
    pub fn local_evictions(&self) -> u64 {
        self.inner.local.evictions()
    }

    /// Denials held by the hot-key deny cache (bounded; 0 when it is off).
    pub fn cached_denials(&self) -> usize {
        self.inner.deny_cache.as_deref().map_or(0, DenyCache::len)
    }

    pub(crate) fn trusted_proxies(&self) -> &TrustedProxies {
        &self.inner.proxies
    }

    pub(crate) fn deny_override(&self) -> Option<&DenyResponse> {
        self.inner.deny.as_ref()
    }

    /// What the breaker says about a store call for a client key in hash slot `slot`:
    /// call, probe, or skip (`None`: the store's calls cannot fail, always call).
    pub(crate) fn pass(&self, slot: usize) -> Option<Ticket> {
        let breaker = self.inner.breaker.as_ref()?;
        Some(breaker.pass(self.inner.store.circuit(slot)))
    }

    /// Runs a store `call` under the breaker's `ticket`: its answer, or `None` when the
    /// breaker skipped it or it failed (then the failure policy `policy` decides; the
    /// breaker logs the failure once, naming the policy).
    pub(crate) async fn guarded<T>(
        &self,
        ticket: Option<Ticket>,
        policy: FailurePolicy,
        call: impl Future<Output = Result<T, Error>>,
    ) -> Option<T> {
        let (Some(ticket), Some(breaker)) = (ticket, &self.inner.breaker) else {
            return call.await.ok();
        };
        if ticket.pass == Pass::Skip {
            return None;
        }
        let store = &self.inner.store;
        match call.await {
            Ok(answer) => {
                if breaker.success(ticket) {
                    telemetry::breaker_state(store.circuit_name(ticket.circuit()), false);
                }
                Some(answer)
            }
            Err(error) => {
                if breaker.failure(ticket, policy.as_str(), &error) {
                    telemetry::breaker_state(store.circuit_name(ticket.circuit()), true);
                }
                store.after_failure();
                None
            }
        }
    }
}

impl fmt::Debug for Flux {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Flux")
            .field("backend", &self.describe())
            .field("prefix", &self.inner.prefix)
            .field("deadline", &self.inner.deadline)
            .field("policy", &self.inner.policy)
            .finish_non_exhaustive()
    }
}
