//! Limiting a plain async fn: outbound calls to a partner API, 5 per second per tenant.
//!
//! `cargo run --example plain_fn`: with `deny = "error"` a denial is returned as `Err`,
//! converted from `flux::RateLimited`, and the body (the "API call") never runs.

use std::time::Duration;

use flux::{RateLimited, rate_limit};

#[derive(Debug)]
enum PartnerError {
    /// Our own budget for this tenant is spent: try again later.
    Throttled(Duration),
}

impl From<RateLimited> for PartnerError {
    fn from(err: RateLimited) -> Self {
        PartnerError::Throttled(err.retry_after())
    }
}

/// Calls the partner API on behalf of `tenant`, at most 5 per second per tenant.
#[rate_limit(rate = "5/s", key = tenant, deny = "error")]
async fn fetch_invoice(tenant: &str, invoice: u32) -> Result<String, PartnerError> {
    // A real client would make an HTTP request here.
    Ok(format!("invoice {invoice} of {tenant}"))
}

#[tokio::main]
async fn main() {
    for tenant in ["acme", "globex"] {
        for invoice in 1..=7 {
            match fetch_invoice(tenant, invoice).await {
                Ok(body) => println!("{tenant}: {body}"),
                Err(PartnerError::Throttled(wait)) => {
                    println!("{tenant}: invoice {invoice} throttled, retry in {wait:?}")
                }
            }
        }
    }
}
