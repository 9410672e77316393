use flux::{Limit, Rate, rate_limit};

static FREE: Limit = Limit::new("free", Rate::per_second::<1>());

// `limit` gives rate, burst and name: each of them is an error at its argument.
#[rate_limit(limit = &FREE, rate = "10/s", burst = 5, name = "x")]
async fn limit_with_rate() -> &'static str {
    "ok"
}

// A literal is not a limit.
#[rate_limit(limit = "10/s")]
async fn literal_limit() -> &'static str {
    "ok"
}

// A negative literal cost, and a zero one with a computed limit.
#[rate_limit(rate = "10/s", cost = -1)]
async fn negative_cost() -> &'static str {
    "ok"
}

#[rate_limit(limit = &FREE, cost = 0)]
async fn zero_cost_with_limit() -> &'static str {
    "ok"
}

fn main() {}
