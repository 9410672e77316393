//! `Builder`: configures a `Flux`, in code or from the environment.

use std::sync::Arc;
use std::time::Duration;

use super::{Flux, Inner};
use crate::error::{ConfigOption, Error};
use crate::hot::deny_cache::DenyCache;
use crate::hot::lease::Leases;
use crate::model::client::{ClientIpHeader, IpSet, TrustedProxies};
use crate::model::clock::{Clock, MonotonicClock};
use crate::model::decision::Decision;
use crate::model::key::{AtRest, DEFAULT_KEY_SECRET};
use crate::outage::breaker::{Breaker, BreakerConfig};
use crate::outage::fleet::Fleet;
use crate::outage::policy::FailurePolicy;
use crate::overrides::{self, Overrides};
use crate::store::Store;
use crate::store::memory::{MIN_MAX_BUCKETS, MemoryStore};
use crate::store::redis::{NODE_CIRCUITS, RedisStore};

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
/// use flux::{FailurePolicy, Flux};
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
    client_ip_header: ClientIpHeader,
    exempt_ips: Vec<String>,
    shadow: bool,
    deny: Option<DenyResponse>,
    clock: Option<Box<dyn Clock>>,
    deny_cache: bool,
    from_env: bool,
    overrides_file: Option<std::path::PathBuf>,
    key_secret: Option<Vec<u8>>,
    clear_keys: bool,
    memory_max_buckets: usize,
}

/// The default deadline of a Redis call: long enough for a busy Redis on a loaded machine,
/// short enough that a hung one is noticed at once.
pub const DEFAULT_DEADLINE: Duration = Duration::from_millis(50);

/// The default cap on buckets held in process memory ([`Builder::memory_max_buckets`]): a
/// million clients active within one window before any is evicted, in about 100-120 MB with
/// IP keys (99-116 bytes a bucket, measured), within a 512 MiB container's means.
pub const DEFAULT_MEMORY_MAX_BUCKETS: usize = 1_000_000;

/// The smallest cap [`Builder::memory_max_buckets`] accepts: 16 buckets in each of the
/// store's 64 shards.
pub const MIN_MEMORY_MAX_BUCKETS: usize = MIN_MAX_BUCKETS;

impl Default for Builder {
    fn default() -> Self {
        Builder {
            target: Target::Memory,
            prefix: "flux".to_owned(),
            deadline: DEFAULT_DEADLINE,
            policy: FailurePolicy::Open,
            breaker: BreakerConfig::default(),
            proxies: Vec::new(),
            client_ip_header: ClientIpHeader::default(),
            exempt_ips: Vec::new(),
            shadow: false,
            deny: None,
            clock: None,
            deny_cache: true,
            from_env: false,
            overrides_file: None,
            key_secret: None,
            clear_keys: false,
            memory_max_buckets: DEFAULT_MEMORY_MAX_BUCKETS,
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
    /// | `FLUX_CLIENT_IP_HEADER` | the one header believed from them: `x-forwarded-for`, `forwarded` or `x-real-ip` | `x-forwarded-for` |
    /// | `FLUX_DENY_CACHE` | `off` disables the per-instance cache of Redis' denials | `on` |
    /// | `FLUX_SHADOW` | `on`: every limit decides and counts but never denies | `off` |
    /// | `FLUX_EXEMPT_IPS` | comma-separated IPs/CIDRs whose requests skip every limit | none |
    /// | `FLUX_OVERRIDES` | in-memory backend: TOML file of overrides ([`Builder::overrides_file`]) | none |
    /// | `FLUX_KEY_SECRET` | secret of the digests client keys are stored as in Redis (16+ bytes, the same on every instance) | a public default |
    /// | `FLUX_CLEAR_KEYS` | `on`: client keys appear in clear in Redis key names (to debug) | `off` |
    /// | `FLUX_MEMORY_MAX_BUCKETS` | most buckets held in process memory ([`Builder::memory_max_buckets`]) | `1000000` |
    pub fn from_env() -> Result<Builder, Error> {
        Builder::from_vars(|name| std::env::var(name).ok())
    }

    /// [`Builder::from_env`] over any source of variables.
    fn from_vars(lookup: impl Fn(&str) -> Option<String>) -> Result<Builder, Error> {
        let var = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
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
                Error::config(
                    ConfigOption::Deadline,
                    format!("FLUX_DEADLINE_MS={ms:?} is not a whole number of milliseconds"),
                )
            })?;
            builder = builder.deadline(Duration::from_millis(ms));
        }
        if let Some(policy) = var("FLUX_FAILURE_POLICY") {
            builder = builder.failure_policy(policy.parse()?);
        }
        if let Some(switch) = var("FLUX_DENY_CACHE") {
            builder = builder.deny_cache(on_off(ConfigOption::DenyCache, &switch)?);
        }
        if let Some(switch) = var("FLUX_SHADOW") {
            builder = builder.shadow(on_off(ConfigOption::Shadow, &switch)?);
        }
        if let Some(ips) = var("FLUX_EXEMPT_IPS") {
            builder = builder.exempt_ips(ips.split(',').map(str::trim));
        }
        if let Some(path) = var("FLUX_OVERRIDES") {
            builder = builder.overrides_file(path.trim());
        }
        if let Some(max) = var("FLUX_MEMORY_MAX_BUCKETS") {
            let max = max.trim().parse().map_err(|_| {
                Error::config(
                    ConfigOption::MemoryMaxBuckets,
                    format!("FLUX_MEMORY_MAX_BUCKETS={max:?} is not a whole number of buckets"),
                )
            })?;
            builder = builder.memory_max_buckets(max);
        }
        if let Some(proxies) = var("FLUX_TRUSTED_PROXIES") {
            builder = builder.trusted_proxies(proxies.split(',').map(str::trim));
        }
        if let Some(header) = var("FLUX_CLIENT_IP_HEADER") {
            builder = builder.client_ip_header(header.parse()?);
        }
        // Taken as it is (spaces and all): a secret is bytes, not a word to tidy.
        if let Some(secret) = var("FLUX_KEY_SECRET") {
            builder = builder.key_secret(secret);
        }
        if let Some(switch) = var("FLUX_CLEAR_KEYS") {
            builder = builder.clear_keys(on_off(ConfigOption::ClearKeys, &switch)?);
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
    pub fn breaker(mut self, config: BreakerConfig) -> Self {
        self.breaker = config;
        self
    }

    /// Proxies (IP addresses or CIDR networks) whose forwarding header (the one
    /// [`Builder::client_ip_header`] names, `X-Forwarded-For` by default) is believed by
    /// `key = "ip"` and [`Builder::exempt_ips`]. The client is the rightmost address of that
    /// header not in this list.
    pub fn trusted_proxies<I, S>(mut self, proxies: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.proxies = proxies.into_iter().map(Into::into).collect();
        self
    }

    /// The one header believed from a [trusted proxy](Builder::trusted_proxies) (default
    /// [`ClientIpHeader::XForwardedFor`], what the shipped nginx configurations set); the
    /// other forwarding headers are never read. Configure the proxy to overwrite (or append
    /// to) this header and to clear the others: a header it passes through untouched is the
    /// client's to write.
    ///
    /// ```
    /// use flux::Flux;
    /// use flux::config::ClientIpHeader;
    ///
    /// // Behind a proxy that sets `X-Real-IP: $remote_addr` and clears the others.
    /// let flux = Flux::builder()
    ///     .trusted_proxies(["10.0.0.0/8"])
    ///     .client_ip_header(ClientIpHeader::XRealIp)
    ///     .build()?;
    /// # Ok::<(), flux::Error>(())
    /// ```
    pub fn client_ip_header(mut self, header: ClientIpHeader) -> Self {
        self.client_ip_header = header;
        self
    }

    /// Requests from these clients (IP addresses or CIDR networks, such as health checkers or
    /// the office network) skip every limit of `#[rate_limit]` handlers: they never reach
    /// Redis or the deny cache, and are counted `exempt`. The client is the address
    /// `key = "ip"` would use (trusted proxies apply); handlers keyed otherwise need the
    /// peer address too (`into_make_service_with_connect_info`) for this to apply.
    pub fn exempt_ips<I, S>(mut self, ips: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.exempt_ips = ips.into_iter().map(Into::into).collect();
        self
    }

    /// Shadow mode for every limit: checks decide and charge exactly as when enforcing, and
    /// count what they would deny as `shadow_denied`, but admit every request (without
    /// RateLimit header fields: clients see what they saw before the limit). For rolling out
    /// a new limit; `#[rate_limit(mode = "shadow")]` does it for one handler.
    pub fn shadow(mut self, shadow: bool) -> Self {
        self.shadow = shadow;
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

    /// The secret under which client keys are digested in Redis (default: a public one).
    ///
    /// Redis never holds a client key as it came (an address, a token, a user id): every
    /// bucket, slot set and per-key override is stored under HMAC-SHA-256 of the key, so
    /// `SCAN`, `MONITOR`, the slow log and backups show digests. Without a secret of your own
    /// a digest still hides a token, but a key from a small set (an IPv4 address, a numeric
    /// id) can be found by digesting every candidate; with one, it cannot. Every instance,
    /// and the `flux` tool, must use the same secret (they would not find each other's
    /// buckets otherwise); changing it starts every bucket afresh once. At least 16 bytes.
    pub fn key_secret(mut self, secret: impl AsRef<[u8]>) -> Self {
        self.key_secret = Some(secret.as_ref().to_vec());
        self
    }

    /// Whether client keys appear in clear in Redis key names and override fields (default
    /// off: digests, see [`key_secret`](Self::key_secret)). For debugging: a bucket can
    /// then be found by its client's address. Instances must agree, as for the secret.
    pub fn clear_keys(mut self, clear: bool) -> Self {
        self.clear_keys = clear;
        self
    }

    /// The in-memory backend's overrides: a TOML file of `[[override]]` entries (`limit`,
    /// `rate` or `"off"`, optional `burst` and `key`), read at build and again within a
    /// second of each change. A file that is missing or malformed is reported and holds no
    /// overrides; nothing fails. Ignored (with a warning) on Redis, where overrides live in
    /// Redis. See the README, "Changing limits at runtime".
    pub fn overrides_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.overrides_file = Some(path.into());
        self
    }

    /// Most buckets held in process memory, by the in-memory backend or the `Local`
    /// fallback (default [`DEFAULT_MEMORY_MAX_BUCKETS`], at least
    /// [`MIN_MEMORY_MAX_BUCKETS`]). Buckets leave once full again; past the cap, a new one
    /// evicts the bucket nearest to full among a few sampled (its client's next request
    /// finds a full bucket), counted by `flux_memory_evictions_total`. The cap is split
    /// evenly over the store's 64 shards. A bucket costs 99-116 bytes with IP keys, more
    /// with long ones (see the README, "Buckets in process memory").
    ///
    /// ```
    /// let flux = flux::Flux::builder().memory_max_buckets(100_000).build()?;
    /// assert_eq!(flux.local_buckets(), 0);
    /// # Ok::<(), flux::Error>(())
    /// ```
    pub fn memory_max_buckets(mut self, max: usize) -> Self {
        self.memory_max_buckets = max;
        self
    }

    /// The clock of the in-memory backend and of the `Local` fallback (tests drive time with
    /// a [`ManualClock`](crate::clock::ManualClock)). Redis always uses its own clock.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Some(Box::new(clock));
        self
    }

    /// Builds the limiter. Connections to Redis are made on first use, so this neither
    /// blocks nor fails when Redis is down; see [`Flux::ping`] for a startup check.
    pub fn build(self) -> Result<Flux, Error> {
        if self.prefix.contains(['{', '}']) {
            return Err(Error::config(
                ConfigOption::KeyPrefix,
                format!(
                    "key prefix {:?} may not contain '{{' or '}}' (they delimit the Redis Cluster hash tag)",
                    self.prefix
                ),
            ));
        }
        if self.deadline.is_zero() {
            return Err(Error::config(
                ConfigOption::Deadline,
                "the deadline must be longer than zero",
            ));
        }
        if self.memory_max_buckets < MIN_MEMORY_MAX_BUCKETS {
            return Err(Error::config(
                ConfigOption::MemoryMaxBuckets,
                format!(
                    "a cap of {} buckets in memory is below the least of {MIN_MEMORY_MAX_BUCKETS}",
                    self.memory_max_buckets
                ),
            ));
        }
        let at_rest = self.at_rest()?;
        let proxies = TrustedProxies::parse(&self.proxies)?.reading(self.client_ip_header);
        let exempt_ips = IpSet::parse(&self.exempt_ips, "exempt address", ConfigOption::ExemptIps)?;
        let clock = self
            .clock
            .unwrap_or_else(|| Box::new(MonotonicClock::default()));
        let local = MemoryStore::new(clock, self.memory_max_buckets);
        let (store, breaker) = match &self.target {
            Target::Memory => (Store::Memory(local.clone()), None),
            Target::Redis(url) => {
                let breaker = Breaker::new(self.breaker, self.deadline, 1);
                let store = RedisStore::single(url, self.deadline)?.with_keys(at_rest);
                (Store::Redis(Box::new(store)), Some(Arc::new(breaker)))
            }
            Target::Cluster(nodes) if nodes.is_empty() => {
                return Err(Error::config(
                    ConfigOption::RedisCluster,
                    "a Redis Cluster needs at least one node URL",
                ));
            }
            Target::Cluster(nodes) => {
                let breaker = Arc::new(Breaker::new(self.breaker, self.deadline, NODE_CIRCUITS));
                let store = RedisStore::cluster(nodes, self.deadline, Arc::clone(&breaker))?
                    .with_keys(at_rest);
                (Store::Redis(Box::new(store)), Some(breaker))
            }
        };
        let remote = store.is_remote();
        if self.from_env && !remote {
            tracing::warn!(
                target: "flux",
                "FLUX_REDIS_URL is not set: using the in-memory backend, so rate limits hold per process, \
                 not across instances"
            );
        }
        // Runtime overrides: the file is read now, so the first check sees it; Redis' are
        // read by the background task, started now if there is a runtime.
        if remote && let Some(path) = &self.overrides_file {
            tracing::warn!(target: "flux", "overrides file {} ignored: on Redis, overrides are stored in Redis", path.display());
        }
        let overrides = Overrides::new(self.overrides_file.filter(|_| !remote));
        if let Some(table) = overrides::read_file(&overrides) {
            overrides.replace(table);
        }
        let flux = Flux::new(Inner {
            store: Arc::new(store),
            local,
            breaker,
            fleet: Arc::new(Fleet::new()),
            leases: Leases::new(),
            // Only a remote store's denials are worth remembering: memory answers as fast
            // as the cache.
            deny_cache: (self.deny_cache && remote)
                .then(|| Arc::new(DenyCache::new(self.deadline))),
            overrides: Arc::new(overrides),
            prefix: self.prefix,
            deadline: self.deadline,
            policy: self.policy,
            proxies,
            exempt_ips,
            shadow: self.shadow,
            deny: self.deny,
        });
        if flux.inner.overrides.claim_start() {
            flux.start_runtime();
        }
        Ok(flux)
    }

    /// Builds the limiter and makes it the process-wide one that `#[rate_limit]` uses.
    ///
    /// Call it once at startup, before the first check; otherwise the first check installs
    /// one from the environment ([`Builder::from_env`]) and this returns
    /// [`Error::AlreadyInstalled`].
    pub fn install(self) -> Result<Flux, Error> {
        let flux = self.build()?;
        Flux::install_global(flux.clone())?;
        Ok(flux)
    }
}

impl Builder {
    /// How the Redis store keeps client keys, from the secret and the switch.
    fn at_rest(&self) -> Result<AtRest, Error> {
        match (&self.key_secret, self.clear_keys) {
            (Some(_), true) => Err(Error::config(
                ConfigOption::ClearKeys,
                "client keys in clear take no secret: set FLUX_CLEAR_KEYS (clear_keys) or \
                 FLUX_KEY_SECRET (key_secret), not both",
            )),
            (None, true) => Ok(AtRest::Clear),
            (Some(secret), false) if secret.len() < MIN_KEY_SECRET => Err(Error::config(
                ConfigOption::KeySecret,
                format!(
                    "the key secret is {} bytes long; it must be at least {MIN_KEY_SECRET} \
                     (a random one: `openssl rand -hex 32`)",
                    secret.len()
                ),
            )),
            (Some(secret), false) => Ok(AtRest::digest(secret)),
            (None, false) => Ok(AtRest::digest(DEFAULT_KEY_SECRET)),
        }
    }
}

/// Shortest key secret accepted: 128 bits, as many as the digest keeps.
const MIN_KEY_SECRET: usize = 16;

/// An on/off environment switch.
fn on_off(option: ConfigOption, value: &str) -> Result<bool, Error> {
    match value.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "1" | "yes" => Ok(true),
        "off" | "false" | "0" | "no" => Ok(false),
        other => Err(Error::config(
            option,
            format!(
                "{}={other:?}: expected \"on\" or \"off\"",
                option.env_var().unwrap_or_default()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The configuration error of building from these variables.
    fn env_error(vars: &[(&str, &str)]) -> crate::error::ConfigError {
        let lookup = |name: &str| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        };
        match Builder::from_vars(lookup).and_then(Builder::build) {
            Err(Error::Config(e)) => e,
            other => panic!("{vars:?}: expected a configuration error, got {other:?}"),
        }
    }

    #[test]
    fn a_short_key_secret_is_refused_without_being_shown() {
        let e = env_error(&[("FLUX_KEY_SECRET", "hunter2hunter2")]);
        assert_eq!(e.option(), ConfigOption::KeySecret);
        assert!(e.reason().contains("14 bytes"), "{e}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let e = env_error(&[
            ("FLUX_KEY_SECRET", "0123456789abcdef0123"),
            ("FLUX_CLEAR_KEYS", "on"),
        ]);
        assert_eq!(e.option(), ConfigOption::ClearKeys);
        assert!(!e.to_string().contains("0123456789"), "{e}");
    }

    #[test]
    fn a_bad_variable_is_named_with_its_value() {
        for (name, value, option) in [
            ("FLUX_DEADLINE_MS", "5O", ConfigOption::Deadline),
            ("FLUX_DEADLINE_MS", "0", ConfigOption::Deadline),
            ("FLUX_FAILURE_POLICY", "opne", ConfigOption::FailurePolicy),
            ("FLUX_DENY_CACHE", "maybe", ConfigOption::DenyCache),
            ("FLUX_SHADOW", "yes please", ConfigOption::Shadow),
            ("FLUX_CLEAR_KEYS", "maybe", ConfigOption::ClearKeys),
            (
                "FLUX_TRUSTED_PROXIES",
                "10.0.0.0/8,lb",
                ConfigOption::TrustedProxies,
            ),
            ("FLUX_EXEMPT_IPS", "office", ConfigOption::ExemptIps),
            (
                "FLUX_CLIENT_IP_HEADER",
                "x-client-ip",
                ConfigOption::ClientIpHeader,
            ),
            (
                "FLUX_MEMORY_MAX_BUCKETS",
                "lots",
                ConfigOption::MemoryMaxBuckets,
            ),
            (
                "FLUX_MEMORY_MAX_BUCKETS",
                "100",
                ConfigOption::MemoryMaxBuckets,
            ),
            ("FLUX_KEY_PREFIX", "a{b}", ConfigOption::KeyPrefix),
            ("FLUX_REDIS_URL", "http://localhost", ConfigOption::RedisUrl),
        ] {
            let e = env_error(&[(name, value)]);
            assert_eq!(e.option(), option, "{name}={value}: {e}");
            assert_eq!(e.option().env_var(), Some(name));
            // The reason names the value given (the zero deadline says why instead).
            assert!(
                e.reason()
                    .contains(value.split(',').next_back().unwrap_or(value))
                    || value == "0",
                "{name}={value}: {e}"
            );
        }
    }

    #[test]
    fn blank_variables_are_unset() {
        let lookup = |name: &str| (name == "FLUX_DEADLINE_MS").then(|| "  ".to_owned());
        let flux = Builder::from_vars(lookup)
            .and_then(Builder::build)
            .expect("a blank variable is unset");
        assert_eq!(flux.inner.deadline, DEFAULT_DEADLINE);
    }

    #[test]
    fn builder_mistakes_carry_their_option() {
        let error = |builder: Builder| match builder.build() {
            Err(Error::Config(e)) => e.option(),
            other => panic!("expected a configuration error, got {other:?}"),
        };
        assert_eq!(
            error(Builder::default().redis_cluster(Vec::<String>::new())),
            ConfigOption::RedisCluster
        );
        assert_eq!(
            error(Builder::default().deadline(Duration::ZERO)),
            ConfigOption::Deadline
        );
        assert_eq!(
            error(Builder::default().exempt_ips(["300.1.1.1"])),
            ConfigOption::ExemptIps
        );
    }
}
