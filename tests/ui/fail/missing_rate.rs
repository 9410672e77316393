use flux::rate_limit;

#[rate_limit(burst = 5)]
async fn handler() -> &'static str {
    "ok"
}

fn main() {}
