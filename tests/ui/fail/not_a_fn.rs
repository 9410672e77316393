use flux::rate_limit;

#[rate_limit(rate = "10/s")]
struct Handler;

fn main() {}
