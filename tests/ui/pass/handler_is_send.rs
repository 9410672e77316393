//! The expanded handlers are still `Send` futures and valid axum handlers.
#![deny(warnings)]

use std::future::Future;

use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use flux::rate_limit;

fn check<T: Future + Send>(_: T) {}

/// A value of any type, for calls that only need to type-check (never called).
fn any<T>() -> T {
    unreachable!("only the types matter")
}

#[rate_limit(rate = "10/s")]
async fn by_ip(Path(id): Path<u32>) -> String {
    // Hold something across an await, as real handlers do.
    tokio::task::yield_now().await;
    id.to_string()
}

#[rate_limit(rate = "10/s", key = "header:x-api-key", on_error = "local")]
async fn by_header() -> impl IntoResponse {
    "ok"
}

/// `impl Trait` nested in the declared type: pinned as `Result<_, StatusCode>`, so `?` infers.
#[rate_limit(rate = "10/s", key = "global")]
async fn nested_impl(Path(raw): Path<String>) -> Result<impl IntoResponse, StatusCode> {
    let n: u32 = raw.parse().map_err(|_| StatusCode::BAD_REQUEST)?;
    Ok(n.to_string())
}

#[rate_limit(rate = "10/s", key = id)]
#[rate_limit(rate = "100/min")]
async fn by_expr(Path(id): Path<u64>) {}

fn main() {
    // Type-checked, never run: the injected parameters have no public constructor.
    if std::hint::black_box(false) {
        check(by_ip(any(), Path(7)));
        check(by_header(any(), any()));
        check(by_expr(any(), Path(7)));
        check(nested_impl(any(), Path("7".to_owned())));
    }
    let _app: Router = Router::new()
        .route("/ip/{id}", get(by_ip))
        .route("/header", get(by_header))
        .route("/expr/{id}", get(by_expr))
        .route("/nested/{raw}", get(nested_impl));
}
