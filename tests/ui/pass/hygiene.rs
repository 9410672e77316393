//! User names equal to the generated ones neither clash with nor capture them: locals
//! (hygiene hides the generated ones) and items (the generated ones are in blocks of their
//! own).
#![deny(warnings)]

use axum::extract::Path;
use axum::response::IntoResponse;
use flux::rate_limit;

static __FLUX_LIMITS: &str = "mine";

fn __flux_declared_bounds() -> &'static str {
    "mine too"
}

/// The body sees the module's items, not the generated static and bounds fn (emitted for
/// the `impl IntoResponse`).
#[rate_limit(rate = "10/s", key = "global")]
async fn body_sees_its_items() -> impl IntoResponse {
    let mine: &str = __FLUX_LIMITS;
    format!("{mine} {}", __flux_declared_bounds())
}

/// A plain fn's statements share the generated code's block: items of the same names are
/// no duplicates.
#[rate_limit(rate = "10/s", key = "global", deny = "error")]
async fn plain_declares_items(n: u32) -> Result<u32, flux::RateLimited> {
    static __FLUX_LIMITS: u32 = 1;
    fn __flux_declared_bounds() -> u32 {
        2
    }
    Ok(n + __FLUX_LIMITS + __flux_declared_bounds())
}

#[rate_limit(rate = "10/s", key = __flux_key)]
async fn named_like_the_key(Path(__flux_key): Path<String>) -> String {
    let __flux_ip = 1;
    format!("{__flux_key}{__flux_ip}")
}

#[rate_limit(rate = "10/s")]
async fn ip_param_named_like_ours(__flux_ip: String) -> String {
    __flux_ip
}

#[rate_limit(rate = "10/s", key = __flux_err, deny = "error")]
async fn plain(__flux_err: u32) -> Result<u32, flux::RateLimited> {
    let __flux_key = __flux_err + 1;
    Ok(__flux_key)
}

/// A value of any type, for calls that only need to type-check (never called).
fn any<T>() -> T {
    unreachable!("only the types matter")
}

fn main() {
    // Type-checked, never run: the injected parameters have no public constructor.
    if std::hint::black_box(false) {
        drop(named_like_the_key(any(), Path("k".to_owned())));
        drop(ip_param_named_like_ours(any(), "ip".to_owned()));
        drop(body_sees_its_items(any()));
    }
    drop(plain(1));
    drop(plain_declares_items(1));
}
