use flux::rate_limit;

#[rate_limit(rate = "10/s", key = "ip")]
#[rate_limit(rate = "100/min", key = "global")]
async fn handler() -> &'static str {
    "ok"
}

fn main() {}
