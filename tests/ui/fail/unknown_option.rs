use flux::rate_limit;

#[rate_limit(rate = "10/s", brust = 5)]
async fn handler() -> &'static str {
    "ok"
}

fn main() {}
