//! The quickstart: `cargo run --example quickstart`, then `curl -i localhost:3000/burst`.
//!
//! Without `FLUX_REDIS_URL` the limits hold per process (in-memory backend); with it
//! (`FLUX_REDIS_URL=redis://127.0.0.1:6379/ cargo run --example quickstart`) every instance
//! shares them through Redis. `FLUX_ADDR` sets the listen address (default 127.0.0.1:3000).

use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;
use flux::{Flux, concurrency_limit, rate_limit};

/// Not limited.
async fn index() -> &'static str {
    "Flux quickstart: try /burst, /global, /api (with x-api-key), /stacked, /slow\n"
}

/// 5 requests at once per client address, then 1 per second.
#[rate_limit(rate = "1/s", burst = 5, key = "ip")]
async fn burst() -> &'static str {
    "burst: ok\n"
}

/// 10 per second for everybody together.
#[rate_limit(rate = "10/s", key = "global")]
async fn global() -> &'static str {
    "global: ok\n"
}

/// 2 per second per API key; a request without `x-api-key` is answered 400.
#[rate_limit(rate = "2/s", burst = 2, key = "header:x-api-key")]
async fn api() -> &'static str {
    "api: ok\n"
}

/// Two limits at once, all or nothing: 5 per second and 20 per minute per address.
#[rate_limit(rate = "5/s", key = "ip")]
#[rate_limit(rate = "20/min", key = "ip")]
async fn stacked() -> &'static str {
    "stacked: ok\n"
}

/// At most 2 requests in flight per client address; each takes 500 ms. A third at once
/// gets 429 with `Retry-After: 1`.
#[concurrency_limit(max = 2, key = "ip")]
async fn slow() -> &'static str {
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    "slow: ok\n"
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let flux = Flux::global();
    if let Err(e) = flux.ping(std::time::Duration::from_secs(2)).await {
        tracing::error!(
            "{e}: the `{}` failure policy applies until Redis answers",
            flux.failure_policy()
        );
    }
    let addr = std::env::var("FLUX_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let app = Router::new()
        .route("/", get(index))
        .route("/burst", get(burst))
        .route("/global", get(global))
        .route("/api", get(api))
        .route("/stacked", get(stacked))
        .route("/slow", get(slow));
    println!("flux quickstart on http://{}", listener.local_addr()?);
    println!("backend: {}", flux.describe());
    println!("routes: GET /  GET /burst (1/s, burst 5, per ip)  GET /global (10/s)");
    println!("        GET /api (2/s per x-api-key)  GET /stacked (5/s and 20/min per ip)");
    println!("        GET /slow (500 ms each, at most 2 in flight per ip)");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
