//! Costs settled after the response (`Flux::charge`), on a real Redis and on the in-memory
//! backend: the debt delays the client's next request by exactly the time it takes to
//! refill, other clients are untouched, a handler charges on the limiter that served its
//! request, and a charge follows the failure policy when Redis is down.

use std::num::NonZeroU32;
use std::time::Duration;

use axum::body::{Body, to_bytes};
use axum::extract::Query;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use axum::{Extension, Router};
use flux::config::BreakerConfig;
use flux::decision::Source;
use flux::{FailurePolicy, Flux, Limit, Rate, rate_limit};
use tower::ServiceExt;

use crate::support::{RedisCluster, RedisServer};

/// 10,000 tokens a minute: one token per 6 ms, a burst of 10,000.
static BUDGET: Limit = Limit::new("settle-tokens", Rate::per_minute::<10_000>());

const T0: u64 = 1_700_000_000_000_000;
const MS: u64 = 1_000;

fn redis_flux(server: &RedisServer, policy: FailurePolicy) -> Flux {
    Flux::builder()
        .redis(server.url())
        .key_prefix("settle")
        .deadline(Duration::from_secs(5))
        .failure_policy(policy)
        .build()
        .expect("valid configuration")
}

/// The estimate up front, the rest after the response: the next request waits for the debt.
async fn debt_delays_the_next_request_exactly(flux: &Flux) {
    let estimate = BUDGET.clone().with_cost(500).expect("within the burst");
    let check = |limit: &Limit, at: u64| {
        let flux = flux.clone();
        let limit = limit.clone();
        async move {
            flux.try_check_at("user-1", std::slice::from_ref(&limit), at)
                .await
                .expect("the backend answers")
        }
    };
    assert!(check(&estimate, T0).await.allowed);
    // The answer used 12,000 tokens: 11,500 more, 2,000 past the burst.
    let charged = flux
        .try_charge_at("user-1", &BUDGET, 11_500, T0)
        .await
        .expect("the backend answers");
    assert!(charged.recorded());
    assert_eq!(charged.source, Source::Backend);
    assert_eq!(charged.remaining, 0);
    // 2,000 tokens owed plus the next request's own: 2,001 x 6 ms.
    assert_eq!(charged.retry_after, Duration::from_millis(12_006));
    // The bucket is full again once all 12,000 tokens have refilled.
    assert_eq!(charged.reset_after, Duration::from_secs(72));
    let denied = check(&BUDGET, T0 + 12_005 * MS).await;
    assert!(!denied.allowed);
    assert_eq!(denied.retry_after, Duration::from_millis(1));
    assert!(check(&BUDGET, T0 + 12_006 * MS).await.allowed);
    // Another user never paid anything.
    let other = flux
        .try_check_at("user-2", std::slice::from_ref(&estimate), T0)
        .await
        .expect("the backend answers");
    assert_eq!(other.remaining, 9_500);
}

/// A charge within what the bucket holds leaves the rest, and the next request passes.
async fn a_charge_within_the_burst_leaves_the_rest(flux: &Flux) {
    let charged = flux
        .try_charge_at("user-3", &BUDGET, 4_000, T0)
        .await
        .expect("the backend answers");
    assert_eq!(charged.remaining, 6_000);
    assert_eq!(charged.retry_after, Duration::ZERO);
    let d = flux
        .try_check_at("user-3", std::slice::from_ref(&BUDGET), T0)
        .await
        .expect("the backend answers");
    assert!(d.allowed);
    assert_eq!(d.remaining, 5_999);
}

/// A cost of any size settles without overflow: a client owing years pays nothing more
/// (the charge is not recorded) and is still denied.
async fn a_huge_cost_is_capped(flux: &Flux) {
    let charged = flux
        .try_charge_at("user-4", &BUDGET, u64::MAX, T0)
        .await
        .expect("the backend answers");
    assert!(charged.recorded());
    // One charge adds at most 10 years.
    assert!(charged.reset_after >= Duration::from_secs(10 * 365 * 86_400));
    for _ in 0..2 {
        flux.try_charge_at("user-4", &BUDGET, u64::MAX, T0)
            .await
            .expect("the backend answers");
    }
    let capped = flux
        .try_charge_at("user-4", &BUDGET, 1, T0)
        .await
        .expect("the backend answers");
    assert!(!capped.recorded());
    let d = flux
        .try_check_at("user-4", std::slice::from_ref(&BUDGET), T0 + 1_000_000 * MS)
        .await
        .expect("the backend answers");
    assert!(!d.allowed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settled_costs_on_redis() {
    let server = RedisServer::start();
    let flux = redis_flux(&server, FailurePolicy::Open);
    debt_delays_the_next_request_exactly(&flux).await;
    a_charge_within_the_burst_leaves_the_rest(&flux).await;
    a_huge_cost_is_capped(&flux).await;
    // The debt lives in the bucket's key, which expires once the bucket is full again.
    let ttl: i64 = server
        .cli(&["PTTL", &server.bucket("settle", "user-3", "settle-tokens")])
        .trim()
        .parse()
        .expect("a number");
    assert!(ttl > 0, "{ttl}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settled_costs_on_a_cluster() {
    let cluster = RedisCluster::start(3, 0);
    let flux = Flux::builder()
        .redis_cluster(cluster.urls())
        .key_prefix("settle")
        .deadline(Duration::from_secs(5))
        .build()
        .expect("valid configuration");
    debt_delays_the_next_request_exactly(&flux).await;
    a_charge_within_the_burst_leaves_the_rest(&flux).await;
}

#[tokio::test]
async fn settled_costs_in_memory() {
    let flux = Flux::builder().build().expect("in-memory");
    debt_delays_the_next_request_exactly(&flux).await;
    a_charge_within_the_burst_leaves_the_rest(&flux).await;
    a_huge_cost_is_capped(&flux).await;
}

/// On the backend's own clock: a charge now denies the next check now, with a wait that
/// matches the debt (generous bounds: the clock runs while the test does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charge_now_denies_the_next_check_now() {
    let server = RedisServer::start();
    let flux = redis_flux(&server, FailurePolicy::Open);
    let charged = flux.charge("user-5", &BUDGET, 10_500).await;
    assert_eq!(charged.source, Source::Backend);
    let d = flux.check("user-5", &BUDGET).await;
    assert!(!d.allowed);
    // 501 tokens to wait for: 3.006 s, less the time since the charge.
    assert!(d.retry_after <= Duration::from_millis(3_006), "{d:?}");
    assert!(d.retry_after >= Duration::from_millis(2_000), "{d:?}");
}

/// Redis down: `Local` charges this process' bucket (its local checks then wait), `Open`
/// and `Closed` drop the charge; none waits longer than the deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charge_follows_the_failure_policy_when_redis_is_down() {
    let mut server = RedisServer::start();
    let build = |policy| {
        Flux::builder()
            .redis(server.url())
            .key_prefix("settle-down")
            .deadline(Duration::from_millis(50))
            .breaker(BreakerConfig::new(
                NonZeroU32::new(1).expect("nonzero"),
                Duration::from_secs(60),
            ))
            .failure_policy(policy)
            .build()
            .expect("valid configuration")
    };
    let local = build(FailurePolicy::Local);
    let open = build(FailurePolicy::Open);
    let closed = build(FailurePolicy::Closed);
    server.kill();
    let charged = local.charge("user-6", &BUDGET, 10_600).await;
    assert_eq!(charged.source, Source::Local);
    assert!(charged.recorded());
    let d = local.check("user-6", &BUDGET).await;
    assert_eq!(d.source, Source::Local);
    assert!(!d.allowed, "the local bucket holds the debt: {d:?}");

    for (flux, source) in [(&open, Source::FailOpen), (&closed, Source::FailClosed)] {
        let started = std::time::Instant::now();
        let charged = flux.charge("user-6", &BUDGET, 10_600).await;
        assert_eq!(charged.source, source);
        assert!(!charged.recorded());
        assert!(started.elapsed() < Duration::from_secs(2));
    }
    // The breaker is open now: a charge skips Redis and costs nothing.
    let started = std::time::Instant::now();
    assert_eq!(
        open.charge("user-7", &BUDGET, 1).await.source,
        Source::FailOpen
    );
    assert!(started.elapsed() < Duration::from_millis(40));
}

/// 600 tokens a minute (one per 100 ms), a burst of 600.
static ANSWERS: Limit = Limit::new("settle-answers", Rate::per_minute::<600>());

#[derive(serde::Deserialize)]
struct Ask {
    user: String,
    used: u64,
}

/// The token-budget pattern: 100 tokens up front, the rest of `used` after the answer,
/// charged on the limiter that served the request (the `Flux` extractor).
#[rate_limit(limit = &ANSWERS, key = ask.user, cost = 100u32)]
async fn complete(flux: Flux, Query(ask): Query<Ask>) -> String {
    let charged = flux
        .charge(ask.user.as_str(), &ANSWERS, ask.used.saturating_sub(100))
        .await;
    format!("{}", charged.retry_after.as_millis())
}

/// Over HTTP, on tokio's paused clock: the debt shows as the next request's `Retry-After`,
/// and the request passes once exactly that much time has gone by.
#[tokio::test(start_paused = true)]
async fn a_handler_settles_and_the_next_request_waits_for_the_debt() {
    let app = Router::new()
        .route("/complete", get(complete))
        .layer(Extension(flux::testing::memory()));
    let ask = |used: u64| {
        let app = app.clone();
        async move {
            let request = Request::get(format!("/complete?user=ann&used={used}"))
                .body(Body::empty())
                .expect("a valid request");
            let response = app.oneshot(request).await.expect("routers never fail");
            let status = response.status();
            let retry = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().expect("ascii").to_owned());
            let body = to_bytes(response.into_body(), 1 << 16)
                .await
                .expect("a body");
            (
                status,
                retry,
                String::from_utf8(body.to_vec()).expect("utf-8"),
            )
        }
    };
    // 900 tokens used: 300 past the burst. The next request (100 tokens) waits for the
    // 300 owed and its own 100: 40 s.
    let (status, _, body) = ask(900).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "30100", "the charge's wait, for a request of cost 1");
    let (status, retry, _) = ask(100).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(retry.as_deref(), Some("40"));
    tokio::time::advance(Duration::from_millis(39_999)).await;
    assert_eq!(ask(100).await.0, StatusCode::TOO_MANY_REQUESTS);
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(ask(100).await.0, StatusCode::OK);
}
