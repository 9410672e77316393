use flux::rate_limit;

struct Tenant;

// `Tenant` does not implement `flux::key::ToKey`: the error points at the key expression.
#[rate_limit(rate = "10/s", key = tenant)]
async fn handler(tenant: Tenant) -> &'static str {
    let _ = tenant;
    "ok"
}

fn main() {}
