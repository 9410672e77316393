//! Limits keyed by the authenticated user, not the address: `key = user.id` over an extractor.
//!
//! `cargo run --example custom_key`, then
//! `curl -i -H 'authorization: Bearer alice' localhost:3000/reports` (3 per minute per user).

use std::net::SocketAddr;

use axum::Router;
use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::routing::get;
use flux::rate_limit;

/// The caller, from `Authorization: Bearer <user>` (a stand-in for real token validation).
struct User {
    id: String,
}

impl<S: Send + Sync> FromRequestParts<S> for User {
    type Rejection = (StatusCode, &'static str);

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|id| User { id: id.to_owned() })
            .ok_or((StatusCode::UNAUTHORIZED, "missing bearer token\n"))
    }
}

/// Each user may build 3 reports a minute; the key is evaluated before the body runs.
#[rate_limit(rate = "3/min", key = user.id)]
async fn reports(user: User) -> String {
    format!("report for {}\n", user.id)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().init();
    let addr = std::env::var("FLUX_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!(
        "custom_key example on http://{} (GET /reports)",
        listener.local_addr()?
    );
    let app = Router::new().route("/reports", get(reports));
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}
