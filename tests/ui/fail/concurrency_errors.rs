use flux::{concurrency_limit, rate_limit};

#[concurrency_limit(max = 0)]
async fn zero() -> &'static str {
    "ok"
}

#[concurrency_limit(max = 2, lease = "10ms", rate = "1/s")]
async fn bad_options() -> &'static str {
    "ok"
}

#[concurrency_limit(key = "ip")]
async fn missing_max() -> &'static str {
    "ok"
}

#[rate_limit(rate = "1/s", key = "global")]
#[concurrency_limit(max = 2, key = "ip")]
async fn stacked_key_mismatch() -> &'static str {
    "ok"
}

#[concurrency_limit(max = 1)]
#[concurrency_limit(max = 2)]
async fn two() -> &'static str {
    "ok"
}

fn main() {}
