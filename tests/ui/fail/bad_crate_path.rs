use flux::rate_limit;

#[rate_limit(rate = "10/s", crate = "my flux")]
async fn spaced() -> &'static str {
    "ok"
}

#[rate_limit(rate = "10/s", crate = flux)]
async fn unquoted() -> &'static str {
    "ok"
}

// `crate` is one per check: a later attribute may only repeat the first's.
#[rate_limit(rate = "10/s", crate = "flux")]
#[flux::rate_limit(rate = "100/min", crate = "::flux")]
async fn differs() -> &'static str {
    "ok"
}

fn main() {}
