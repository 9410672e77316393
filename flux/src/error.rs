//! What configuring Flux, or calling its store, can go wrong with: [`Error`] and the data it
//! carries. Nothing here names a dependency's type, so a new major version of the Redis
//! client is not a new major version of Flux.
//!
//! ```
//! use flux::error::{ConfigError, ConfigOption, Error};
//!
//! let err = flux::Flux::builder().key_prefix("a{b}").build().unwrap_err();
//! let Error::Config(config) = &err else { panic!("{err}") };
//! assert_eq!(config.option(), ConfigOption::KeyPrefix);
//! assert!(config.reason().contains("may not contain"));
//! assert_eq!(config.option().env_var(), Some("FLUX_KEY_PREFIX"));
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Errors of configuration and of the store (Redis).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Error {
    /// A setting is invalid: which one, and why.
    Config(ConfigError),
    /// The store answered with an error, or the connection to it failed.
    Backend(BackendError),
    /// The store did not answer within the deadline.
    Timeout(Duration),
    /// The store answered something the script never returns.
    Protocol(String),
    /// [`Builder::install`](crate::Builder::install) was called when a limiter was already
    /// installed (or in use).
    AlreadyInstalled,
}

impl Error {
    /// A configuration error of `option`, for `reason`.
    pub(crate) fn config(option: ConfigOption, reason: impl Into<String>) -> Error {
        Error::Config(ConfigError {
            option,
            reason: reason.into(),
        })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(e) => write!(f, "flux configuration: {e}"),
            Error::Backend(e) => write!(f, "Redis: {e}"),
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
            Error::Config(e) => Some(e),
            Error::Backend(e) => Some(e),
            _ => None,
        }
    }
}

/// An invalid setting: which [`ConfigOption`] and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    option: ConfigOption,
    reason: String,
}

impl ConfigError {
    /// The setting at fault.
    pub fn option(&self) -> ConfigOption {
        self.option
    }

    /// Why it was refused, in words (it names the value given).
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// The settings a [`ConfigError`] can be about: the [`Builder`](crate::Builder)'s options
/// and what an operation needs of the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConfigOption {
    /// [`Builder::redis`](crate::Builder::redis): the Redis URL.
    RedisUrl,
    /// [`Builder::redis_cluster`](crate::Builder::redis_cluster): the cluster's node URLs.
    RedisCluster,
    /// [`Builder::key_prefix`](crate::Builder::key_prefix).
    KeyPrefix,
    /// [`Builder::deadline`](crate::Builder::deadline).
    Deadline,
    /// [`Builder::failure_policy`](crate::Builder::failure_policy).
    FailurePolicy,
    /// [`Builder::trusted_proxies`](crate::Builder::trusted_proxies).
    TrustedProxies,
    /// [`Builder::client_ip_header`](crate::Builder::client_ip_header): the one forwarding
    /// header believed from a trusted proxy.
    ClientIpHeader,
    /// [`Builder::exempt_ips`](crate::Builder::exempt_ips).
    ExemptIps,
    /// [`Builder::deny_cache`](crate::Builder::deny_cache).
    DenyCache,
    /// [`Builder::shadow`](crate::Builder::shadow).
    Shadow,
    /// [`Builder::key_secret`](crate::Builder::key_secret).
    KeySecret,
    /// [`Builder::clear_keys`](crate::Builder::clear_keys).
    ClearKeys,
    /// [`Builder::memory_max_buckets`](crate::Builder::memory_max_buckets).
    MemoryMaxBuckets,
    /// An operation needs a backend the limiter does not have (overrides are stored in
    /// Redis: the in-memory backend has none to set).
    Backend,
    /// An [`Override`](crate::overrides::Override) that cannot be stored as given.
    Override,
}

impl ConfigOption {
    /// The environment variable of this setting ([`Builder::from_env`](crate::Builder::from_env)), if it has one.
    pub const fn env_var(self) -> Option<&'static str> {
        match self {
            ConfigOption::RedisUrl => Some("FLUX_REDIS_URL"),
            ConfigOption::RedisCluster => Some("FLUX_REDIS_CLUSTER"),
            ConfigOption::KeyPrefix => Some("FLUX_KEY_PREFIX"),
            ConfigOption::Deadline => Some("FLUX_DEADLINE_MS"),
            ConfigOption::FailurePolicy => Some("FLUX_FAILURE_POLICY"),
            ConfigOption::TrustedProxies => Some("FLUX_TRUSTED_PROXIES"),
            ConfigOption::ClientIpHeader => Some("FLUX_CLIENT_IP_HEADER"),
            ConfigOption::ExemptIps => Some("FLUX_EXEMPT_IPS"),
            ConfigOption::DenyCache => Some("FLUX_DENY_CACHE"),
            ConfigOption::Shadow => Some("FLUX_SHADOW"),
            ConfigOption::KeySecret => Some("FLUX_KEY_SECRET"),
            ConfigOption::ClearKeys => Some("FLUX_CLEAR_KEYS"),
            ConfigOption::MemoryMaxBuckets => Some("FLUX_MEMORY_MAX_BUCKETS"),
            ConfigOption::Backend | ConfigOption::Override => None,
        }
    }
}

/// What the store said when a call failed: the kind of failure, Redis' error code when it
/// answered with one (`NOSCRIPT`, `READONLY`, `WRONGTYPE`, ...), and its message. The
/// client library's own error is its [`source`](std::error::Error::source).
#[derive(Clone)]
pub struct BackendError {
    kind: BackendErrorKind,
    code: Option<String>,
    message: String,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

/// How a call to the store failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BackendErrorKind {
    /// The connection could not be made, or broke (refused, reset, dropped, I/O).
    Connection,
    /// The server answered with an error ([`BackendError::code`] says which).
    Server,
    /// Anything else (a client-side failure, an answer that could not be read).
    Other,
}

impl BackendError {
    pub(crate) fn new(
        kind: BackendErrorKind,
        code: Option<String>,
        message: String,
        source: Option<Arc<dyn std::error::Error + Send + Sync>>,
    ) -> BackendError {
        BackendError {
            kind,
            code,
            message,
            source,
        }
    }

    /// How the call failed.
    pub fn kind(&self) -> BackendErrorKind {
        self.kind
    }

    /// The server's error code (`READONLY`, `NOSCRIPT`, ...), when it answered with one.
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }
}

impl fmt::Debug for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendError")
            .field("kind", &self.kind)
            .field("code", &self.code)
            .field("message", &self.message)
            .finish()
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for BackendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}
