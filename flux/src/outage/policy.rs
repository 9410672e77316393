//! `FailurePolicy`: what a check does when Redis cannot answer.

use std::fmt;
use std::str::FromStr;

use crate::error::{ConfigOption, Error};

/// What a check does when Redis cannot answer within the deadline (or the breaker is open).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
#[non_exhaustive]
pub enum FailurePolicy {
    /// Admit the request unchecked: the service keeps serving (the default).
    #[default]
    Open,
    /// Refuse the request; HTTP handlers answer `503 Service Unavailable`.
    Closed,
    /// Decide with per-process buckets until Redis is back, each instance at its share of
    /// every limit (`1/N` of the rate and of the burst, rounded up, with `N` the live
    /// instances its heartbeats last counted), so that the fleet stays near the limit.
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
            other => Err(Error::config(
                ConfigOption::FailurePolicy,
                format!(
                    "unknown failure policy {other:?}: expected \"open\", \"closed\" or \"local\""
                ),
            )),
        }
    }
}
