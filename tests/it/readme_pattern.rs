//! The README's unit-test pattern, run as a test: a handler's limit proved without ports,
//! Redis or sleeps. The code between the markers is shown in README.md verbatim, which
//! `the_readme_shows_this_pattern` checks.

// README: begin
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::connect_info::MockConnectInfo;
use axum::{Extension, Router, body::Body, http::Request, routing::get};
use flux::rate_limit;
use tower::ServiceExt;

#[rate_limit(rate = "1/s", burst = 2, key = "ip")]
async fn search() -> &'static str {
    "results"
}

/// One request to `/search`: its status.
async fn status(app: &Router) -> u16 {
    let request = Request::get("/search")
        .body(Body::empty())
        .expect("a valid request");
    let response = app
        .clone()
        .oneshot(request)
        .await
        .expect("routers never fail");
    response.status().as_u16()
}

#[tokio::test(start_paused = true)]
async fn search_allows_two_at_once_then_one_a_second() {
    let app = Router::new()
        .route("/search", get(search))
        // An in-memory limiter on tokio's clock, for this router only.
        .layer(Extension(flux::testing::memory()))
        // The client address that `key = "ip"` reads.
        .layer(MockConnectInfo(SocketAddr::from(([192, 0, 2, 1], 4000))));
    assert_eq!(status(&app).await, 200);
    assert_eq!(status(&app).await, 200);
    assert_eq!(status(&app).await, 429);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(status(&app).await, 200);
}
// README: end

#[test]
fn the_readme_shows_this_pattern() {
    let this = include_str!("readme_pattern.rs");
    let (_, rest) = this.split_once("// README: begin\n").expect("begin marker");
    let (pattern, _) = rest.split_once("// README: end\n").expect("end marker");
    let readme = include_str!("../../README.md");
    assert!(
        readme.contains(pattern),
        "README.md must show tests/it/readme_pattern.rs between its markers, verbatim"
    );
}
