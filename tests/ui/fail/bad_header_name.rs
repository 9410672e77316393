use flux::rate_limit;

#[rate_limit(rate = "10/s", key = "header:x api key")]
async fn handler() -> &'static str {
    "ok"
}

fn main() {}
