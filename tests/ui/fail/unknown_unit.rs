use flux::rate_limit;

#[rate_limit(rate = "10/fortnight")]
async fn handler() -> &'static str {
    "ok"
}

fn main() {}
