use flux::rate_limit;

#[rate_limit(rate = "10/s", burst = 5, burst = 6)]
async fn handler() -> &'static str {
    "ok"
}

fn main() {}
