//! Property: `lua/gcra.lua` called with a batch of checks answers exactly what it answers for
//! the same checks sent one call each, in order, at the same time: each check all or nothing,
//! a later check seeing an earlier one's writes (checks of a batch share keys here on
//! purpose). Flux sends the checks that queue up together as one call.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use crate::support::RedisServer;

const GCRA: &str = include_str!("../../lua/gcra.lua");

/// One bucket of a check: which of a few keys, and its (interval, tolerance, increment) in µs.
type Bucket = (usize, [u64; 3]);

/// Whole seconds: the keys' TTLs (`PX`, which Redis counts on its own clock while the checks
/// carry their own `now`) then outlast the test, so both scripts' keys live alike.
const SECOND: u64 = 1_000_000;

fn bucket() -> impl Strategy<Value = Bucket> {
    (0..4_usize, 1..50_u64, 1..6_u64, 1..3_u64).prop_map(|(key, interval, burst, cost)| {
        let interval = interval * SECOND;
        (key, [interval, interval * burst, interval * cost])
    })
}

/// Batches of checks: per batch, the seconds since the previous batch and its checks (each of one
/// to three buckets on distinct keys, as a stacked limit has).
fn batches() -> impl Strategy<Value = Vec<(u64, Vec<Vec<Bucket>>)>> {
    let check = prop::collection::vec(bucket(), 1..4).prop_map(|mut buckets| {
        buckets.sort_by_key(|b| b.0);
        buckets.dedup_by_key(|b| b.0);
        buckets
    });
    prop::collection::vec((0..60_u64, prop::collection::vec(check, 1..8)), 1..12)
}

fn key(case: usize, k: usize) -> String {
    format!("batch:{{c}}:{case}:{k}")
}

#[test]
fn a_batch_answers_what_its_checks_answer_one_by_one() {
    let server = RedisServer::start();
    let client = redis::Client::open(server.url()).expect("valid URL");
    // The runner takes a `Fn`: the connection and the case counter live in cells.
    let conn = std::cell::RefCell::new(client.get_connection().expect("connection"));
    let script = redis::Script::new(GCRA);
    let case = std::cell::Cell::new(0_usize);
    let mut runner = TestRunner::new(Config {
        cases: 200,
        ..Config::default()
    });
    runner
        .run(&batches(), |batches| {
            case.set(case.get() + 1);
            let (one_case, batch_case) = (2 * case.get(), 2 * case.get() + 1);
            let mut conn = conn.borrow_mut();
            let mut now = 1_000_000_000_u64;
            for (gap, checks) in &batches {
                now += gap * SECOND;
                // One call each.
                let mut expected: Vec<i64> = Vec::new();
                for check in checks {
                    let mut call = script.prepare_invoke();
                    call.arg(now).arg(check.len());
                    for (k, args) in check {
                        call.key(key(one_case, *k));
                        call.arg(args[0]).arg(args[1]).arg(args[2]);
                    }
                    let reply: Vec<i64> = call.invoke(&mut *conn).expect("one check");
                    expected.extend(reply);
                }
                // All in one call.
                let mut call = script.prepare_invoke();
                call.arg(now);
                for check in checks {
                    call.arg(check.len());
                    for (k, args) in check {
                        call.key(key(batch_case, *k));
                        call.arg(args[0]).arg(args[1]).arg(args[2]);
                    }
                }
                let got: Vec<i64> = call.invoke(&mut *conn).expect("a batch of checks");
                prop_assert_eq!(&got, &expected, "at {} µs, checks {:?}", now, checks);
            }
            Ok(())
        })
        .expect("a batch answers what its checks answer one by one");
}
