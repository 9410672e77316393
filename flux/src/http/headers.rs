//! The RateLimit header fields and `Retry-After`, and the default answer to a denial.
//!
//! Header fields follow the IETF draft "RateLimit header fields for HTTP"
//! (draft-ietf-httpapi-ratelimit-headers-10): `RateLimit-Policy` states the deciding limit
//! (`q` tokens per `w` seconds) and `RateLimit` its state (`r` remaining, `t` seconds until
//! it is full). A denial adds `Retry-After` in whole seconds, rounded up.

use std::fmt::Write as _;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use super::response::unavailable;
use crate::model::decision::{Decision, Source};
use crate::model::limit::Limit;

/// `RateLimit` (draft-ietf-httpapi-ratelimit-headers).
pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
/// `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers).
pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

/// `d` in whole seconds, rounded up.
pub(crate) fn ceil_secs(d: Duration) -> u64 {
    d.as_micros().div_ceil(1_000_000) as u64
}

/// Writes the policy name shown to clients, quoted: the last `::` segment of the limit's
/// name, reduced to the characters a Structured Field string may hold unescaped.
fn push_policy_name(out: &mut String, limit: &Limit) {
    let name = limit.name().rsplit("::").next().unwrap_or_default();
    out.push('"');
    out.extend(
        name.chars()
            .filter(|c| (c.is_ascii_graphic() && *c != '"' && *c != '\\') || *c == ' ')
            .take(64),
    );
    out.push('"');
}

impl Decision {
    /// Adds the RateLimit header fields (and `Retry-After` on a denial) for this decision,
    /// whose deciding limit is `limits[self.index]`. Decisions of a failure policy carry
    /// no bucket state and add nothing, nor do refusals of an unadmissible cost (no retry
    /// would pass), nor exempt ones (an exempt client, limits turned off by an override).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), flux::Error> {
    /// use flux::{Flux, Limit, Rate};
    /// use http::HeaderMap;
    ///
    /// static API: Limit = Limit::new("api", Rate::per_second::<10>());
    /// let decision = Flux::builder().build()?.check("k", &API).await;
    /// let mut headers = HeaderMap::new();
    /// decision.write_headers(std::slice::from_ref(&API), &mut headers);
    /// assert_eq!(headers["ratelimit-policy"], "\"api\";q=10;w=1");
    /// assert_eq!(headers["ratelimit"], "\"api\";r=9;t=1");
    /// # Ok(()) }
    /// ```
    pub fn write_headers(&self, limits: &[Limit], headers: &mut HeaderMap) {
        if matches!(
            self.source,
            Source::FailOpen | Source::FailClosed | Source::Unadmissible | Source::Exempt
        ) {
            return;
        }
        let Some(limit) = limits.get(self.index) else {
            return;
        };
        // One buffer for both fields: the name, then each field's parameters after it.
        let mut value = String::with_capacity(96);
        push_policy_name(&mut value, limit);
        let name_len = value.len();
        // Writing to a String cannot fail.
        let _ = write!(
            value,
            ";q={};w={}",
            self.capacity,
            ceil_secs(self.window).max(1)
        );
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(RATELIMIT_POLICY.clone(), v);
        }
        value.truncate(name_len);
        let _ = write!(
            value,
            ";r={};t={}",
            self.remaining,
            ceil_secs(self.reset_after)
        );
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(RATELIMIT.clone(), v);
        }
        if !self.allowed {
            headers.insert(
                http::header::RETRY_AFTER,
                HeaderValue::from(ceil_secs(self.retry_after)),
            );
        }
    }

    /// The default answer to a denied request: `429 Too Many Requests` with `Retry-After`
    /// and the RateLimit fields, or `503 Service Unavailable` when the `Closed` failure
    /// policy refused it.
    pub fn deny_response(&self, limits: &[Limit]) -> Response {
        if self.source == Source::FailClosed {
            return unavailable();
        }
        let secs = ceil_secs(self.retry_after);
        let mut response = (
            StatusCode::TOO_MANY_REQUESTS,
            format!("Too Many Requests: retry after {secs} s\n"),
        )
            .into_response();
        self.write_headers(limits, response.headers_mut());
        response
    }
}
