use flux::rate_limit;

#[rate_limit(rate = "10/s", burst = "20")]
async fn quoted_burst() -> &'static str {
    "ok"
}

#[rate_limit(rate = 100)]
async fn unquoted_rate() -> &'static str {
    "ok"
}

#[rate_limit(rate = "10/s", on_error = open)]
async fn unquoted_policy() -> &'static str {
    "ok"
}

fn main() {}
