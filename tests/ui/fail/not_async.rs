use flux::rate_limit;

#[rate_limit(rate = "10/s")]
fn handler() -> &'static str {
    "ok"
}

fn main() {}
