use flux::rate_limit;

// One token a year: a burst of 11 takes 11 years to refill.
#[rate_limit(rate = "1/365day", burst = 11)]
async fn handler() -> &'static str {
    "ok"
}

fn main() {}
