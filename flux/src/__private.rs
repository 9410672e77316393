//! Not public API: what `#[rate_limit]` and `#[concurrency_limit]` expand to. Names here may change in any release.
#![allow(clippy::result_large_err)] // rejections are responses, built once per request

use std::borrow::{Borrow, Cow};
use std::convert::Infallible;
use std::future::Future;

use axum::response::IntoResponse;

pub use crate::concurrency::ConcurrencyLimit;
pub use crate::http::client::{HeaderKey, RequestHeaders, Scope};
pub use crate::http::flow::Options;
pub use crate::model::cost::{CostValue, Limits, Unadmissible};
pub use crate::model::key::{Key, ToKey};
pub use crate::model::limit::Limit;
pub use crate::outage::policy::FailurePolicy;
// Switches batches between one script call and a pipeline, for side-by-side benchmarks.
pub use crate::store::redis::set_one_call_batches;
pub use axum::response::Response;

use crate::http::flow::{self, Verdict};
use crate::model::decision::RateLimited;

/// The `static` of a `#[rate_limit]` limit whose arguments are all literals, validated at
/// compile time (a bad one fails the build: the `static` is evaluated at compile time).
pub const fn limit(name: &'static str, count: u32, period_us: u64, burst: u32, cost: u32) -> Limit {
    Limit::from_macro(name, count, period_us, burst, cost)
}

/// The `static` of a `#[concurrency_limit]`, validated at compile time.
pub const fn concurrency(name: &'static str, max: u32, lease_ms: u64) -> ConcurrencyLimit {
    ConcurrencyLimit::from_macro(name, max, lease_ms)
}

/// The limits of a stack whose limits and costs are all literals: its `static`s.
pub fn fixed(limits: &'static [Limit]) -> Limits {
    Ok(Cow::Borrowed(limits))
}

/// The limit of `limit = <expression>` (anything that borrows as a `Limit`), or one of the
/// stack's `static`s when another limit of the stack is computed.
pub fn limit_of<L: Borrow<Limit> + ?Sized>(limit: &L) -> Limit {
    crate::model::cost::owned(limit)
}

/// `limit` with `cost = <expression>` (any primitive integer), or with a literal cost that
/// could not be checked at compile time (`limit = ...` gives the burst only at run time).
pub fn with_cost<C: CostValue>(limit: Limit, cost: C) -> Result<Limit, Unadmissible> {
    crate::model::cost::with_cost(limit, cost)
}

/// The limits of a stack with computed limits or costs.
pub fn per_request<const N: usize>(limits: [Result<Limit, Unadmissible>; N]) -> Limits {
    crate::model::cost::collect(limits)
}

/// The key of `key = "global"`.
pub fn key_global() -> Key {
    Key::global()
}

/// The key of `key = <expression>`.
pub fn key_of<T: ToKey + ?Sized>(value: &T) -> Key {
    value.to_key()
}

/// The key of `key = "ip"`: the client's address from the request's scope.
pub fn key_ip(scope: &Scope<true>) -> Result<Key, Response> {
    scope.ip_key()
}

/// The key of `key = "header:NAME"` (names up to 32 bytes).
pub fn key_header_packed<const A: u128, const B: u128>(
    header: HeaderKey<A, B>,
) -> Result<Key, Response> {
    header.key()
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

/// The body of a limited axum handler, on the limiter that serves the request: the request
/// flow (exempt, key, limits, check, slot), then the body with the RateLimit header fields
/// added to its response (not in shadow mode), or 429/503 without running it. The slot is
/// released when the response has been produced, or when this future is dropped or the body
/// panics (the guard's drop).
pub async fn http<R, F, const IP: bool>(
    scope: Scope<IP>,
    limits: Limits,
    concurrency: Option<&'static ConcurrencyLimit>,
    key: Result<Key, Response>,
    mut options: Options,
    body: F,
) -> Response
where
    F: Future<Output = R>,
    R: IntoResponse,
{
    options.exempt |= scope.is_exempt();
    let body = async { Ok::<_, Infallible>(body.await.into_response()) };
    let limits = limits.as_deref();
    match flow::serve(&scope.flux, limits, concurrency, || key, options, body).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// The check of a rate-limited plain `async fn`, on the process-wide limiter: `Err` on
/// denial (and under the `Closed` policy when Redis is unavailable).
pub async fn plain(limits: Limits, key: Key, options: Options) -> Result<(), RateLimited> {
    let flux = crate::Flux::global();
    let verdict = flow::admit(
        flux,
        limits.as_deref(),
        None,
        || Ok::<_, Infallible>(key),
        options,
    )
    .await;
    match verdict {
        Verdict::Admitted(_) => Ok(()),
        Verdict::Denied(decision) => decision.into_result().map(drop),
        Verdict::Unadmissible(decision, refused) => Err(refused.error(decision)),
        Verdict::Busy(_) => unreachable!("a plain fn has no concurrency limit"),
        Verdict::NoKey(never) => match never {},
    }
}
