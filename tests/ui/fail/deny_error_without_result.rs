use flux::rate_limit;

#[rate_limit(rate = "10/s", key = "global", deny = "error")]
async fn fetch() {}

fn main() {}
