//! Property: the Lua script (in a real Redis) and the in-memory backend both agree with a plain
//! token bucket, written independently here, on random arrival times, rates, bursts and costs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use flux::{Decision, Flux, Limit, Rate};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use crate::support::RedisServer;

/// A token bucket as the textbook states it: `credit` is refill time banked, in µs (one token
/// = one emission interval), capped at the bucket's capacity.
#[derive(Clone, Debug)]
struct Bucket {
    interval: u64,
    capacity: u64,
    increment: u64,
    credit: u64,
    last: u64,
}

impl Bucket {
    fn new(limit: &Limit, now: u64) -> Bucket {
        let interval = limit.rate().emission_interval_micros();
        Bucket {
            interval,
            capacity: interval * u64::from(limit.burst()),
            increment: interval * u64::from(limit.cost()),
            credit: interval * u64::from(limit.burst()),
            last: now,
        }
    }

    fn refill(&mut self, now: u64) {
        self.credit = (self.credit + (now - self.last)).min(self.capacity);
        self.last = now;
    }
}

/// The expected decision for `buckets` at `now`, all or nothing, summarised as Flux documents:
/// on denial the limit with the longest wait, on admission the one with the fewest tokens left.
fn expect(buckets: &mut [Bucket], now: u64) -> (bool, u64, u64, usize) {
    for b in buckets.iter_mut() {
        b.refill(now);
    }
    let allowed = buckets.iter().all(|b| b.credit >= b.increment);
    if allowed {
        for b in buckets.iter_mut() {
            b.credit -= b.increment;
        }
        let (i, b) = buckets
            .iter()
            .enumerate()
            .min_by_key(|(_, b)| b.credit / b.interval)
            .expect("at least one limit");
        (true, b.credit / b.interval, 0, i)
    } else {
        let retry = |b: &Bucket| b.increment.saturating_sub(b.credit);
        let (i, b) = buckets
            .iter()
            .enumerate()
            .max_by_key(|(i, b)| (retry(b), std::cmp::Reverse(*i)))
            .expect("at least one limit");
        (false, b.credit / b.interval, retry(b), i)
    }
}

#[derive(Clone, Debug)]
struct Case {
    limits: Vec<Limit>,
    gaps: Vec<u64>,
}

fn limit_strategy(name: &'static str) -> impl Strategy<Value = Limit> {
    (
        1u32..=20,
        prop::sample::select(vec![250_000u64, 1_000_000, 10_000_000, 60_000_000]),
        1u32..=30,
        1u32..=30,
    )
        .prop_map(move |(count, period_us, burst, cost)| {
            let rate = Rate::new(
                count.try_into().expect("nonzero"),
                Duration::from_micros(period_us),
            )
            .expect("valid rate");
            Limit::named(name, rate)
                .with_burst(burst)
                .and_then(|l| l.with_cost(cost.min(burst)))
                .expect("valid limit")
        })
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(limit_strategy("a"), 1..=1),
        prop::option::of(limit_strategy("b")),
        prop::collection::vec(
            prop_oneof![Just(0u64), 0u64..5_000, 0u64..2_000_000, 0u64..70_000_000],
            1..60,
        ),
    )
        .prop_map(|(mut limits, second, gaps)| {
            limits.extend(second);
            Case { limits, gaps }
        })
}

fn check(
    decision: &Decision,
    expected: (bool, u64, u64, usize),
    step: usize,
) -> Result<(), TestCaseError> {
    let (allowed, remaining, retry, index) = expected;
    prop_assert_eq!(decision.allowed, allowed, "step {}", step);
    prop_assert_eq!(
        u64::from(decision.remaining),
        remaining,
        "remaining, step {}",
        step
    );
    prop_assert_eq!(
        decision.retry_after,
        Duration::from_micros(retry),
        "retry_after, step {}",
        step
    );
    prop_assert_eq!(decision.index, index, "deciding limit, step {}", step);
    Ok(())
}

#[test]
fn lua_and_memory_backends_match_the_token_bucket_model() {
    let server = RedisServer::start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let redis = Flux::builder()
        .redis(server.url())
        .key_prefix("model")
        .deadline(Duration::from_secs(5))
        .build()
        .expect("valid configuration");
    let memory = Flux::builder().build().expect("valid configuration");
    let counter = AtomicU64::new(0);
    let mut runner = TestRunner::new(Config {
        cases: 96,
        ..Config::default()
    });
    runner
        .run(&case_strategy(), |case| {
            // A fresh client per case: no state carries between cases.
            let key = format!("case-{}", counter.fetch_add(1, Ordering::Relaxed));
            let mut now = 1_700_000_000_000_000u64;
            let mut model: Vec<Bucket> = case.limits.iter().map(|l| Bucket::new(l, now)).collect();
            runtime.block_on(async {
                for (step, gap) in case.gaps.iter().enumerate() {
                    now += gap;
                    let expected = expect(&mut model, now);
                    let lua = redis
                        .try_check_at(key.as_str(), &case.limits, now)
                        .await
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    check(&lua, expected, step)?;
                    let mem = memory
                        .try_check_at(key.as_str(), &case.limits, now)
                        .await
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    prop_assert_eq!(&mem, &lua, "memory vs lua, step {}", step);
                }
                Ok(())
            })
        })
        .unwrap_or_else(|failure| panic!("{failure}"));
}
