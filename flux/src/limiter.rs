//! `Flux`, the configured limiter: backend, deadline, breaker and failure policy.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::breaker::{Breaker, BreakerConfig, Pass};
use crate::deny_cache::DenyCache;
use crate::gcra::{Bucket, Params};
use crate::memory::{Clock, MemoryStore, MonotonicClock};
use crate::proxy::TrustedProxies;
use crate::redis_backend::RedisStore;
use crate::{Decision, Limit, Source, ToKey};

/// What a check does when Redis cannot answer within the deadline (or the breaker is open).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailurePolicy {
    /// Admit the request unchecked: the service keeps serving (the default).
    #[default]
    Open,
    /// Refuse the request; HTTP handlers answer `503 Service Unavailable`.
    Closed,
    /// Decide with per-process buckets until Redis is back: limits hold per instance.
    Local,
}

impl FailurePolicy {
    /// `"open"`, `"closed"` or `"local"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            FailurePolicy::Open => "open",
            FailurePolicy::Closed => "closed",
            FailurePolicy::Local => "local",
        }
    }
}

impl fmt::Display for FailurePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FailurePolicy {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s.trim().to_ascii_lowercase().as_str() {
            "open" => Ok(FailurePolicy::Open),
            "closed" => Ok(FailurePolicy::Closed),
            "local" => Ok(FailurePolicy::Local),
            other => Err(Error::Config(format!(
                "unknown failure policy {other:?}: expected \"open\", \"closed\" or \"local\""
            ))),
        }
    }
}

/// Errors of configuration and of the Redis backend.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A setting is invalid (the message says which and why).
    Config(String),
    /// Redis answered with an error or the connection failed.
    Redis(redis::RedisError),
    /// Redis did not answer within the deadline.
    Timeout(Duration),
    /// Redis answered something the script never returns.
    Protocol(String),
    /// [`Builder::install`] was called when a limiter was already installed (or in use).
    AlreadyInstalled,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(msg) => write!(f, "flux configuration: {msg}"),
            Error::Redis(e) => write!(f, "Redis: {e}"),
            Error::Timeout(d) => write!(f, "Redis did not answer within the {d:?} deadline"),
            Error::Protocol(msg) => write!(f, "unexpected reply from Redis: {msg}"),
            Error::AlreadyInstalled => f.write_str(
                "a global Flux limiter is already installed (install() runs once, before the first check)",
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Redis(e) => Some(e),
            _ => None,
        }
    }
}

impl From<redis::RedisError> for Error {
    fn from(e: redis::RedisError) -> Self {
        Error::Redis(e)
    }
}

/// The answer returned instead of the default 429/503 response, see
/// [`Builder::deny_response`].
pub type DenyResponse = Arc<dyn Fn(&Decision) -> axum::response::Response + Send + Sync>;

enum Target {
    Memory,
    Redis(String),
    Cluster(Vec<String>),
}

/// Configures a [`Flux`]. Start from [`Flux::builder`] (nothing set: in-memory backend) or
/// [`Builder::from_env`].
///
/// ```
/// use flux::{Flux, FailurePolicy};
/// use std::time::Duration;
///
/// let flux = Flux::builder()
///     .redis("redis://127.0.0.1:6379/")
///     .key_prefix("myapp")
///     .deadline(Duration::from_millis(25))
///     .failure_policy(FailurePolicy::Local)
///     .trusted_proxies(["10.0.0.0/8"])
///     .build()?;
/// assert!(flux.describe().contains("redis://127.0.0.1:6379"));
/// # Ok::<(), flux::Error>(())
/// ```
#[must_use]
pub struct Builder {
    target: Target,
    prefix: String,
    deadline: Duration,
    policy: FailurePolicy,
    breaker: BreakerConfig,
    proxies: Vec<String>,
    deny: Option<DenyResponse>,
    clock: Option<Box<dyn Clock>>,
    deny_cache: bool,
    from_env: bool,
}

/// The default deadline of a Redis call: long enough for a busy Redis on a loaded machine,
/// short enough that a hung one is noticed at once.
pub const DEFAULT_DEADLINE: Duration = Duration::from_millis(50);

impl Default for Builder {
    fn default() -> Self {
        Builder {
            target: Target::Memory,
            prefix: "flux".to_owned(),
            deadline: DEFAULT_DEADLINE,
            policy: FailurePolicy::Open,
            breaker: BreakerConfig::default(),
            proxies: Vec::new(),
            deny: None,
            clock: None,
            deny_cache: true,
            from_env: false,
        }
    }
}

impl Builder {
    /// A builder configured from the environment:
    ///
    /// | variable | meaning | default |
    /// |---|---|---|
    /// | `FLUX_REDIS_URL` | `redis://` or `rediss://` URL (password in the URL) | unset: in-memory |
    /// | `FLUX_REDIS_CLUSTER` | comma-separated node URLs of a Redis Cluster | unset |
    /// | `FLUX_KEY_PREFIX` | prefix of every Redis key | `flux` |
    /// | `FLUX_DEADLINE_MS` | deadline of each Redis call, in ms | `50` |
    /// | `FLUX_FAILURE_POLICY` | `open`, `closed` or `local` | `open` |
    /// | `FLUX_TRUSTED_PROXIES` | comma-separated IPs/CIDRs whose forwarding headers count | none |
    /// | `FLUX_DENY_CACHE` | `off` disables the per-instance cache of Redis' denials | `on` |
    pub fn from_env() -> Result<Builder, Error> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let mut builder = Builder {
            from_env: true,
            ..Builder::default()
        };
        if let Some(nodes) = var("FLUX_REDIS_CLUSTER") {
            builder = builder.redis_cluster(nodes.split(',').map(str::trim));
        } else if let Some(url) = var("FLUX_REDIS_URL") {
            builder = builder.redis(url.trim());
        }
        if let Some(prefix) = var("FLUX_KEY_PREFIX") {
            builder = builder.key_prefix(prefix.trim());
        }
        if let Some(ms) = var("FLUX_DEADLINE_MS") {
            let ms: u64 = ms.trim().parse().map_err(|_| {
                Error::Config(format!(
                    "FLUX_DEADLINE_MS={ms:?} is not a whole number of milliseconds"
                ))
            })?;
            builder = builder.deadline(Duration::from_millis(ms));
        }
        if let Some(policy) = var("FLUX_FAILURE_POLICY") {
            builder = builder.failure_policy(policy.parse()?);
        }
        if let Some(switch) = var("FLUX_DENY_CACHE") {
            builder = builder.deny_cache(match switch.trim().to_ascii_lowercase().as_str() {
                "on" | "true" | "1" => true,
                "off" | "false" | "0" => false,
                other => {
                    return Err(Error::Config(format!(
                        "FLUX_DENY_CACHE={other:?}: expected \"on\" or \"off\""
                    )));
                }
            });
        }
        if let Some(proxies) = var("FLUX_TRUSTED_PROXIES") {
            builder = builder.trusted_proxies(proxies.split(',').map(str::trim));
        }
        Ok(builder)
    }

    /// Use one Redis server (`redis://[user:password@]host[:port][/db]`, `rediss://` for TLS).
    pub fn redis(mut self, url: impl Into<String>) -> Self {
        self.target = Target::Redis(url.into());
        self
    }

    /// Use a Redis Cluster, reached through any of these node URLs.
    pub fn redis_cluster<I, S>(mut self, nodes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.target = Target::Cluster(nodes.into_iter().map(Into::into).collect());
        self
    }

    /// Use the in-memory backend: limits hold per process only.
    pub fn memory(mut self) -> Self {
        self.target = Target::Memory;
        self
    }

    /// Prefix of every Redis key (default `flux`); lets several services share a Redis.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Longest a check waits for Redis before the failure policy applies (default 50 ms).
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// What checks do while Redis is unavailable (default [`FailurePolicy::Open`]).
    pub fn failure_policy(mut self, policy: FailurePolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Circuit-breaker settings (default: open after 3 consecutive failures, probe every 500 ms).
    pub fn breaker(mut self, threshold: u32, probe_interval: Duration) -> Self {
        self.breaker = BreakerConfig {
            threshold,
            probe_interval,
        };
        self
    }

    /// Proxies (IP addresses or CIDR networks) whose `Forwarded` / `X-Forwarded-For` headers
    /// are believed by `key = "ip"`. The client is the rightmost address not in this list.
    pub fn trusted_proxies<I, S>(mut self, proxies: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.proxies = proxies.into_iter().map(Into::into).collect();
        self
    }

    /// Replaces the response of `#[rate_limit]` handlers on denial (429) and under the
    /// `Closed` policy (503). The RateLimit header fields and `Retry-After` are added to it
    /// unless it sets them itself.
    pub fn deny_response<F>(mut self, respond: F) -> Self
    where
        F: Fn(&Decision) -> axum::response::Response + Send + Sync + 'static,
    {
        self.deny = Some(Arc::new(respond));
        self
    }

    /// Whether this instance remembers Redis' denials until their `retry_after` and answers
    /// repeats itself (default on). A flooding client then costs Redis about one call per
    /// retry window per instance, however many connections it floods over; admitted counts
    /// are unchanged, since only what Redis would deny is answered locally.
    pub fn deny_cache(mut self, enabled: bool) -> Self {
        self.deny_cache = enabled;
        self
    }

    /// The clock of the in-memory backend and of the `Local` fallback (tests drive time with
    /// a [`ManualClock`](crate::ManualClock)). Redis always uses its own clock.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Some(Box::new(clock));
        self
    }

    /// Builds the limiter. Connections to Redis are made on first use, so this neither
    /// blocks nor fails when Redis is down; see [`Flux::ping`] for a startup check.
    pub fn build(self) -> Result<Flux, Error> {
        if self.prefix.contains(['{', '}']) {
            return Err(Error::Config(format!(
                "key prefix {:?} may not contain '{{' or '}}' (they delimit the Redis Cluster hash tag)",
                self.prefix
            )));
        }
        if self.deadline.is_zero() {
            return Err(Error::Config(
                "the deadline must be longer than zero".to_owned(),
            ));
        }
        let proxies = TrustedProxies::parse(&self.proxies)?;
        let clock = self
            .clock
            .unwrap_or_else(|| Box::new(MonotonicClock::default()));
        let memory = MemoryStore::new(clock);
        let backend = match &self.target {
            Target::Memory => Backend::Memory,
            Target::Redis(url) => Backend::Redis(Box::new(RedisStore::single(url)?)),
            Target::Cluster(nodes) if nodes.is_empty() => {
                return Err(Error::Config(
                    "a Redis Cluster needs at least one node URL".to_owned(),
                ));
            }
            Target::Cluster(nodes) => Backend::Redis(Box::new(RedisStore::cluster(nodes)?)),
        };
        // A cluster gets one circuit per master: a lost master fails only its own slots.
        let circuits = match &self.target {
            Target::Cluster(_) => crate::redis_backend::NODE_CIRCUITS,
            _ => 1,
        };
        let backend_kind = match backend {
            Backend::Memory => BackendKind::Memory,
            Backend::Redis(_) => BackendKind::Redis,
        };
        if self.from_env && matches!(backend, Backend::Memory) {
            tracing::warn!(
                target: "flux",
                "FLUX_REDIS_URL is not set: using the in-memory backend, so rate limits hold per process, \
                 not across instances"
            );
        }
        Ok(Flux {
            inner: Arc::new(Inner {
                backend,
                memory,
                prefix: self.prefix,
                deadline: self.deadline,
                policy: self.policy,
                breaker: Arc::new(Breaker::new(self.breaker, self.deadline, circuits)),
                proxies,
                deny: self.deny,
                deny_cache: (self.deny_cache && !matches!(backend_kind, BackendKind::Memory))
                    .then(|| DenyCache::new(self.deadline)),
            }),
        })
    }

    /// Builds the limiter and makes it the process-wide one that `#[rate_limit]` uses.
    ///
    /// Call it once at startup, before the first check; otherwise the first check installs
    /// one from the environment ([`Builder::from_env`]) and this returns
    /// [`Error::AlreadyInstalled`].
    pub fn install(self) -> Result<Flux, Error> {
        let flux = self.build()?;
        GLOBAL
            .set(flux.clone())
            .map_err(|_| Error::AlreadyInstalled)?;
        Ok(flux)
    }
}

enum Backend {
    Memory,
    Redis(Box<RedisStore>),
}

enum BackendKind {
    Memory,
    Redis,
}

struct Inner {
    backend: Backend,
    /// The in-memory backend's buckets, or the `Local` policy's fallback buckets.
    memory: MemoryStore,
    prefix: String,
    deadline: Duration,
    policy: FailurePolicy,
    breaker: Arc<Breaker>,
    proxies: TrustedProxies,
    deny: Option<DenyResponse>,
    deny_cache: Option<DenyCache>,
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
    inner: Arc<Inner>,
}

static GLOBAL: OnceLock<Flux> = OnceLock::new();

impl Flux {
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
        if limits.is_empty() {
            // Nothing to enforce.
            return Decision::unchecked(true, Source::Backend);
        }
        let key = key.to_key();
        let plan = self.plan(&key, limits);
        let policy = policy.unwrap_or(self.inner.policy);
        let Backend::Redis(redis) = &self.inner.backend else {
            return self.local(&key, limits, &plan, None, Source::Backend);
        };
        // The breaker first: during an outage a check costs nothing more than this.
        let circuit = redis.circuit(key.slot());
        let ticket = self.inner.breaker.pass(circuit);
        // A denial Redis gave moments ago stands, during an outage too (a probe still asks
        // Redis). The check's identity is built only while the cache holds anything.
        let cache = self.inner.deny_cache.as_ref().filter(|c| !c.is_empty());
        if ticket.pass != Pass::Probe
            && let Some(denied) = cache.and_then(|c| c.get(&plan.id()))
        {
            return denied;
        }
        if ticket.pass != Pass::Skip {
            let sent = self.inner.deny_cache.as_ref().map_or(0, DenyCache::now);
            let mut out = Vec::with_capacity(limits.len());
            let call = redis.check(
                &self.inner.breaker,
                &plan.keys,
                &plan.params,
                None,
                &mut out,
            );
            match tokio::time::timeout(self.inner.deadline, call).await {
                Ok(Ok(allowed)) => {
                    self.inner.breaker.success(circuit, ticket);
                    let decision = summarize(allowed, &out, limits, Source::Backend);
                    if let Some(cache) = &self.inner.deny_cache {
                        // What the deciding bucket needs before this check fits again.
                        let p = plan.params[decision.index];
                        let wait = out[decision.index].reset_after + p.increment;
                        let wait = wait.saturating_sub(p.tolerance);
                        if !decision.allowed || wait > 0 || !cache.is_empty() {
                            cache.learn(&plan.id(), &decision, sent, p.interval, wait);
                        }
                    }
                    return decision;
                }
                Ok(Err(e)) => {
                    self.inner
                        .breaker
                        .failure(circuit, ticket, policy.as_str(), &e);
                    redis.refresh_nodes(&self.inner.breaker);
                }
                Err(_) => {
                    let e = Error::Timeout(self.inner.deadline);
                    self.inner
                        .breaker
                        .failure(circuit, ticket, policy.as_str(), &e);
                    redis.refresh_nodes(&self.inner.breaker);
                }
            }
        }
        match policy {
            FailurePolicy::Open => Decision::unchecked(true, Source::FailOpen),
            FailurePolicy::Closed => Decision::unchecked(false, Source::FailClosed),
            FailurePolicy::Local => self.local(&key, limits, &plan, None, Source::Local),
        }
    }

    /// Checks without breaker or failure policy: Redis' answer or its error (with the
    /// deadline applied). For callers that want to handle failures themselves.
    pub async fn try_check(&self, key: impl ToKey, limits: &[Limit]) -> Result<Decision, Error> {
        self.try_check_at(key, limits, None).await
    }

    /// [`try_check`](Self::try_check) at an explicit time in µs instead of the backend's
    /// clock. Only for tests that compare the backends on the same arrival times.
    #[doc(hidden)]
    pub async fn try_check_at(
        &self,
        key: impl ToKey,
        limits: &[Limit],
        now_micros: Option<u64>,
    ) -> Result<Decision, Error> {
        if limits.is_empty() {
            return Ok(Decision::unchecked(true, Source::Backend));
        }
        let key = key.to_key();
        let plan = self.plan(&key, limits);
        match &self.inner.backend {
            Backend::Memory => Ok(self.local(&key, limits, &plan, now_micros, Source::Backend)),
            Backend::Redis(redis) => {
                let mut out = Vec::with_capacity(limits.len());
                let call = redis.check(
                    &self.inner.breaker,
                    &plan.keys,
                    &plan.params,
                    now_micros,
                    &mut out,
                );
                let allowed = tokio::time::timeout(self.inner.deadline, call)
                    .await
                    .map_err(|_| Error::Timeout(self.inner.deadline))??;
                Ok(summarize(allowed, &out, limits, Source::Backend))
            }
        }
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
            Backend::Redis(redis) => format!("Redis at {}", redis.display),
        }
    }

    /// Whether the circuit breaker is open: Redis is considered down and checks take the
    /// failure policy without calling it.
    pub fn is_degraded(&self) -> bool {
        self.inner.breaker.is_open()
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

    fn plan(&self, key: &crate::Key, limits: &[Limit]) -> Plan {
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
        key: &crate::Key,
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
fn summarize(allowed: bool, buckets: &[Bucket], limits: &[Limit], source: Source) -> Decision {
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
        retry_after: Duration::from_micros(bucket.retry_after),
        reset_after: Duration::from_micros(bucket.reset_after),
        window: limit.window(),
        index,
        source,
    }
}
