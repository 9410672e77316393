use flux::{RateLimited, rate_limit};

struct MyError;

impl From<RateLimited> for MyError {
    fn from(_: RateLimited) -> Self {
        MyError
    }
}

#[rate_limit(rate = "10/s", deny = "error")]
async fn fetch(tenant: &str) -> Result<(), MyError> {
    let _ = tenant;
    Ok(())
}

fn main() {}
