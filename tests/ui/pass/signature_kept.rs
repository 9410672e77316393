//! Generics, where-clauses, attributes, docs, visibility, receivers and inner attributes
//! survive the expansion, and the generated code raises no warnings.
#![deny(warnings, missing_docs)]

use std::fmt::Display;
use std::future::Future;

use flux::{RateLimited, rate_limit};

fn check<T: Future + Send>(_: T) {}

/// An error that a denial converts into.
#[derive(Debug)]
pub struct Throttled;

impl From<RateLimited> for Throttled {
    fn from(_: RateLimited) -> Self {
        Throttled
    }
}

/// A client.
pub struct Client<T> {
    tenant: String,
    tag: T,
}

impl<T> Client<T>
where
    T: Display + Sync,
{
    /// A documented, generic method keyed by a field of `self`.
    #[rate_limit(rate = "5/s", key = self.tenant, deny = "error")]
    #[inline]
    pub async fn call<'a, U>(&'a self, extra: &'a U) -> Result<String, Throttled>
    where
        U: Display + Sync + ?Sized,
    {
        #![allow(clippy::useless_format)]
        Ok(format!("{}:{}:{}", self.tenant, self.tag, extra))
    }

    /// An HTTP-style expansion on a method (not routable, but it compiles).
    #[flux::rate_limit(rate = "5/s", key = "global")]
    pub(crate) async fn describe(&self) -> String {
        self.tenant.clone()
    }
}

/// A generic plain fn with a where-clause, stacked limits and the `?` operator.
#[rate_limit(rate = "5/s", burst = 10, key = id.to_string(), deny = "error", name = "parse-fast")]
#[rate_limit(rate = "100/hour", name = "parse-slow", key = id.to_string())]
#[must_use = "a result"]
pub async fn parse<I>(id: I, raw: &str) -> Result<u32, Box<dyn std::error::Error + Send + Sync>>
where
    I: Display + Sync,
{
    Ok(raw.parse::<u32>()?)
}

/// A value of any type, for calls that only need to type-check (never called).
fn any<T>() -> T {
    unreachable!("only the types matter")
}

fn main() {
    let client = Client {
        tenant: "acme".to_owned(),
        tag: 1u8,
    };
    check(client.call("x"));
    // Type-checked, never run: the injected limiter scope has no public constructor.
    if std::hint::black_box(false) {
        check(client.describe(any()));
    }
    check(parse(7, "1"));
}
