use flux::{RateLimited, rate_limit};

struct MyError;

impl From<RateLimited> for MyError {
    fn from(_: RateLimited) -> Self {
        MyError
    }
}

#[rate_limit(rate = "10/s", key = "ip", deny = "error")]
async fn fetch() -> Result<(), MyError> {
    Ok(())
}

fn main() {}
