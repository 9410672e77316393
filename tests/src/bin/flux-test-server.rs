//! The service that the multi-instance, fault and hostile-input suites run as separate
//! processes: a few `#[rate_limit]` handlers, configured from the environment like any Flux
//! service (`FLUX_REDIS_URL`, `FLUX_FAILURE_POLICY`, `FLUX_DEADLINE_MS`, `FLUX_TRUSTED_PROXIES`).
//!
//! It listens on `FLUX_ADDR` (default `127.0.0.1:0`) and prints `listening on ADDR` once ready.
//!
//! `/slow` is concurrency-limited (2 in flight per `x-client`, lease 2 s) and counts the
//! requests it runs at once; `/peak` reports the most it saw.
//!
//! `/leased` is `/one` with token leasing (`lease = 10`). `/global` is one bucket for every
//! client (10/s); `/fleet` says how many live instances this
//! one counts (the `local` policy's divisor during an outage).
//!
//! `/naive` is the contrast case, NOT how to limit: a read-then-write token counter
//! (`GET`, then `DECRBY`), the race the Lua script exists to prevent.

use std::net::SocketAddr;

use axum::Router;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use flux::{Flux, concurrency_limit, rate_limit};
use redis::AsyncCommands;

/// One hot key: 100/s, burst 50, per `x-client`.
#[rate_limit(rate = "100/s", burst = 50, key = "header:x-client", name = "one")]
async fn one() -> &'static str {
    "ok"
}

/// Many keys: 5/min, burst 3, per `x-client`.
#[rate_limit(rate = "5/min", burst = 3, key = "header:x-client", name = "many")]
async fn many() -> &'static str {
    "ok"
}

/// Steady traffic for the fault suites: far above what the load sends, per `x-client`.
#[rate_limit(
    rate = "1000/s",
    burst = 1000,
    key = "header:x-client",
    name = "steady"
)]
async fn steady() -> &'static str {
    "ok"
}

/// One bucket for everybody, as the quickstart's `/global`: 10/s, burst 10. The fleet suite
/// freezes Redis under load on it.
#[rate_limit(rate = "10/s", key = "global", name = "global")]
async fn global() -> &'static str {
    "ok"
}

/// One hot key with token leasing: 100/s, burst 50, 10 checks taken from Redis at once.
#[rate_limit(
    rate = "100/s",
    burst = 50,
    lease = 10,
    key = "header:x-client",
    name = "leased"
)]
async fn leased() -> &'static str {
    "ok"
}

/// The live instances this one counted at its last heartbeat (`Health::fleet_instances`),
/// or `unknown`.
async fn fleet() -> String {
    Flux::global()
        .health()
        .fleet_instances
        .map_or_else(|| "unknown".to_owned(), |n| n.to_string())
}

/// Per client address (trusted proxies and IPv6 grouping apply): 1/min, burst 2.
#[rate_limit(rate = "1/min", burst = 2, key = "ip", name = "ip")]
async fn by_ip() -> &'static str {
    "ok"
}

/// Requests of `/slow` running in this process now, and the most seen at once.
static RUNNING: AtomicU32 = AtomicU32::new(0);
static PEAK: AtomicU32 = AtomicU32::new(0);

/// Counts itself in `RUNNING` while alive (also when the handler panics or is dropped).
struct Running;

impl Running {
    fn enter() -> (Running, u32) {
        let now = RUNNING.fetch_add(1, Ordering::SeqCst) + 1;
        PEAK.fetch_max(now, Ordering::SeqCst);
        (Running, now)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(serde::Deserialize)]
struct SlowParams {
    /// How long the handler runs (default 500).
    ms: Option<u64>,
    /// `?panic=1`: the handler panics after sleeping.
    panic: Option<u8>,
}

/// At most 2 in flight per `x-client` across the fleet; the lease is short (2 s) so that a
/// killed instance's slots free quickly. The body reports how many ran in this process
/// when it started (`running=N`).
/// With Redis, the handler also counts itself fleet-wide (`INCR`/`DECR` of
/// `test:slow:running`) and reports what it saw at its start (`fleet=N`).
#[concurrency_limit(max = 2, key = "header:x-client", lease = "2s", name = "slow")]
async fn slow(
    State(redis): State<Option<redis::aio::ConnectionManager>>,
    Query(params): Query<SlowParams>,
) -> String {
    let (_running, now) = Running::enter();
    let mut redis = redis;
    let fleet: i64 = match redis.as_mut() {
        Some(redis) => redis.incr("test:slow:running", 1).await.unwrap_or(-1),
        None => 0,
    };
    tokio::time::sleep(Duration::from_millis(params.ms.unwrap_or(500))).await;
    if let Some(redis) = redis.as_mut() {
        let _: Result<i64, _> = redis.decr("test:slow:running", 1).await;
    }
    if params.panic == Some(1) {
        panic!("flux-test-server: /slow asked to panic");
    }
    format!("running={now} fleet={fleet}")
}

/// The most `/slow` requests this process ran at once.
async fn peak() -> String {
    PEAK.load(Ordering::SeqCst).to_string()
}

async fn health() -> &'static str {
    "ok"
}

/// Burst 50 per 10 s fixed window, decided with GET then DECRBY: two requests that read the
/// same count both pass. Kept only to show what the atomic script prevents.
async fn naive(
    State(redis): State<Option<redis::aio::ConnectionManager>>,
    headers: HeaderMap,
) -> StatusCode {
    let Some(mut redis) = redis else {
        return StatusCode::NOT_IMPLEMENTED;
    };
    let client = headers
        .get("x-client")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("anonymous");
    let key = format!("naive:{client}");
    let tokens: Option<i64> = match redis.get(&key).await {
        Ok(tokens) => tokens,
        Err(_) => return StatusCode::SERVICE_UNAVAILABLE,
    };
    let tokens = match tokens {
        Some(tokens) => tokens,
        None => {
            let _: Result<(), _> = redis.set_ex(&key, 50, 10).await;
            50
        }
    };
    if tokens >= 1 {
        let _: Result<i64, _> = redis.decr(&key, 1).await;
        StatusCode::OK
    } else {
        StatusCode::TOO_MANY_REQUESTS
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
    let flux = Flux::global();
    // The naive route's own connection; the service runs without it (Flux has its own).
    let naive_redis = match std::env::var("FLUX_REDIS_URL") {
        Ok(url) => match redis::Client::open(url) {
            Ok(client) => client.get_connection_manager().await.ok(),
            Err(_) => None,
        },
        Err(_) => None,
    };
    let app = Router::new()
        .route("/one", get(one))
        .route("/many", get(many))
        .route("/steady", get(steady))
        .route("/ip", get(by_ip))
        .route("/global", get(global))
        .route("/fleet", get(fleet))
        .route("/leased", get(leased))
        .route("/health", get(health))
        .route("/slow", get(slow))
        .route("/peak", get(peak))
        .route("/naive", get(naive))
        .with_state(naive_redis);
    let addr = std::env::var("FLUX_ADDR").unwrap_or_else(|_| "127.0.0.1:0".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on {}", listener.local_addr()?);
    eprintln!("backend: {}", flux.describe());
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}
