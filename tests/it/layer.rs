//! `FluxLayer` and limiters carried by requests: router-wide limits, exemptions, nested groups
//! with their own limits, several limiters in one process, plain tower services, and the
//! unit-test pattern of the README (tokio's paused clock, `oneshot`, no ports, no sleeps);
//! then the same over real TCP through a real Redis; and concurrency limits on a layer, in
//! memory and shared by two instances through Redis.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{HeaderName, Request, StatusCode};
use axum::routing::get;
use axum::{Extension, Router};
use flux::concurrency::ConcurrencyLimit;
use flux::{Flux, FluxLayer, Key, Limit, Rate, rate_limit};
use tower::{ServiceBuilder, ServiceExt};

use crate::support::{self, Conn, RedisServer};

static ROUTER_DEFAULT: Limit = Limit::new("router-default", Rate::per_second::<20>());
static API_KEYED: Limit = Limit::new("api-keyed", Rate::per_second::<2>());

fn default_limit() -> Limit {
    ROUTER_DEFAULT
        .clone()
        .with_burst(5)
        .expect("burst 5 fits 20/s")
}

/// The router of `examples/router_layer.rs`: a default of 20/s, burst 5, per ip on every
/// route but `/health`; `/api/items` also 2/s, burst 2, per `x-api-key`.
fn app(flux: Flux) -> Router {
    app_with(flux, Router::new())
}

/// [`app`] with more routes behind the router-wide layer.
fn app_with(flux: Flux, routes: Router) -> Router {
    let api = Router::new()
        .route("/items", get(|| async { "items" }))
        .layer(FluxLayer::new(API_KEYED.clone()).key_header(HeaderName::from_static("x-api-key")));
    routes
        .route("/hello", get(|| async { "hello" }))
        .route("/health", get(|| async { "ok" }))
        .nest("/api", api)
        .layer(
            FluxLayer::new(default_limit())
                .flux(flux)
                .exempt(|parts| parts.uri.path() == "/health"),
        )
}

fn from(app: Router, ip: [u8; 4]) -> Router {
    app.layer(MockConnectInfo(SocketAddr::from((ip, 4000))))
}

async fn status(app: &Router, path: &str, headers: &[(&str, &str)]) -> u16 {
    let mut request = Request::get(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Body::empty()).expect("request");
    app.clone()
        .oneshot(request)
        .await
        .expect("infallible")
        .status()
        .as_u16()
}

async fn statuses(app: &Router, path: &str, headers: &[(&str, &str)], n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(status(app, path, headers).await);
    }
    out
}

#[tokio::test(start_paused = true)]
async fn a_router_wide_default_with_an_exempt_route_and_a_nested_group() {
    let router = app(flux::testing::memory());
    let app = from(router.clone(), [192, 0, 2, 1]);
    assert_eq!(
        statuses(&app, "/hello", &[], 6).await,
        [200, 200, 200, 200, 200, 429],
        "burst 5 per ip"
    );
    assert_eq!(
        statuses(&app, "/health", &[], 10).await,
        [200; 10],
        "the health route is exempt"
    );
    let other = from(router, [192, 0, 2, 2]);
    assert_eq!(
        status(&other, "/hello", &[]).await,
        200,
        "another address, another bucket"
    );

    // The nested group: the router's default and its own per-key limit, two checks.
    tokio::time::advance(Duration::from_secs(1)).await;
    let key = [("x-api-key", "k1")];
    assert_eq!(
        statuses(&app, "/api/items", &key, 3).await,
        [200, 200, 429],
        "2 per api key at once"
    );
    assert_eq!(
        status(&app, "/api/items", &[("x-api-key", "k2")]).await,
        200
    );
    assert_eq!(
        status(&app, "/api/items", &[]).await,
        400,
        "no key is never lumped"
    );
    tokio::time::advance(Duration::from_millis(500)).await;
    assert_eq!(
        status(&app, "/api/items", &key).await,
        200,
        "a token every 500 ms"
    );
}

#[tokio::test(start_paused = true)]
async fn two_limiters_in_one_process_each_hold_their_own_limits() {
    // The same limits and the same client on two routers, each with its own limiter.
    let a = from(app(flux::testing::memory()), [192, 0, 2, 7]);
    let b = from(app(flux::testing::memory()), [192, 0, 2, 7]);
    assert_eq!(statuses(&a, "/hello", &[], 5).await, [200; 5]);
    assert_eq!(status(&a, "/hello", &[]).await, 429);
    assert_eq!(
        statuses(&b, "/hello", &[], 5).await,
        [200; 5],
        "b's buckets are its own"
    );
    assert_eq!(status(&b, "/hello", &[]).await, 429);
}

#[rate_limit(rate = "1/s", burst = 2, key = "ip", name = "handler-after-layer")]
async fn limited_handler() -> &'static str {
    "handler"
}

#[tokio::test(start_paused = true)]
async fn handlers_use_the_limiter_their_request_carries() {
    // An `Extension(flux)` serves the attribute: no global limiter is installed or used.
    let flux = flux::testing::memory();
    let app = from(
        Router::new()
            .route("/h", get(limited_handler))
            .layer(Extension(flux.clone())),
        [198, 51, 100, 1],
    );
    assert_eq!(statuses(&app, "/h", &[], 3).await, [200, 200, 429]);
    assert_eq!(
        flux.local_buckets(),
        1,
        "the request's limiter holds the bucket"
    );
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(status(&app, "/h", &[]).await, 200, "on tokio's clock");
}

#[tokio::test(start_paused = true)]
async fn a_plain_tower_service_with_any_body_type() {
    let service = ServiceBuilder::new()
        .layer(
            FluxLayer::new(API_KEYED.clone())
                .flux(flux::testing::memory())
                .key_fn(|parts| parts.headers.get("x-tenant").map(Key::new)),
        )
        .service_fn(|request: Request<String>| async move {
            Ok::<_, Infallible>(http::Response::new(format!("echo {}", request.body())))
        });
    let call = |tenant: Option<&str>| {
        let service = service.clone();
        let mut request = Request::post("/").body("hi".to_owned()).expect("request");
        if let Some(tenant) = tenant {
            request
                .headers_mut()
                .insert("x-tenant", tenant.parse().expect("header value"));
        }
        async move { service.oneshot(request).await.expect("infallible") }
    };
    let first = call(Some("acme")).await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(first.headers()["ratelimit-policy"], "\"api-keyed\";q=2;w=1");
    assert_eq!(call(Some("acme")).await.status(), StatusCode::OK);
    let denied = call(Some("acme")).await;
    assert_eq!(denied.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(denied.headers().contains_key("retry-after"));
    assert_eq!(call(Some("other")).await.status(), StatusCode::OK);
    assert_eq!(call(None).await.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tcp_through_redis_layer_and_attribute_are_two_checks() {
    let redis = RedisServer::start();
    let flux = Flux::builder()
        .redis(redis.url())
        .key_prefix("layer")
        .build()
        .expect("valid configuration");
    let router = app_with(flux, Router::new().route("/h", get(limited_handler)));
    let addr = support::serve(router).await;
    let mut conn = Conn::open(addr).await.expect("connect");
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(conn.get("/h", &[]).await.expect("answer").status);
    }
    // The handler's own limit (burst 2) denies first; the layer's default (burst 5) charged 3.
    assert_eq!(seen, [200, 200, 429]);
    let reply = conn.get("/hello", &[]).await.expect("answer");
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .header("ratelimit")
            .is_some_and(|v| v.starts_with("\"router-default\";r=")),
        "the layer's fields: {:?}",
        reply.header("ratelimit")
    );
    // Both limits' buckets live in the layer's limiter's Redis, under its prefix.
    let keys = redis.cli(&["KEYS", "layer:*"]);
    assert!(keys.contains("router-default"), "{keys}");
    assert!(keys.contains("handler-after-layer"), "{keys}");
    let health = conn.get("/health", &[]).await.expect("answer");
    assert_eq!(health.status, 200);
    assert!(
        health.header("ratelimit").is_none(),
        "an exempt request is not checked"
    );
}

// Concurrency limits on a layer: the attribute's slots, taken after the layer's rate limits
// admit and held until the inner service has answered.

static EXPORTS: ConcurrencyLimit = ConcurrencyLimit::new("layer-exports", 2);

/// Requests that reached the handler, and the gate they wait at before answering.
#[derive(Clone)]
struct Gate {
    entered: Arc<AtomicUsize>,
    open: Arc<tokio::sync::Semaphore>,
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            entered: Arc::default(),
            open: Arc::new(tokio::sync::Semaphore::new(0)),
        }
    }
}

impl Gate {
    /// Waits (at most 5 s) until `n` requests have reached the handler.
    async fn entered(&self, n: usize) {
        let wait = async {
            while self.entered.load(Ordering::SeqCst) < n {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .unwrap_or_else(|_| panic!("{n} requests never reached the handler"));
    }
}

/// `/export` waits at `gate`, behind a layer that allows 2 exports in flight per `x-k`.
fn exports(flux: Flux, gate: Gate) -> Router {
    let handler = move || {
        let gate = gate.clone();
        async move {
            gate.entered.fetch_add(1, Ordering::SeqCst);
            let _pass = gate.open.acquire().await.expect("gate open");
            "exported"
        }
    };
    Router::new().route("/export", get(handler)).layer(
        FluxLayer::with_limits([])
            .concurrency(EXPORTS.clone())
            .key_header(HeaderName::from_static("x-k"))
            .flux(flux),
    )
}

/// `/export` for client `key`: status, `Retry-After`, body. One that neither answers nor is
/// refused within 5 s fails the test (a request the limit should refuse waits at the gate).
async fn export(app: Router, key: &'static str) -> (u16, Option<String>, String) {
    tokio::time::timeout(Duration::from_secs(5), export_now(app, key))
        .await
        .unwrap_or_else(|_| panic!("{key}'s export neither answered nor was refused"))
}

async fn export_now(app: Router, key: &'static str) -> (u16, Option<String>, String) {
    let request = Request::get("/export")
        .header("x-k", key)
        .body(Body::empty())
        .expect("request");
    let response = app.oneshot(request).await.expect("infallible");
    let status = response.status().as_u16();
    let retry = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .expect("body");
    (status, retry, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn a_layer_holds_at_most_max_requests_in_flight_per_client() {
    let gate = Gate::default();
    let flux = Flux::builder().build().expect("in-memory limiter");
    let app = exports(flux, gate.clone());
    let first = tokio::spawn(export(app.clone(), "alice"));
    let second = tokio::spawn(export(app.clone(), "alice"));
    gate.entered(2).await;
    // Two of alice's exports run: a third is refused without reaching the handler.
    let (status, retry, body) = export(app.clone(), "alice").await;
    assert_eq!((status, retry.as_deref()), (429, Some("1")), "{body}");
    assert!(body.contains("concurrency limit"), "{body}");
    assert_eq!(gate.entered.load(Ordering::SeqCst), 2);
    // Another client has slots of its own.
    let other = tokio::spawn(export(app.clone(), "bob"));
    gate.entered(3).await;
    gate.open.add_permits(3);
    for task in [first, second, other] {
        assert_eq!(task.await.expect("task").0, 200);
    }
    // The slots were released when the responses were produced.
    gate.open.add_permits(2);
    let (again, _, _) = export(app.clone(), "alice").await;
    let (twice, _, _) = export(app, "alice").await;
    assert_eq!((again, twice), (200, 200));
}

#[tokio::test]
async fn a_dropped_request_releases_its_slot_on_a_layer() {
    let gate = Gate::default();
    let flux = Flux::builder().build().expect("in-memory limiter");
    let app = exports(flux, gate.clone());
    let dropped = tokio::spawn(export(app.clone(), "carol"));
    let kept = tokio::spawn(export(app.clone(), "carol"));
    gate.entered(2).await;
    assert_eq!(export(app.clone(), "carol").await.0, 429);
    // The client goes away: its request's future is dropped, and its slot with it.
    dropped.abort();
    assert!(dropped.await.is_err_and(|e| e.is_cancelled()));
    let next = tokio::spawn(export(app.clone(), "carol"));
    gate.entered(3).await;
    gate.open.add_permits(2);
    assert_eq!(kept.await.expect("task").0, 200);
    assert_eq!(next.await.expect("task").0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layer_s_slots_are_shared_by_every_instance_through_redis() {
    let redis = RedisServer::start();
    // Two instances of one service: two limiters on the same Redis and prefix.
    let gate = Gate::default();
    let one = exports(redis.flux("layer-slots"), gate.clone());
    let two = exports(redis.flux("layer-slots"), gate.clone());
    let first = tokio::spawn(export(one.clone(), "dave"));
    let second = tokio::spawn(export(two.clone(), "dave"));
    gate.entered(2).await;
    // Both slots are taken, one on each instance: either instance refuses a third.
    assert_eq!(export(one.clone(), "dave").await.0, 429);
    assert_eq!(export(two.clone(), "dave").await.0, 429);
    let sets = redis.cli(&["KEYS", "layer-slots:*#slots:*"]);
    assert!(sets.contains("#slots:layer-exports"), "{sets}");
    gate.open.add_permits(2);
    assert_eq!(first.await.expect("task").0, 200);
    assert_eq!(second.await.expect("task").0, 200);
    // Released in Redis (in the background, after each response): both are free again.
    let freed = async {
        while redis
            .cli(&[
                "ZCARD",
                &redis.slot_set("layer-slots", "dave", "layer-exports"),
            ])
            .trim()
            != "0"
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), freed)
        .await
        .expect("the slots are released in Redis");
    gate.open.add_permits(2);
    assert_eq!(export(one, "dave").await.0, 200);
    assert_eq!(export(two, "dave").await.0, 200);
}
