//! Operating Flux: metrics, health, shadow mode and exemptions.
//!
//! `cargo run --example observability`, then:
//!
//! - `curl localhost:3000/limited` (2/s, burst 2, per ip): the third request at once is 429;
//! - `curl localhost:3000/shadow` (the same limit, `mode = "shadow"`): never 429, but
//!   counted `shadow_denied`;
//! - `curl -H 'x-internal: yes' localhost:3000/internal`: exempt, never limited;
//! - `curl localhost:3000/metrics`: Prometheus text (`flux_decisions_total`, ...);
//! - `curl localhost:3000/healthz`: the limiter's health as JSON; 503 only when the failure
//!   policy is `closed` and Redis is unavailable.
//!
//! `FLUX_ADDR` sets the listen address (default 127.0.0.1:3000); `FLUX_REDIS_URL` makes the
//! limits shared through Redis.

use std::net::SocketAddr;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use flux::{Flux, rate_limit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// 2 per second, 2 at once, per client address.
#[rate_limit(rate = "2/s", burst = 2, key = "ip")]
async fn limited() -> &'static str {
    "limited: ok\n"
}

/// The same limit in shadow mode: decided, charged and counted, never enforced.
#[rate_limit(rate = "2/s", burst = 2, key = "ip", mode = "shadow")]
async fn shadow() -> &'static str {
    "shadow: ok\n"
}

/// The same limit, except for requests that say they are internal.
#[rate_limit(rate = "2/s", burst = 2, key = "ip", exempt = is_internal(&headers))]
async fn internal(headers: HeaderMap) -> &'static str {
    "internal: ok\n"
}

fn is_internal(headers: &HeaderMap) -> bool {
    headers
        .get("x-internal")
        .is_some_and(|value| value.as_bytes() == b"yes")
}

async fn healthz() -> impl IntoResponse {
    let health = Flux::global().health();
    let status = if health.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(health))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    // Install the exporter before the first check, so every metric reaches it.
    let prometheus: PrometheusHandle = PrometheusBuilder::new().install_recorder()?;
    let flux = Flux::global();
    let addr = std::env::var("FLUX_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let app = Router::new()
        .route("/limited", get(limited))
        .route("/shadow", get(shadow))
        .route("/internal", get(internal))
        .route("/healthz", get(healthz))
        .route("/metrics", get(move || async move { prometheus.render() }));
    println!(
        "flux observability example on http://{}",
        listener.local_addr()?
    );
    println!("backend: {}", flux.describe());
    println!("routes: GET /limited (2/s, burst 2, per ip)  GET /shadow (same, shadow mode)");
    println!(
        "        GET /internal (same, exempt with x-internal: yes)  GET /metrics  GET /healthz"
    );
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
