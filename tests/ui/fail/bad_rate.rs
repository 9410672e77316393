use flux::rate_limit;

#[rate_limit(rate = "100 requests")]
async fn handler() -> &'static str {
    "ok"
}

fn main() {}
