use flux::rate_limit;

#[rate_limit(rate = "10/s", burst = 2, cost = 3)]
async fn handler() -> &'static str {
    "ok"
}

// Without `burst`, the burst is the rate's count.
#[rate_limit(rate = "10/s", cost = 11)]
async fn default_burst() -> &'static str {
    "ok"
}

fn main() {}
