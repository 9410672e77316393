//! `crate = "..."`: with the runtime under another name, every path the expansion emits
//! starts from that name, and stacked `renamed_flux::rate_limit` attributes are collected
//! into one check.
#![deny(warnings)]

// The runtime under another name, as `renamed_flux = { package = "flux-ratelimit", ... }` in
// Cargo.toml would give it (Cargo refuses one package under two names in one manifest, and
// the other cases need it as `flux`).
extern crate flux as renamed_flux;

// And `::flux` made to name another crate, so that a path the expansion forgot to rename
// does not compile.
extern crate core as flux;

use std::future::Future;

use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use renamed_flux::{RateLimited, rate_limit};

fn check<T: Future + Send>(_: T) {}

#[rate_limit(rate = "10/s", crate = "renamed_flux")]
#[renamed_flux::rate_limit(rate = "100/min")]
async fn by_ip(Path(id): Path<u32>) -> String {
    id.to_string()
}

#[rate_limit(
    rate = "10/s",
    key = "header:x-api-key",
    on_error = "local",
    crate = "::renamed_flux"
)]
async fn by_header() -> impl IntoResponse {
    "ok"
}

#[rate_limit(rate = "10/s", key = id, crate = "renamed_flux")]
#[rate_limit(rate = "100/min", crate = "renamed_flux")]
async fn by_expr(Path(id): Path<u64>) -> Result<impl IntoResponse, StatusCode> {
    Ok(id.to_string())
}

#[renamed_flux::rate_limit(rate = "5/s", key = "global", deny = "error", crate = "renamed_flux")]
async fn plain(n: u32) -> Result<u32, RateLimited> {
    Ok(n + 1)
}

/// A value of any type, for calls that only need to type-check (never called).
fn any<T>() -> T {
    unreachable!("only the types matter")
}

fn main() {
    // Type-checked, never run: the injected parameters have no public constructor.
    if std::hint::black_box(false) {
        check(by_ip(any(), Path(7)));
        check(by_header(any(), any()));
        check(by_expr(any(), Path(7)));
    }
    check(plain(1));
    let _app: Router = Router::new()
        .route("/ip/{id}", get(by_ip))
        .route("/header", get(by_header))
        .route("/expr/{id}", get(by_expr));
}
