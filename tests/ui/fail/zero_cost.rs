use flux::rate_limit;

#[rate_limit(rate = "10/s", cost = 0)]
async fn handler() -> &'static str {
    "ok"
}

fn main() {}
