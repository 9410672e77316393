//! `Flux`, the configured limiter: backend, deadline, breaker and failure policy.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::breaker::Pass;
use crate::builder::DenyResponse;
use crate::deny_cache::DenyCache;
use crate::gcra::{Bucket, Params};
use crate::memory::MemoryStore;
use crate::proxy::IpSet;
use crate::proxy::TrustedProxies;
use crate::redis_store::RedisStore;
use crate::slots::SlotTable;
use crate::telemetry::{self, Outcome};
use crate::{Builder, Decision, Error, FailurePolicy, Key, Limit, Source, ToKey};

/// Where buckets live.
pub(crate) enum Backend {
    Memory,
    Redis(Box<RedisStore>),
}

/// A limiter's configuration and state, shared by its clones.
pub(crate) struct Inner {
    pub(crate) backend: Backend,
    /// The in-memory backend's buckets, or the `Local` policy's fallback buckets.
    pub(crate) memory: MemoryStore,
    /// The in-memory backend's concurrency slots, or the `Local` policy's fallback slots.
    pub(crate) slots: SlotTable,
    pub(crate) prefix: String,
    pub(crate) deadline: Duration,
    pub(crate) policy: FailurePolicy,
    pub(crate) proxies: TrustedProxies,
    /// Clients whose requests skip every limit.
    pub(crate) exempt_ips: IpSet,
    /// Whether checks admit what the limits deny (counting it as `shadow_denied`).
    pub(crate) shadow: bool,
    pub(crate) deny: Option<DenyResponse>,
    /// Redis' recent denials (Redis backend only, unless turned off).
    pub(crate) deny_cache: Option<DenyCache>,
    /// Limits changed at runtime, and the registry of declared limits (`admin`).
    pub(crate) overrides: Arc<crate::overrides::Overrides>,
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

    /// Checks one limit for `key`, applying the failure policy if Redis cannot answer.
    pub async fn check(&self, key: impl ToKey, limit: &Limit) -> Decision {
        self.check_all(key, std::slice::from_ref(limit)).await
    }

    /// Checks several limits for `key` at once, all or nothing: the request is admitted
    /// only if every limit admits it, and a denial charges no bucket.
    pub async fn check_all(&self, key: impl ToKey, limits: &[Limit]) -> Decision {
        self.check_with_policy(key, limits, None).await
    }

    /// Like [`check_all`](Self::check_all) with a failure policy for this check only.
    pub async fn check_with_policy(
        &self,
        key: impl ToKey,
        limits: &[Limit],
        policy: Option<FailurePolicy>,
    ) -> Decision {
        self.check_with(key, limits, policy, None).await
    }

    /// The check behind every entry point: decides, counts the decision
    /// (`flux_decisions_total`), logs a denial, and in shadow mode (this check's `shadow`,
    /// else the limiter's) admits what the limits denied.
    pub(crate) async fn check_with(
        &self,
        key: impl ToKey,
        limits: &[Limit],
        policy: Option<FailurePolicy>,
        shadow: Option<bool>,
    ) -> Decision {
        if limits.is_empty() {
            // Nothing to enforce.
            return Decision::unchecked(true, Source::Backend);
        }
        let key = key.to_key();
        // Runtime overrides (admin.rs): decide with the limits in force, report by the
        // checked ones; a check whose every limit is off skips the backend.
        let applied = self.runtime_limits(&key, limits);
        let in_force = applied.as_ref().map_or(limits, |a| &a.limits[..]);
        let mut decision = if in_force.is_empty() {
            Decision::unchecked(true, Source::Exempt)
        } else {
            self.enforce(&key, in_force, policy).await
        };
        if let Some(a) = &applied {
            decision.index = a.original(decision.index);
        }
        let shadow = shadow.unwrap_or(self.inner.shadow);
        let outcome = match (decision.allowed, shadow) {
            (true, _) => Outcome::Allowed,
            (false, false) => Outcome::Denied,
            (false, true) => Outcome::ShadowDenied,
        };
        telemetry::count(limits, outcome, decision.source, self.is_redis());
        if !decision.allowed {
            if decision.source != Source::FailClosed {
                telemetry::log_denial(&key, limits, &decision, shadow);
            }
            if shadow {
                decision.allowed = true;
                decision.shadow_denied = true;
            }
        }
        decision
    }

    /// The answer for an exempt request: admitted without asking any backend, counted
    /// `exempt` for each limit.
    pub(crate) fn exempt(&self, limits: &[Limit]) -> Decision {
        telemetry::count(limits, Outcome::Exempt, Source::Exempt, self.is_redis());
        Decision::unchecked(true, Source::Exempt)
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

    pub(crate) fn backend(&self) -> &Backend {
        &self.inner.backend
    }

    /// The prefix of every storage key.
    pub(crate) fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// Now, on the in-memory backend's clock (µs).
    pub(crate) fn memory_now(&self) -> u64 {
        self.inner.memory.now_micros()
    }

    /// The per-process buckets: the in-memory backend's, or the `Local` policy's.
    pub(crate) fn memory(&self) -> &MemoryStore {
        &self.inner.memory
    }

    /// This process' concurrency slots.
    pub(crate) fn slot_table(&self) -> &SlotTable {
        &self.inner.slots
    }

    /// Whether every limit runs in shadow mode ([`Builder::shadow`]).
    pub fn is_shadow(&self) -> bool {
        self.inner.shadow
    }

    pub(crate) fn is_redis(&self) -> bool {
        matches!(self.inner.backend, Backend::Redis(_))
    }

    /// Decides with the backend, the deny cache, the breaker and the failure policy.
    async fn enforce(
        &self,
        key: &Key,
        limits: &[Limit],
        policy: Option<FailurePolicy>,
    ) -> Decision {
        let plan = self.plan(key, limits);
        let policy = policy.unwrap_or(self.inner.policy);
        let Backend::Redis(redis) = &self.inner.backend else {
            return self.local(key, limits, &plan, None, Source::Backend);
        };
        if policy == FailurePolicy::Local {
            // Only checks that may fall back to `local` need the fleet's count (fleet.rs).
            redis.ensure_heartbeat(&self.inner.prefix);
        }
        // Leased tokens first: they are out of the bucket already, outage or not (lease.rs).
        let want = crate::lease::want(limits);
        let refill = if want > 1 {
            match redis.leases().spend_or_refill(&plan.id()).await {
                Ok(leased) => return leased,
                Err(refill) => Some(refill),
            }
        } else {
            None
        };
        // The breaker first: during an outage a check costs nothing more than this.
        let ticket = redis.pass(key.slot());
        // A denial Redis gave moments ago stands, during an outage too (a probe still asks
        // Redis). The check's identity is built only while the cache holds anything.
        let cache = self.inner.deny_cache.as_ref();
        if ticket.pass != Pass::Probe
            && let Some(denied) = cache
                .filter(|c| !c.is_empty())
                .and_then(|c| c.get(&plan.id()))
        {
            return denied;
        }
        if ticket.pass != Pass::Skip {
            let sent = cache.map_or(0, DenyCache::now);
            let leased_at = refill.as_ref().map(crate::lease::Refill::sent);
            let mut out = Vec::with_capacity(limits.len());
            match redis
                .check(&plan.keys, &plan.params, want, None, &mut out)
                .await
            {
                Ok(taken) => {
                    redis.succeeded(ticket);
                    let decision = summarize(taken > 0, &out, limits, Source::Backend);
                    if let (Some(refill), Some(at), true) = (refill, leased_at, taken > 0) {
                        refill.fill(taken, &decision, at);
                    }
                    if let Some(cache) = cache {
                        let i = decision.index;
                        cache.learn(|| plan.id(), &decision, sent, plan.params[i], &out[i]);
                    }
                    return decision;
                }
                Err(error) => redis.failed(ticket, policy, &error),
            }
        }
        match policy {
            FailurePolicy::Open => Decision::unchecked(true, Source::FailOpen),
            FailurePolicy::Closed => Decision::unchecked(false, Source::FailClosed),
            FailurePolicy::Local => {
                // This instance's share of each limit: the fleet stays near the limit (fleet.rs).
                let plan = Plan {
                    params: crate::fleet::share_all(&plan.params, redis.fleet_size()),
                    keys: plan.keys,
                };
                self.local(key, limits, &plan, None, Source::Local)
            }
        }
    }

    /// Checks without breaker or failure policy: Redis' answer or its error (with the
    /// deadline applied). For callers that want to handle failures themselves.
    pub async fn try_check(&self, key: impl ToKey, limits: &[Limit]) -> Result<Decision, Error> {
        self.decide(key, limits, None).await
    }

    /// [`try_check`](Self::try_check), at `now_micros` (µs on the backend's time line) when
    /// given, instead of the backend's clock.
    pub(crate) async fn decide(
        &self,
        key: impl ToKey,
        limits: &[Limit],
        now_micros: Option<u64>,
    ) -> Result<Decision, Error> {
        if limits.is_empty() {
            return Ok(Decision::unchecked(true, Source::Backend));
        }
        let key = key.to_key();
        // Runtime overrides, as in `check_with`.
        let applied = self.runtime_limits(&key, limits);
        let limits = applied.as_ref().map_or(limits, |a| &a.limits[..]);
        if limits.is_empty() {
            return Ok(Decision::unchecked(true, Source::Exempt));
        }
        let plan = self.plan(&key, limits);
        let mut decision = match &self.inner.backend {
            Backend::Memory => self.local(&key, limits, &plan, now_micros, Source::Backend),
            Backend::Redis(redis) => {
                let mut out = Vec::with_capacity(limits.len());
                let taken = redis
                    .check(&plan.keys, &plan.params, 1, now_micros, &mut out)
                    .await?;
                summarize(taken > 0, &out, limits, Source::Backend)
            }
        };
        if let Some(a) = &applied {
            decision.index = a.original(decision.index);
        }
        Ok(decision)
    }

    /// Asks Redis for `PONG` (within `timeout`): a startup check that reports a wrong
    /// address, password or TLS setting as an error. Always `Ok` for the in-memory backend.
    pub async fn ping(&self, timeout: Duration) -> Result<(), Error> {
        match &self.inner.backend {
            Backend::Memory => Ok(()),
            Backend::Redis(redis) => tokio::time::timeout(timeout, redis.ping())
                .await
                .map_err(|_| Error::Timeout(timeout))?,
        }
    }

    /// The backend in words, for startup logs: `in-memory (per process)` or the Redis URL
    /// without its password.
    pub fn describe(&self) -> String {
        match &self.inner.backend {
            Backend::Memory => "in-memory (limits per process)".to_owned(),
            Backend::Redis(redis) => format!("Redis at {}", redis.display()),
        }
    }

    /// Whether the circuit breaker is open: Redis is considered down and checks take the
    /// failure policy without calling it.
    pub fn is_degraded(&self) -> bool {
        match &self.inner.backend {
            Backend::Memory => false,
            Backend::Redis(redis) => redis.is_degraded(),
        }
    }

    /// The default failure policy.
    pub fn failure_policy(&self) -> FailurePolicy {
        self.inner.policy
    }

    /// The number of buckets held in process memory (the in-memory backend, or the `Local`
    /// fallback): idle buckets are dropped, so this tracks recently active clients.
    pub fn local_buckets(&self) -> usize {
        self.inner.memory.len()
    }

    /// Denials held by the hot-key deny cache (bounded; 0 when it is off).
    pub fn cached_denials(&self) -> usize {
        self.inner.deny_cache.as_ref().map_or(0, DenyCache::len)
    }

    pub(crate) fn trusted_proxies(&self) -> &TrustedProxies {
        &self.inner.proxies
    }

    pub(crate) fn deny_override(&self) -> Option<&DenyResponse> {
        self.inner.deny.as_ref()
    }

    fn plan(&self, key: &Key, limits: &[Limit]) -> Plan {
        Plan {
            keys: limits
                .iter()
                .map(|l| key.bucket(&self.inner.prefix, l.name()))
                .collect(),
            params: limits.iter().map(Limit::params).collect(),
        }
    }

    fn local(
        &self,
        key: &Key,
        limits: &[Limit],
        plan: &Plan,
        at: Option<u64>,
        source: Source,
    ) -> Decision {
        let mut out = Vec::with_capacity(limits.len());
        let allowed = self
            .inner
            .memory
            .check(key, &plan.keys, &plan.params, at, &mut out);
        summarize(allowed, &out, limits, source)
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

struct Plan {
    keys: Vec<String>,
    params: Vec<Params>,
}

impl Plan {
    /// What identifies this check for the deny cache: its buckets and what each request
    /// takes from them (a denial of cost 3 says nothing about cost 1).
    fn id(&self) -> String {
        use std::fmt::Write as _;
        let mut id = String::with_capacity(self.keys.iter().map(|k| k.len() + 22).sum());
        for (key, p) in self.keys.iter().zip(&self.params) {
            // Writing to a String cannot fail.
            let _ = write!(id, "{key}\n{}\n", p.increment);
        }
        id
    }
}

/// One decision from per-bucket outcomes: on denial the bucket with the longest wait, on
/// admission the one with the fewest tokens left.
pub(crate) fn summarize(
    allowed: bool,
    buckets: &[Bucket],
    limits: &[Limit],
    source: Source,
) -> Decision {
    let index = if allowed {
        (0..buckets.len()).min_by_key(|&i| buckets[i].remaining)
    } else {
        (0..buckets.len()).max_by_key(|&i| (buckets[i].retry_after, std::cmp::Reverse(i)))
    }
    .unwrap_or(0);
    let Some(bucket) = buckets.get(index) else {
        // No limits at all: nothing to enforce.
        return Decision::unchecked(true, source);
    };
    let limit = &limits[index];
    Decision {
        allowed,
        capacity: limit.burst(),
        remaining: u32::try_from(bucket.remaining).unwrap_or(u32::MAX),
        shadow_denied: false,
        retry_after: Duration::from_micros(bucket.retry_after),
        reset_after: Duration::from_micros(bucket.reset_after),
        window: limit.window(),
        index,
        source,
    }
}
