//! `Error`: what configuring Flux or calling Redis can go wrong with.

use std::fmt;
use std::time::Duration;

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
    /// [`Builder::install`](crate::Builder::install) was called when a limiter was already installed (or in use).
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
