//! Limits and costs computed per request (`#[rate_limit(limit = EXPR, cost = EXPR)]`), on a
//! real Redis and on the in-memory backend: each caller gets its plan's limit, and a computed
//! cost no bucket can admit (zero, above the burst, too large for any integer conversion) is
//! refused with its reason, never admitted, never a panic.

use axum::body::{Body, to_bytes};
use axum::extract::{Path, Query};
use axum::http::{Request, StatusCode};
use axum::routing::get;
use axum::{Extension, Router};
use flux::decision::Source;
use flux::{Flux, Limit, Rate, RateLimited, rate_limit};
use tower::ServiceExt;

use crate::support::RedisServer;

static FREE: Limit = Limit::new("tiers-free", Rate::per_hour::<3>());
static PRO: Limit = Limit::new("tiers-pro", Rate::per_hour::<10>());

#[derive(serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum Plan {
    Free,
    Pro,
}

impl Plan {
    fn limit(&self) -> &'static Limit {
        match self {
            Plan::Free => &FREE,
            Plan::Pro => &PRO,
        }
    }
}

#[rate_limit(limit = plan.limit(), key = user)]
async fn api(Path((plan, user)): Path<(Plan, String)>) -> String {
    format!("hello {user}\n")
}

#[derive(serde::Deserialize)]
struct Batch {
    items: u64,
}

/// 100 tokens an hour per user; each request takes as many as it has items.
#[rate_limit(rate = "100/hour", key = user, name = "tiers-items", cost = batch.items)]
async fn items(Path(user): Path<String>, Query(batch): Query<Batch>) -> String {
    format!("{} items for {user}\n", batch.items)
}

fn app(flux: Flux) -> Router {
    Router::new()
        .route("/api/{plan}/{user}", get(api))
        .route("/items/{user}", get(items))
        .layer(Extension(flux))
}

/// One GET: its status, its `ratelimit` field and body.
async fn get_path(app: &Router, path: &str) -> (StatusCode, Option<String>, String) {
    let request = Request::get(path)
        .body(Body::empty())
        .expect("a valid request");
    let response = app
        .clone()
        .oneshot(request)
        .await
        .expect("routers never fail");
    let status = response.status();
    let field = response
        .headers()
        .get("ratelimit")
        .map(|v| v.to_str().expect("ascii").to_owned());
    let body = to_bytes(response.into_body(), 1 << 16)
        .await
        .expect("a body");
    let body = String::from_utf8(body.to_vec()).expect("utf-8");
    (status, field, body)
}

/// Requests in a row until the first denial: how many were admitted (at most `max`).
async fn admitted(app: &Router, path: &str, max: usize) -> usize {
    for n in 0..max {
        if get_path(app, path).await.0 != StatusCode::OK {
            return n;
        }
    }
    max
}

/// Two users on different plans, and two on the same one: each gets its plan's burst.
async fn plans_give_each_caller_its_own_limit(flux: Flux) {
    let app = app(flux);
    assert_eq!(admitted(&app, "/api/free/alice", 20).await, 3);
    assert_eq!(admitted(&app, "/api/pro/bob", 20).await, 10);
    // Another user of the free plan has a bucket of its own.
    assert_eq!(admitted(&app, "/api/free/carol", 20).await, 3);
    // The header fields describe the caller's plan.
    let (_, field, _) = get_path(&app, "/api/pro/dave").await;
    assert_eq!(field.as_deref(), Some("\"tiers-pro\";r=9;t=360"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_give_each_caller_its_own_limit_on_redis() {
    let server = RedisServer::start();
    plans_give_each_caller_its_own_limit(server.flux("tiers")).await;
    // The buckets are the plans' names, one per user.
    let keys = server.cli(&["KEYS", "tiers:*"]);
    assert!(
        keys.contains(&server.bucket("tiers", "alice", "tiers-free")),
        "{keys}"
    );
    assert!(
        keys.contains(&server.bucket("tiers", "bob", "tiers-pro")),
        "{keys}"
    );
}

#[tokio::test]
async fn plans_give_each_caller_its_own_limit_in_memory() {
    plans_give_each_caller_its_own_limit(flux::testing::memory()).await;
}

/// Costs computed from the request: charged as computed, and refused with their reason
/// when no bucket could ever admit them.
async fn computed_costs(flux: Flux) {
    let app = app(flux);
    let (status, field, _) = get_path(&app, "/items/erin?items=40").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(field.as_deref(), Some("\"tiers-items\";r=60;t=1440"));
    let (status, _, _) = get_path(&app, "/items/erin?items=60").await;
    assert_eq!(status, StatusCode::OK);
    // Empty now: a plain denial, which says when to retry.
    let (status, _, body) = get_path(&app, "/items/erin?items=1").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(body.contains("retry after"), "{body}");

    // Never admissible, whatever the bucket holds: refused with the reason, nothing charged.
    for (items, reason) in [
        (
            "101",
            "cost 101 of limit \"tiers-items\" is larger than its burst 100",
        ),
        ("0", "cost 0 of limit \"tiers-items\" is zero"),
        // 2^40 and 2^32 + 1 would wrap to 0 and 1 as u32: refused, not wrapped.
        (
            "1099511627776",
            "cost 1099511627776 of limit \"tiers-items\" is larger than its burst 100",
        ),
        (
            "4294967297",
            "cost 4294967297 of limit \"tiers-items\" is larger than its burst 100",
        ),
    ] {
        let (status, field, body) = get_path(&app, &format!("/items/frank?items={items}")).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{items}: {body}");
        assert!(body.contains(reason), "{items}: {body}");
        assert!(body.contains("never be admitted") || items == "0", "{body}");
        assert_eq!(field, None, "no bucket was asked");
    }
    // None of those took anything from frank's bucket.
    let (status, field, _) = get_path(&app, "/items/frank?items=100").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(field.as_deref(), Some("\"tiers-items\";r=0;t=3600"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn computed_costs_on_redis() {
    let server = RedisServer::start();
    computed_costs(server.flux("costs")).await;
}

#[tokio::test]
async fn computed_costs_in_memory() {
    computed_costs(flux::testing::memory()).await;
}

/// A plain fn's error: a denial, or any of its own.
#[derive(Debug, PartialEq)]
enum ExportError {
    Limited(RateLimited),
}

impl From<RateLimited> for ExportError {
    fn from(denied: RateLimited) -> Self {
        ExportError::Limited(denied)
    }
}

/// A plain async fn (the process-wide limiter: built from the environment, so in memory, since
/// no suite of the `it` binary installs one; see `main.rs`).
#[rate_limit(rate = "10/min", key = tenant, cost = rows, deny = "error")]
async fn export(tenant: &str, rows: i64) -> Result<i64, ExportError> {
    Ok(rows)
}

#[tokio::test]
async fn a_plain_fn_gets_the_reason_as_its_error() {
    assert_eq!(export("t1", 4).await, Ok(4));
    for rows in [-1, 0, 11, i64::MAX] {
        let ExportError::Limited(denied) = export("t1", rows).await.expect_err("never admissible");
        assert_eq!(denied.decision().source, Source::Unadmissible);
        let reason = denied.reason().expect("a reason");
        assert!(
            reason.starts_with(&format!("cost {rows} of limit")),
            "{reason}"
        );
        assert!(denied.to_string().contains(reason));
    }
    // The refusals charged nothing: 6 tokens are left.
    assert_eq!(export("t1", 6).await, Ok(6));
    let ExportError::Limited(denied) = export("t1", 1).await.expect_err("empty");
    assert_eq!(denied.reason(), None);
}
