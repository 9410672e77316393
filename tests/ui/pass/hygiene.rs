//! User names equal to the generated ones neither clash with nor capture them.
#![deny(warnings)]

use axum::extract::Path;
use flux::{ClientIp, Key, rate_limit};

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

fn main() {
    drop(named_like_the_key(Path("k".to_owned())));
    drop(ip_param_named_like_ours(
        ClientIp(Key::global()),
        "ip".to_owned(),
    ));
    drop(plain(1));
}
