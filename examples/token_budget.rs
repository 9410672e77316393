//! A token budget for an LLM endpoint: 10,000 tokens a minute per user. The size of an answer
//! is known only once it has been produced, so the handler takes a low estimate up front
//! (`cost = EXPR`, refused before any work when the budget cannot cover it) and charges the
//! rest afterwards with `Flux::charge`, into debt if need be: the user's next requests then
//! wait until the debt has refilled.
//!
//! `cargo run --example token_budget` (in memory), or with
//! `FLUX_REDIS_URL=redis://127.0.0.1:6379/` in front (shared by every instance); then
//!
//! ```text
//! curl -i 'localhost:3000/complete?user=alice&prompt=write+a+long+poem+about+rate+limits'
//! ```
//!
//! a few times: each answer says what it used and what is left; once the budget is spent
//! the answer is `429 Too Many Requests` with `Retry-After`.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::Query;
use axum::routing::get;
use flux::{Flux, Limit, Rate, rate_limit};

/// Every user's budget: 10,000 tokens a minute, all of them usable at once.
static TOKENS: Limit = Limit::new("llm-tokens", Rate::per_minute::<10_000>());

#[derive(serde::Deserialize)]
struct Ask {
    user: String,
    prompt: String,
}

/// What the request is known to cost before the answer exists: its prompt (a word is about
/// 2 tokens) and the shortest answer. Low on purpose: charges cannot be refunded.
fn estimate(prompt: &str) -> u64 {
    2 * prompt.split_whitespace().count() as u64 + 100
}

/// A stand-in for the model: an answer and the tokens it used (prompt included), from 1,500
/// to 6,500 more than the estimate.
async fn answer(prompt: &str) -> (String, u64) {
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let spread = 1_500 + prompt.bytes().map(u64::from).sum::<u64>() * 7_919 % 5_000;
    (
        format!("a fine answer to {prompt:?}"),
        estimate(prompt) + spread,
    )
}

/// The estimate is checked (and taken) before the body runs; the rest is charged after.
#[rate_limit(limit = &TOKENS, key = ask.user, cost = estimate(&ask.prompt))]
async fn complete(flux: Flux, Query(ask): Query<Ask>) -> String {
    let (text, used) = answer(&ask.prompt).await;
    let estimated = estimate(&ask.prompt);
    // `flux` is the limiter that checked this request (the request's own, else the global).
    let settled = flux
        .charge(ask.user.as_str(), &TOKENS, used.saturating_sub(estimated))
        .await;
    let next = if settled.retry_after.is_zero() {
        "now".to_owned()
    } else {
        format!("in {:.1} s", settled.retry_after.as_secs_f64())
    };
    format!(
        "{text}\nused {used} tokens (estimated {estimated}); {} left; next request {next}\n",
        settled.remaining
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().init();
    let addr = std::env::var("FLUX_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!(
        "token_budget example on http://{} (GET /complete?user=NAME&prompt=TEXT), limits: {}",
        listener.local_addr()?,
        Flux::global().describe()
    );
    let app = Router::new().route("/complete", get(complete));
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}
