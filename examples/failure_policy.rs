//! Failure policies: what a limited endpoint does while Redis is down.
//!
//! `cargo run --example failure_policy` points Flux at a port where nothing listens (or at
//! `FLUX_REDIS_URL`, so you can stop your Redis and watch). The limiter's default policy is
//! `local` (per-process limits during the outage); one handler overrides it with `closed`
//! (503), another with `open` (serve unchecked).

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use flux::{FailurePolicy, Flux, rate_limit};

/// During an outage: limited per process.
#[rate_limit(rate = "2/s", key = "ip")]
async fn search() -> &'static str {
    "search: ok\n"
}

/// During an outage: refused with 503 (payments must never exceed their limit).
#[rate_limit(rate = "1/s", key = "ip", on_error = "closed")]
async fn pay() -> &'static str {
    "pay: ok\n"
}

/// During an outage: served unchecked.
#[rate_limit(rate = "1/s", key = "ip", on_error = "open")]
async fn health() -> &'static str {
    "health: ok\n"
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().init();
    let url = std::env::var("FLUX_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:1/".to_owned());
    let flux = Flux::builder()
        .redis(url)
        .deadline(Duration::from_millis(50))
        .failure_policy(FailurePolicy::Local)
        .install()?;
    println!(
        "backend: {} (policy {})",
        flux.describe(),
        flux.failure_policy()
    );
    let addr = std::env::var("FLUX_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!(
        "failure_policy example on http://{}: GET /search /pay /health",
        listener.local_addr()?
    );
    let app = Router::new()
        .route("/search", get(search))
        .route("/pay", get(pay))
        .route("/health", get(health));
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}
