//! The answers Flux gives instead of the handler's: 429 for a denial (or the limiter's own
//! `deny_response`), 503 under the `Closed` policy, 400 and 500 when a request's key cannot
//! be found.

use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};

use crate::Flux;
use crate::concurrency::{CONCURRENCY_RETRY_AFTER, ConcurrencyLimited};
use crate::model::cost::Unadmissible;
use crate::model::decision::{Decision, Source};
use crate::model::limit::Limit;

/// The answer of the `Closed` failure policy: `503 Service Unavailable`.
pub(crate) fn unavailable() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "Service Unavailable: the rate limiter cannot reach its store\n",
    )
        .into_response()
}

/// The response for a denied request, through the limiter's `deny_response` override if
/// one is set (its own headers win; missing RateLimit fields are added).
pub(crate) fn denied(flux: &Flux, decision: &Decision, limits: &[Limit]) -> Response {
    match flux.deny_override() {
        Some(respond) => {
            let mut response = respond(decision);
            let mut fields = HeaderMap::new();
            decision.write_headers(limits, &mut fields);
            for (name, value) in fields {
                if let Some(name) = name.filter(|n| !response.headers().contains_key(n)) {
                    response.headers_mut().insert(name, value);
                }
            }
            response
        }
        None => decision.deny_response(limits),
    }
}

/// The response to a request whose computed cost no bucket can admit: the limiter's
/// `deny_response` if it has one (given a decision whose source is
/// [`Source::Unadmissible`]), else `429 Too Many Requests` whose body gives the reason,
/// without `Retry-After` (no retry would pass).
pub(crate) fn unadmissible(flux: &Flux, refused: &Unadmissible, decision: &Decision) -> Response {
    match flux.deny_override() {
        Some(respond) => respond(decision),
        None => (
            StatusCode::TOO_MANY_REQUESTS,
            format!("Too Many Requests: {}\n", refused.reason()),
        )
            .into_response(),
    }
}

/// A request refused by a concurrency limit: `429 Too Many Requests` with `Retry-After: 1`
/// ([`CONCURRENCY_RETRY_AFTER`]), or `503` for the `Closed` policy.
impl IntoResponse for ConcurrencyLimited {
    fn into_response(self) -> Response {
        if self.source() == Source::FailClosed {
            return unavailable();
        }
        let mut response = (
            StatusCode::TOO_MANY_REQUESTS,
            format!("Too Many Requests: {self}\n"),
        )
            .into_response();
        response.headers_mut().insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from(CONCURRENCY_RETRY_AFTER.as_secs()),
        );
        response
    }
}

/// The answer to an ip-keyed request without a peer address (logged once).
pub(crate) fn no_peer_address() -> Response {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        tracing::error!(
            target: "flux",
            "#[rate_limit(key = \"ip\")] needs the peer address, but the request has none: serve the \
             router with `axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>())`. \
             Requests to ip-keyed handlers are answered 500 until then."
        );
    });
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        "rate limiting by client address is misconfigured: the server has no peer address \
         (use into_make_service_with_connect_info)\n",
    )
        .into_response()
}

/// The answer to a request whose key function found no key.
pub(crate) fn no_key() -> Response {
    tracing::debug!(target: "flux", "request without a rate-limit key");
    (
        StatusCode::BAD_REQUEST,
        "the request does not say who sends it (no rate-limit key)\n",
    )
        .into_response()
}

pub(crate) fn missing_header(name: &str) -> Response {
    tracing::debug!(target: "flux", header = name, "request without its rate-limit key header");
    (
        StatusCode::BAD_REQUEST,
        format!("missing required header `{name}` (it identifies the client for rate limiting)\n"),
    )
        .into_response()
}
