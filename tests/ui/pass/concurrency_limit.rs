//! `#[concurrency_limit]` alone and stacked with `#[rate_limit]` in either order: `Send`
//! futures and valid axum handlers.
#![deny(warnings)]

use std::future::Future;

use axum::Router;
use axum::routing::get;
use flux::{concurrency_limit, rate_limit};

fn check<T: Future + Send>(_: T) {}

#[concurrency_limit(max = 2)]
async fn alone() -> &'static str {
    tokio::task::yield_now().await;
    "ok"
}

#[concurrency_limit(max = 3, lease = "10s", key = "header:x-api-key", on_error = "local")]
#[rate_limit(rate = "10/min")]
async fn slots_first() -> String {
    "ok".to_owned()
}

#[rate_limit(rate = "10/min", key = "global", mode = "shadow")]
#[flux::concurrency_limit(max = 1, name = "exports")]
async fn rate_first() -> &'static str {
    "ok"
}

fn main() {
    // Type-checked, never run: the injected parameter has no public constructor.
    if std::hint::black_box(false) {
        check(alone(any()));
        check(slots_first(any(), any()));
        check(rate_first(any()));
    }
    let _app: Router = Router::new()
        .route("/alone", get(alone))
        .route("/slots_first", get(slots_first))
        .route("/rate_first", get(rate_first));
}

/// A value of any type, for calls that only need to type-check (never called).
fn any<T>() -> T {
    unreachable!("only the types matter")
}
