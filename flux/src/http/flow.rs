//! The request flow: the one sequence of steps that `#[rate_limit]` handlers, `FluxLayer`
//! and rate-limited plain functions all take, so a fix lands in every entry point at once.
//!
//! exempt? -> the key -> limits computed per request (a cost no bucket admits is refused)
//! -> the rate-limit check -> a concurrency slot -> run the body -> the RateLimit fields
//! (not in shadow mode, not for exempt requests) and the slot released.
//!
//! [`admit`] decides, [`Verdict`] says what, and each adapter turns a refusal into its own
//! answer: an HTTP response ([`respond`]) or a plain function's error.
#![allow(clippy::result_large_err)] // refusals are responses, built once per request

use std::future::Future;

use axum::response::{IntoResponse, Response};
use http::HeaderMap;

use super::response;
use crate::Flux;
use crate::concurrency::{ConcurrencyLimit, ConcurrencyLimited, Slot};
use crate::model::cost::Unadmissible;
use crate::model::decision::Decision;
use crate::model::key::Key;
use crate::model::limit::Limit;
use crate::outage::policy::FailurePolicy;

/// A request's options: `on_error` (the failure policy), `shadow` (`Some(true)`: decide
/// and count but never deny; unset: the limiter's) and whether the entry point found the
/// request exempt (`exempt = EXPR`, a layer's predicate, an exempt address).
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// The failure policy of this request's checks; `None`: the limiter's.
    pub on_error: Option<FailurePolicy>,
    /// Shadow mode for this request; `None`: the limiter's.
    pub shadow: Option<bool>,
    /// Whether the request skips every limit.
    pub exempt: bool,
}

/// What the flow decided before the body runs.
pub(crate) enum Verdict<'a, E> {
    /// Run the body, then [`Admitted::finish`].
    Admitted(Admitted),
    /// The request's key could not be found: the entry point's own answer.
    NoKey(E),
    /// A rate limit refused the request (or the `Closed` policy, with the store down).
    Denied(Decision),
    /// The request's computed cost can never be admitted.
    Unadmissible(Decision, &'a Unadmissible),
    /// The concurrency limit is full (or the `Closed` policy refused a slot).
    Busy(ConcurrencyLimited),
}

/// An admitted request: the decision whose fields its response carries (none for exempt
/// requests and in shadow mode) and the concurrency slot it holds while the body runs.
pub(crate) struct Admitted {
    decision: Option<Decision>,
    slot: Option<Slot>,
}

impl Admitted {
    fn unchecked() -> Admitted {
        Admitted {
            decision: None,
            slot: None,
        }
    }

    /// The body is done: releases the slot and adds the RateLimit fields of `limits` (the
    /// checked ones) to `headers`.
    pub(crate) fn finish(self, limits: &[Limit], headers: &mut HeaderMap) {
        drop(self.slot);
        if let Some(decision) = self.decision {
            decision.write_headers(limits, headers);
        }
    }
}

/// Decides a request: exempt, or its key (found only then, by `key`), its limits, the
/// rate-limit check and the concurrency slot, on `flux`.
pub(crate) async fn admit<'a, E>(
    flux: &Flux,
    limits: Result<&'a [Limit], &'a Unadmissible>,
    concurrency: Option<&ConcurrencyLimit>,
    key: impl FnOnce() -> Result<Key, E>,
    options: Options,
) -> Verdict<'a, E> {
    if options.exempt {
        let counted = match limits {
            Ok(limits) => limits,
            Err(unadmissible) => std::slice::from_ref(unadmissible.limit()),
        };
        flux.exempt(counted);
        return Verdict::Admitted(Admitted::unchecked());
    }
    let key = match key() {
        Ok(key) => key,
        Err(e) => return Verdict::NoKey(e),
    };
    let shadow = options.shadow.unwrap_or_else(|| flux.is_shadow());
    let limits = match limits {
        Ok(limits) => limits,
        Err(unadmissible) => {
            let decision = flux.refuse(unadmissible, shadow);
            return if shadow {
                Verdict::Admitted(Admitted::unchecked())
            } else {
                Verdict::Unadmissible(decision, unadmissible)
            };
        }
    };
    let decision = flux
        .check_with(&key, limits, options.on_error, Some(shadow))
        .await;
    if !decision.allowed {
        return Verdict::Denied(decision);
    }
    let slot = match concurrency {
        Some(limit) => match flux
            .acquire_with(&key, limit, options.on_error, Some(shadow))
            .await
        {
            Ok(slot) => Some(slot),
            Err(busy) => return Verdict::Busy(busy),
        },
        None => None,
    };
    Verdict::Admitted(Admitted {
        decision: (!shadow).then_some(decision),
        slot,
    })
}

/// The HTTP answer to a request the flow refused, or the admission to run it.
pub(crate) fn respond(
    flux: &Flux,
    limits: &[Limit],
    verdict: Verdict<'_, Response>,
) -> Result<Admitted, Response> {
    match verdict {
        Verdict::Admitted(admitted) => Ok(admitted),
        Verdict::NoKey(response) => Err(response),
        Verdict::Denied(decision) => Err(response::denied(flux, &decision, limits)),
        Verdict::Unadmissible(decision, refused) => {
            Err(response::unadmissible(flux, refused, &decision))
        }
        Verdict::Busy(busy) => Err(busy.into_response()),
    }
}

/// The whole flow around an HTTP `body`: its response with the RateLimit fields, or the
/// refusal without running it.
pub(crate) async fn serve<E, B>(
    flux: &Flux,
    limits: Result<&[Limit], &Unadmissible>,
    concurrency: Option<&ConcurrencyLimit>,
    key: impl FnOnce() -> Result<Key, Response>,
    options: Options,
    body: B,
) -> Result<Response, E>
where
    B: Future<Output = Result<Response, E>>,
{
    let verdict = admit(flux, limits, concurrency, key, options).await;
    let checked = limits.unwrap_or_default();
    match respond(flux, checked, verdict) {
        Err(refused) => Ok(refused),
        Ok(admitted) => {
            let mut response = body.await?;
            admitted.finish(checked, response.headers_mut());
            Ok(response)
        }
    }
}
