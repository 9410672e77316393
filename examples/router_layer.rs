//! Router-wide limits with `FluxLayer`: `cargo run --example router_layer`, then
//!
//! - `curl -i localhost:3000/hello`: the router's default, 20/s, burst 5, per client address;
//! - `curl -i localhost:3000/health`: exempt, never limited;
//! - `curl -i -H 'x-api-key: k1' localhost:3000/api/items`: the default, and the `/api`
//!   group's own limit, 2/s, burst 2, per `x-api-key` (400 without it);
//! - `curl -i 'localhost:3000/export?secs=5'` three times at once: the default, and at most 2
//!   exports in flight per client address (a concurrency limit on the layer): the third is
//!   answered 429 with `Retry-After: 1` while the first two run.
//!
//! `FLUX_ADDR` sets the listen address (default 127.0.0.1:3000); `FLUX_REDIS_URL` makes the
//! limits shared through Redis.

use std::net::SocketAddr;

use std::time::Duration;

use axum::Router;
use axum::extract::Query;
use axum::http::HeaderName;
use axum::routing::get;
use flux::concurrency::ConcurrencyLimit;
use flux::{Flux, FluxLayer, Limit, Rate};

static DEFAULT: Limit = Limit::new("default", Rate::per_second::<20>());
static API: Limit = Limit::new("api", Rate::per_second::<2>());
static EXPORTS: ConcurrencyLimit = ConcurrencyLimit::new("exports", 2);

#[derive(serde::Deserialize)]
struct Export {
    /// How long the export takes, in seconds (at most 30).
    secs: Option<u64>,
}

/// A slow export: it holds its slot for `secs` seconds.
async fn export(Query(q): Query<Export>) -> String {
    let secs = q.secs.unwrap_or(1).min(30);
    tokio::time::sleep(Duration::from_secs(secs)).await;
    format!("exported in {secs} s\n")
}

fn app(flux: Flux) -> Result<Router, flux::limit::LimitError> {
    let api = Router::new()
        .route("/items", get(|| async { "items\n" }))
        .layer(FluxLayer::new(API.clone()).key_header(HeaderName::from_static("x-api-key")));
    // Only a concurrency limit on this group (the router's default applies too).
    let exports = Router::new()
        .route("/export", get(export))
        .layer(FluxLayer::with_limits([]).concurrency(EXPORTS.clone()));
    Ok(Router::new()
        .route("/hello", get(|| async { "hello\n" }))
        .route("/health", get(|| async { "ok\n" }))
        .nest("/api", api)
        .merge(exports)
        .layer(
            FluxLayer::new(DEFAULT.clone().with_burst(5)?)
                .flux(flux)
                .exempt(|parts| parts.uri.path() == "/health"),
        ))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    // Configured from the environment (FLUX_REDIS_URL, ...), like the process-wide one.
    let flux = flux::Builder::from_env()?.build()?;
    let addr = std::env::var("FLUX_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!(
        "flux router_layer example on http://{}",
        listener.local_addr()?
    );
    println!("backend: {}", flux.describe());
    println!("routes: GET /hello (20/s, burst 5, per ip)  GET /health (exempt)");
    println!("        GET /api/items (also 2/s, burst 2, per x-api-key)");
    println!("        GET /export?secs=N (also at most 2 in flight per ip)");
    axum::serve(
        listener,
        app(flux)?.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
