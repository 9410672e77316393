use flux::rate_limit;

#[rate_limit(rate = "10/s", mode = "dry-run")]
async fn handler() -> &'static str {
    "ok"
}

fn main() {}
