//! `FluxLayer`: limits over a whole router, a group of routes, or any `http` service.
//!
//! The layer runs the request flow that `#[rate_limit]` runs, before the inner service:
//! the same responses, header fields, failure policy, deny cache, metrics, exemptions and
//! concurrency slots. A layer and an attribute on the same request are two checks (two sets
//! of buckets, in that order), not one.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes, HttpBody};
use axum::response::Response;
use http::request::Parts;
use http::{HeaderName, Request};
use tower_layer::Layer;
use tower_service::Service;

use super::client::{Serving, client_ip};
use super::flow::{self, Options};
use super::response::{missing_header, no_key, no_peer_address};
use crate::Flux;
use crate::concurrency::ConcurrencyLimit;
use crate::model::key::Key;
use crate::model::limit::Limit;
use crate::outage::policy::FailurePolicy;

/// Which client a layer's limits count.
#[derive(Clone)]
enum KeySource {
    /// The client's address (trusted proxies apply), as `key = "ip"`.
    Ip,
    /// One bucket for every request through the layer.
    Global,
    /// The value of a request header; a request without it is answered 400.
    Header(HeaderName),
    /// A function of the request; `None` is answered 400.
    Fn(KeyFn),
}

type KeyFn = Arc<dyn Fn(&Parts) -> Option<Key> + Send + Sync>;
type Predicate = Arc<dyn Fn(&Parts) -> bool + Send + Sync>;

struct Config {
    /// The layer's own limiter; `None`: the request's, else the process-wide one.
    flux: Option<Flux>,
    limits: Arc<[Limit]>,
    /// At most this many requests in flight per client.
    concurrency: Option<ConcurrencyLimit>,
    key: KeySource,
    exempt: Option<Predicate>,
    on_error: Option<FailurePolicy>,
    shadow: Option<bool>,
}

/// A [`tower_layer::Layer`] that rate-limits every request through it: axum's
/// `Router::layer` and `route_layer`, nested routers, or any service of `http::Request`s
/// (a plain hyper service too), whatever the request body.
///
/// ```
/// use axum::{Router, routing::get};
/// use flux::{FluxLayer, Limit, Rate};
/// use flux::concurrency::ConcurrencyLimit;
///
/// static EXPORTS: ConcurrencyLimit = ConcurrencyLimit::new("exports", 2);
/// static DEFAULT: Limit = Limit::new("default", Rate::per_second::<20>());
///
/// let app: Router = Router::new()
///     .route("/hello", get(|| async { "hello" }))
///     .route("/health", get(|| async { "ok" }))
///     // 20/s per client address on every route, but the health check.
///     .layer(FluxLayer::new(DEFAULT.clone()).exempt(|parts| parts.uri.path() == "/health"));
///
/// // At most 2 exports in flight per client, and 1/s.
/// let exports: Router = Router::new()
///     .route("/export", get(|| async { "rows" }))
///     .layer(FluxLayer::new(Limit::new("export", Rate::per_second::<1>())).concurrency(EXPORTS.clone()));
/// ```
///
/// The limits are checked together, all or nothing, like stacked `#[rate_limit]`
/// attributes; then, if the layer has one ([`FluxLayer::concurrency`]), a slot of its
/// concurrency limit is taken and held until the inner service has answered. The key is the client's address by default ([`FluxLayer::key_ip`]; serve the
/// router with `into_make_service_with_connect_info`, or requests are answered 500); see
/// also [`key_global`](FluxLayer::key_global), [`key_header`](FluxLayer::key_header) and
/// [`key_fn`](FluxLayer::key_fn).
///
/// With [`FluxLayer::flux`] the layer uses that limiter and puts it into every request it
/// passes on, so the `#[rate_limit]` handlers behind it use it too; otherwise it uses the
/// limiter the request already carries, or the process-wide one.
///
/// Responses pass through with the RateLimit header fields added (not in shadow mode);
/// denials are answered 429 (or 503 under the `closed` policy, or the limiter's
/// `deny_response`). The response body becomes [`axum::body::Body`].
#[derive(Clone)]
pub struct FluxLayer {
    config: Arc<Config>,
}

impl fmt::Debug for FluxLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FluxLayer")
            .field("limits", &self.config.limits)
            .field("flux", &self.config.flux)
            .finish_non_exhaustive()
    }
}

impl FluxLayer {
    /// A layer enforcing `limit` per client address.
    pub fn new(limit: Limit) -> FluxLayer {
        FluxLayer::with_limits([limit])
    }

    /// A layer enforcing several limits together, all or nothing, per client address.
    pub fn with_limits(limits: impl IntoIterator<Item = Limit>) -> FluxLayer {
        FluxLayer {
            config: Arc::new(Config {
                flux: None,
                limits: limits.into_iter().collect(),
                concurrency: None,
                key: KeySource::Ip,
                exempt: None,
                on_error: None,
                shadow: None,
            }),
        }
    }

    fn map(mut self, f: impl FnOnce(&mut Config)) -> FluxLayer {
        match Arc::get_mut(&mut self.config) {
            Some(config) => f(config),
            None => {
                let old = &*self.config;
                let mut config = Config {
                    flux: old.flux.clone(),
                    limits: Arc::clone(&old.limits),
                    concurrency: old.concurrency.clone(),
                    key: old.key.clone(),
                    exempt: old.exempt.clone(),
                    on_error: old.on_error,
                    shadow: old.shadow,
                };
                f(&mut config);
                self.config = Arc::new(config);
            }
        }
        self
    }

    /// Uses this limiter, and hands it to the handlers behind the layer.
    pub fn flux(self, flux: Flux) -> FluxLayer {
        self.map(|c| c.flux = Some(flux))
    }

    /// At most `limit.max()` requests in flight per client through this layer, as
    /// `#[concurrency_limit]`: a request takes a slot after the rate limits admitted it and
    /// holds it until the inner service has produced its response (or the request is
    /// dropped); over the limit it is answered `429` with `Retry-After: 1`. For a layer with
    /// only a concurrency limit, start from `FluxLayer::with_limits([])`.
    ///
    /// ```
    /// use flux::FluxLayer;
    /// use flux::concurrency::ConcurrencyLimit;
    ///
    /// static REPORTS: ConcurrencyLimit = ConcurrencyLimit::new("reports", 4);
    /// let layer = FluxLayer::with_limits([]).concurrency(REPORTS.clone()).key_header(
    ///     http::HeaderName::from_static("x-api-key"),
    /// );
    /// ```
    pub fn concurrency(self, limit: ConcurrencyLimit) -> FluxLayer {
        self.map(|c| c.concurrency = Some(limit))
    }

    /// Counts clients by address (the default), as `key = "ip"`.
    pub fn key_ip(self) -> FluxLayer {
        self.map(|c| c.key = KeySource::Ip)
    }

    /// One bucket for every request through the layer, as `key = "global"`.
    pub fn key_global(self) -> FluxLayer {
        self.map(|c| c.key = KeySource::Global)
    }

    /// Counts clients by the value of header `name`, as `key = "header:NAME"`; a request
    /// without it is answered 400.
    pub fn key_header(self, name: HeaderName) -> FluxLayer {
        self.map(|c| c.key = KeySource::Header(name))
    }

    /// Counts clients by a function of the request; `None` (no key found) is answered 400,
    /// never lumped with other clients.
    ///
    /// ```
    /// use flux::{FluxLayer, Key, Limit, Rate};
    ///
    /// static PER_TENANT: Limit = Limit::new("tenant", Rate::per_second::<50>());
    /// let layer = FluxLayer::new(PER_TENANT.clone())
    ///     .key_fn(|parts| parts.headers.get("x-tenant").map(Key::new));
    /// ```
    pub fn key_fn<F>(self, key: F) -> FluxLayer
    where
        F: Fn(&Parts) -> Option<Key> + Send + Sync + 'static,
    {
        self.map(|c| c.key = KeySource::Fn(Arc::new(key)))
    }

    /// Requests for which `exempt` is true pass unchecked (counted `exempt`).
    pub fn exempt<F>(self, exempt: F) -> FluxLayer
    where
        F: Fn(&Parts) -> bool + Send + Sync + 'static,
    {
        self.map(|c| c.exempt = Some(Arc::new(exempt)))
    }

    /// The failure policy of this layer's checks (default: the limiter's).
    pub fn on_error(self, policy: FailurePolicy) -> FluxLayer {
        self.map(|c| c.on_error = Some(policy))
    }

    /// Shadow mode for this layer's checks: decide, charge and count, never deny (default:
    /// the limiter's).
    pub fn shadow(self, shadow: bool) -> FluxLayer {
        self.map(|c| c.shadow = Some(shadow))
    }
}

impl<S> Layer<S> for FluxLayer {
    type Service = FluxService<S>;

    fn layer(&self, inner: S) -> FluxService<S> {
        FluxService {
            inner,
            config: Arc::clone(&self.config),
        }
    }
}

/// The service of a [`FluxLayer`].
#[derive(Clone)]
pub struct FluxService<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S: fmt::Debug> fmt::Debug for FluxService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FluxService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, B, ResBody> Service<Request<B>> for FluxService<S>
where
    S: Service<Request<B>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
    ResBody: HttpBody<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // The clone that was polled ready serves this request; the fresh one waits.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let config = Arc::clone(&self.config);
        Box::pin(async move {
            let (mut parts, body) = request.into_parts();
            let flux = match &config.flux {
                Some(flux) => {
                    parts.extensions.insert(flux.clone());
                    Serving::Request(flux.clone())
                }
                None => Serving::of(&parts),
            };
            let exempt = config.exempt.as_ref().is_some_and(|exempt| exempt(&parts))
                || (flux.has_exempt_ips()
                    && client_ip(&flux, &parts).is_some_and(|ip| flux.is_exempt_ip(ip)));
            let options = Options {
                on_error: config.on_error,
                shadow: config.shadow,
                exempt,
            };
            #[allow(clippy::result_large_err)] // the refusal is the response itself
            let key = || match &config.key {
                KeySource::Ip => client_ip(&flux, &parts)
                    .map(Key::from_ip)
                    .ok_or_else(no_peer_address),
                KeySource::Global => Ok(Key::global()),
                KeySource::Header(name) => parts
                    .headers
                    .get(name)
                    .filter(|value| !value.is_empty())
                    .map(|value| Key::new(value.as_bytes()))
                    .ok_or_else(|| missing_header(name.as_str())),
                KeySource::Fn(key) => key(&parts).ok_or_else(no_key),
            };
            let verdict = flow::admit(
                &flux,
                Ok(&config.limits[..]),
                config.concurrency.as_ref(),
                key,
                options,
            )
            .await;
            let admitted = match flow::respond(&flux, &config.limits, verdict) {
                Ok(admitted) => admitted,
                Err(refused) => return Ok(refused),
            };
            let mut response = inner
                .call(Request::from_parts(parts, body))
                .await?
                .map(Body::new);
            admitted.finish(&config.limits, response.headers_mut());
            Ok(response)
        })
    }
}
