use axum::http::HeaderMap;
use flux::rate_limit;

#[rate_limit(rate = "10/s", exempt = headers.get("x-internal"))]
async fn handler(headers: HeaderMap) -> &'static str {
    "ok"
}

fn main() {}
