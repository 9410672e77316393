use flux::rate_limit;

struct Report;

// A handler's declared return type must implement `IntoResponse`: the error points at it.
#[rate_limit(rate = "10/s")]
async fn handler() -> Report {
    Report
}

fn main() {}
