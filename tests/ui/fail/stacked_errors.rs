use flux::rate_limit;

// Each stacked attribute is checked, and each mistake reported once, where it was made.
#[rate_limit(rate = "10/s", name = "search")]
#[rate_limit(burst = 5)]
#[flux::rate_limit(rate = "100/min", name = "search", on_error = "closed")]
async fn handler() -> &'static str {
    "ok"
}

fn main() {}
