//! Limits and costs computed per request (`#[rate_limit(limit = EXPR, cost = EXPR)]`): taking
//! the caller's `Limit`, applying a computed cost, and refusing a cost no bucket can admit.
//!
//! A computed cost is any primitive integer. It is checked, never cast: zero, a negative
//! value, or one above the limit's burst (a `usize` of 2^40 included) can never be admitted,
//! so the request is refused with a reason (a 429 whose body names the cost and the burst,
//! and a log line, WARN at most once per limit per interval: the limiter's and the HTTP
//! flow's business) without asking any backend, instead of waiting forever or wrapping.

use std::borrow::{Borrow, Cow};
use std::fmt::Display;
use std::sync::Arc;

use super::decision::{Decision, RateLimited};
use super::limit::Limit;

/// The limits of one request: the attribute's `static`s, or owned copies made for it.
pub type Limits = Result<Cow<'static, [Limit]>, Unadmissible>;

/// A request whose computed cost can never be admitted by `limit`.
#[derive(Debug)]
pub struct Unadmissible {
    limit: Limit,
    reason: Arc<str>,
}

/// The limit that `limit = EXPR` gave, owned for this request (its name and numbers are
/// copied; a borrowed name is not). Its metrics handles are made on the caller's `Limit`
/// first, so that a `&'static Limit` per plan registers them once for all requests, whereas
/// a `Limit` built per request registers its own each time.
pub(crate) fn owned<L: Borrow<Limit> + ?Sized>(limit: &L) -> Limit {
    let limit = limit.borrow();
    limit.counters();
    limit.clone()
}

/// A request's computed cost: any primitive integer, converted to tokens without a cast.
#[diagnostic::on_unimplemented(
    message = "`cost` must be an integer, not `{Self}`",
    label = "`cost = EXPR` takes any primitive integer (`u8` to `u128`, `i8` to `i128`, `usize`, `isize`)"
)]
pub trait CostValue: Copy + Display {
    /// The cost in tokens, or whether it is out of range because it is negative
    /// (`Err(true)`) or larger than any burst (`Err(false)`).
    fn tokens(self) -> Result<u32, bool>;
}

macro_rules! cost_value {
    ($negative:expr => $($t:ty),*) => {$(
        impl CostValue for $t {
            fn tokens(self) -> Result<u32, bool> {
                u32::try_from(self).map_err(|_| $negative(self))
            }
        }
    )*};
}

cost_value!(|_| false => u8, u16, u32, u64, u128, usize);
cost_value!(|n| n < 0 => i8, i16, i32, i64, i128, isize);

/// `limit` with each request taking `cost` tokens, or the reason why no request of that
/// cost can ever be admitted.
pub(crate) fn with_cost<C: CostValue>(limit: Limit, cost: C) -> Result<Limit, Unadmissible> {
    let refuse = |limit: Limit, why: String| {
        let reason = format!("cost {cost} of limit {:?} {why}", limit.name()).into();
        Err(Unadmissible { limit, reason })
    };
    let burst = limit.burst();
    match cost.tokens() {
        Err(true) => refuse(limit, "is negative: a cost is at least 1 token".to_owned()),
        Ok(0) => refuse(limit, "is zero: a cost is at least 1 token".to_owned()),
        Err(false) => refuse(limit, above(burst)),
        Ok(n) if n > burst => refuse(limit, above(burst)),
        Ok(n) => match limit.clone().with_cost(n) {
            Ok(limit) => Ok(limit),
            Err(error) => refuse(limit, format!("is refused: {error}")),
        },
    }
}

fn above(burst: u32) -> String {
    format!("is larger than its burst {burst}: such a request could never be admitted")
}

/// The limits of a stack whose limits or costs are computed per request: all of them, or
/// the first that cannot admit this request.
pub(crate) fn collect<const N: usize>(limits: [Result<Limit, Unadmissible>; N]) -> Limits {
    limits
        .into_iter()
        .collect::<Result<Vec<Limit>, Unadmissible>>()
        .map(Cow::Owned)
}

impl Unadmissible {
    /// The limit at fault.
    pub(crate) fn limit(&self) -> &Limit {
        &self.limit
    }

    /// Why no request of this cost can be admitted.
    pub(crate) fn reason(&self) -> &str {
        &self.reason
    }

    /// The refusal as a plain fn's error.
    pub(crate) fn error(&self, decision: Decision) -> RateLimited {
        RateLimited::unadmissible(decision, Arc::clone(&self.reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flux_core::Rate;

    static API: Limit = Limit::new("api", Rate::per_second::<10>());

    fn reason(result: Result<Limit, Unadmissible>) -> String {
        match result {
            Ok(limit) => panic!("admissible: {limit:?}"),
            Err(refused) => refused.reason.to_string(),
        }
    }

    #[test]
    fn any_integer_type_is_checked_never_cast() {
        assert_eq!(
            with_cost(API.clone(), 3usize).map(|l| l.cost()).ok(),
            Some(3)
        );
        assert_eq!(
            with_cost(API.clone(), 10u8).map(|l| l.cost()).ok(),
            Some(10)
        );
        assert_eq!(with_cost(API.clone(), 7i64).map(|l| l.cost()).ok(), Some(7));
        // 2^40 would wrap to 0 as a u32, 2^32 + 1 to 1: both refused.
        for huge in [1u64 << 40, (1 << 32) + 1] {
            assert_eq!(
                reason(with_cost(API.clone(), huge)),
                format!(
                    "cost {huge} of limit \"api\" is larger than its burst 10: such a request \
                     could never be admitted"
                )
            );
        }
        assert!(reason(with_cost(API.clone(), 11u32)).contains("larger than its burst 10"));
        assert!(reason(with_cost(API.clone(), u128::MAX)).contains("larger than its burst"));
        assert!(reason(with_cost(API.clone(), 0usize)).contains("cost 0 of limit \"api\" is zero"));
        assert!(
            reason(with_cost(API.clone(), -1i32)).contains("cost -1 of limit \"api\" is negative")
        );
        assert!(reason(with_cost(API.clone(), i128::MIN)).contains("is negative"));
    }
}
