//! Not public API: what `#[rate_limit]` expands to. Names here may change in any release.
#![allow(clippy::result_large_err)] // rejections are responses, built once per request

use std::future::Future;

use axum::response::IntoResponse;

pub use crate::http::{ClientIp, HeaderKey, RequestHeaders};
pub use crate::{FailurePolicy, Key, Limit};
pub use axum::response::Response;

use crate::{RateLimited, ToKey};

/// The key of `key = "global"`.
pub fn key_global() -> Key {
    Key::global()
}

/// The key of `key = <expression>`.
pub fn key_of<T: ToKey + ?Sized>(value: &T) -> Key {
    value.to_key()
}

/// The key of `key = "ip"`.
pub fn key_ip(ip: ClientIp) -> Result<Key, Response> {
    Ok(ip.into_key())
}

/// The key of `key = "header:NAME"` (names up to 32 bytes).
pub fn key_header_packed<const A: u128, const B: u128>(
    header: HeaderKey<A, B>,
) -> Result<Key, Response> {
    Ok(header.0)
}

/// The key of `key = "header:NAME"`.
pub fn key_header(headers: &RequestHeaders, name: &'static str) -> Result<Key, Response> {
    headers.key(name)
}

/// Pins an async block's output type to the handler's declared return type, so that `?`
/// and `.into()` in the body infer as they did before the rewrite.
pub fn typed<R, F: Future<Output = R>>(body: F) -> F {
    body
}

/// The body of a rate-limited axum handler: check, then run the handler's body and add the
/// RateLimit header fields to its response, or answer 429/503 without running it.
pub async fn http<R, F>(
    limits: &'static [Limit],
    key: Result<Key, Response>,
    on_error: Option<FailurePolicy>,
    body: F,
) -> Response
where
    F: Future<Output = R>,
    R: IntoResponse,
{
    let key = match key {
        Ok(key) => key,
        Err(response) => return response,
    };
    let flux = crate::Flux::global();
    let decision = flux.check_with_policy(&key, limits, on_error).await;
    if !decision.allowed {
        return crate::http::denied(flux, &decision, limits);
    }
    let mut response = body.await.into_response();
    decision.write_headers(limits, response.headers_mut());
    response
}

/// The check of a rate-limited plain `async fn`: `Err` on denial (and under the `Closed`
/// policy when Redis is unavailable).
pub async fn plain(
    limits: &'static [Limit],
    key: Key,
    on_error: Option<FailurePolicy>,
) -> Result<(), RateLimited> {
    crate::Flux::global()
        .check_with_policy(&key, limits, on_error)
        .await
        .into_result()
        .map(drop)
}
