//! Not public API: what `#[rate_limit]` and `#[concurrency_limit]` expand to. Names here may change in any release.
#![allow(clippy::result_large_err)] // rejections are responses, built once per request

use std::borrow::{Borrow, Cow};
use std::future::Future;

use axum::response::IntoResponse;

pub use crate::http::{HeaderKey, RequestHeaders, Scope};
pub use crate::per_request::{CostValue, Limits, Unadmissible};
pub use crate::{ConcurrencyLimit, FailurePolicy, Key, Limit};
pub use axum::response::Response;

use crate::{RateLimited, ToKey};

/// A check's options from the attribute: `on_error`, `mode` (shadow: `Some(true)`; enforce:
/// `Some(false)`; unset: the limiter's) and whether `exempt = EXPR` held for this call.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub on_error: Option<FailurePolicy>,
    pub shadow: Option<bool>,
    pub exempt: bool,
}

/// The limits of a stack whose limits and costs are all literals: its `static`s.
pub fn fixed(limits: &'static [Limit]) -> Limits {
    Ok(Cow::Borrowed(limits))
}

/// The limit of `limit = <expression>` (anything that borrows as a `Limit`), or one of the
/// stack's `static`s when another limit of the stack is computed.
pub fn limit_of<L: Borrow<Limit> + ?Sized>(limit: &L) -> Limit {
    crate::per_request::owned(limit)
}

/// `limit` with `cost = <expression>` (any primitive integer), or with a literal cost that
/// could not be checked at compile time (`limit = ...` gives the burst only at run time).
pub fn with_cost<C: CostValue>(limit: Limit, cost: C) -> Result<Limit, Unadmissible> {
    crate::per_request::with_cost(limit, cost)
}

/// The limits of a stack with computed limits or costs.
pub fn per_request<const N: usize>(limits: [Result<Limit, Unadmissible>; N]) -> Limits {
    crate::per_request::collect(limits)
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

/// The body of a limited axum handler, on the limiter that serves the request: an exempt
/// request runs the body unchecked; otherwise check the rate limits, then take a slot of
/// the concurrency limit (if any), then run the body and add the RateLimit header fields to
/// its response (not in shadow mode), or answer 429/503 without running it. The slot is
/// released when the response has been produced, or when this future is dropped or the body
/// panics (the guard's drop).
pub async fn http<R, F, const IP: bool>(
    scope: Scope<IP>,
    limits: Limits,
    concurrency: Option<&'static ConcurrencyLimit>,
    key: Result<Key, Response>,
    options: Options,
    body: F,
) -> Response
where
    F: Future<Output = R>,
    R: IntoResponse,
{
    let flux = &scope.flux;
    if options.exempt || scope.is_exempt() {
        flux.exempt(counted(&limits));
        return body.await.into_response();
    }
    let key = match key {
        Ok(key) => key,
        Err(response) => return response,
    };
    let shadow = options.shadow.unwrap_or_else(|| flux.is_shadow());
    let limits = match limits {
        Ok(limits) => limits,
        Err(unadmissible) => {
            let decision = unadmissible.decide(flux, shadow);
            if shadow {
                return body.await.into_response();
            }
            return unadmissible.response(flux, &decision);
        }
    };
    let limits = &*limits;
    let decision = flux
        .check_with(&key, limits, options.on_error, Some(shadow))
        .await;
    if !decision.allowed {
        return crate::http::denied(flux, &decision, limits);
    }
    let slot = match concurrency {
        Some(limit) => {
            match flux
                .acquire_with(&key, limit, options.on_error, Some(shadow))
                .await
            {
                Ok(slot) => Some(slot),
                Err(denied) => return denied.into_response(),
            }
        }
        None => None,
    };
    let mut response = body.await.into_response();
    drop(slot);
    if !shadow {
        decision.write_headers(limits, response.headers_mut());
    }
    response
}

/// The check of a rate-limited plain `async fn`, on the process-wide limiter: `Err` on
/// denial (and under the `Closed` policy when Redis is unavailable).
pub async fn plain(limits: Limits, key: Key, options: Options) -> Result<(), RateLimited> {
    let flux = crate::Flux::global();
    if options.exempt {
        flux.exempt(counted(&limits));
        return Ok(());
    }
    let limits = match limits {
        Ok(limits) => limits,
        Err(unadmissible) => {
            let shadow = options.shadow.unwrap_or_else(|| flux.is_shadow());
            let decision = unadmissible.decide(flux, shadow);
            return if shadow {
                Ok(())
            } else {
                Err(unadmissible.error(decision))
            };
        }
    };
    flux.check_with(&key, &limits, options.on_error, options.shadow)
        .await
        .into_result()
        .map(drop)
}

/// The limits an exempt request is counted under: the request's, or the one whose cost it
/// could not pay.
fn counted(limits: &Limits) -> &[Limit] {
    match limits {
        Ok(limits) => limits,
        Err(unadmissible) => std::slice::from_ref(unadmissible.limit()),
    }
}
