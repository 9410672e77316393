use flux::rate_limit;

struct MyError;

// `MyError` has no `From<flux::RateLimited>`: the error points at the return type.
#[rate_limit(rate = "10/s", key = "global", deny = "error")]
async fn fetch() -> Result<(), MyError> {
    Ok(())
}

fn main() {}
