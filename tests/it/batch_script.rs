//! Property: `lua/gcra.lua` called with a batch of checks answers exactly what it answers for
//! the same checks sent one call each, in order, at the same time: each check all or nothing,
//! a later check seeing an earlier one's writes (checks of a batch share keys here on
//! purpose). Flux sends the checks that queue up together as one call. Some keys hold a set,
//! so the checks that read them fail (`WRONGTYPE`): such a check fails alone, with Redis' error
//! as its share of the reply, and writes nothing; the others are decided as if alone.

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

/// What the script answered for one check: its values, or the code of the error Redis gave
/// its read or write.
#[derive(Debug, PartialEq)]
enum Answer {
    Values(Vec<i64>),
    Failed(String),
}

/// The answers of `sizes.len()` checks of `sizes[i]` keys each in one script reply.
fn answers(reply: &[redis::Value], sizes: &[usize]) -> Result<Vec<Answer>, String> {
    let mut at = 0;
    let mut out = Vec::new();
    for &n in sizes {
        let share = reply
            .get(at..at + 1 + 3 * n)
            .ok_or_else(|| format!("{} values for checks of {sizes:?} keys", reply.len()))?;
        at += 1 + 3 * n;
        out.push(match share {
            [redis::Value::BulkString(text), ..] => {
                let text = String::from_utf8_lossy(text);
                Answer::Failed(text.split(' ').next().unwrap_or("").to_owned())
            }
            _ => Answer::Values(
                share
                    .iter()
                    .map(|v| match v {
                        redis::Value::Int(v) => Ok(*v),
                        other => Err(format!("not an integer: {other:?}")),
                    })
                    .collect::<Result<_, _>>()?,
            ),
        });
    }
    if at != reply.len() {
        return Err(format!(
            "{} values for checks of {sizes:?} keys",
            reply.len()
        ));
    }
    Ok(out)
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
    // Which of the 4 keys hold a set instead of a bucket (none in half the cases).
    let poisoned = prop::collection::vec(prop::bool::weighted(0.15), 4);
    runner
        .run(&(batches(), poisoned), |(batches, poisoned)| {
            case.set(case.get() + 1);
            let (one_case, batch_case) = (2 * case.get(), 2 * case.get() + 1);
            let mut conn = conn.borrow_mut();
            let poisoned: Vec<usize> = if case.get().is_multiple_of(2) {
                Vec::new()
            } else {
                (0..4).filter(|&k| poisoned[k]).collect()
            };
            for &k in &poisoned {
                for c in [one_case, batch_case] {
                    redis::cmd("SADD")
                        .arg(key(c, k))
                        .arg("x")
                        .exec(&mut *conn)
                        .expect("SADD");
                }
            }
            let mut now = 1_000_000_000_u64;
            for (gap, checks) in &batches {
                now += gap * SECOND;
                let sizes: Vec<usize> = checks.iter().map(Vec::len).collect();
                // One call each.
                let mut expected = Vec::new();
                for check in checks {
                    let mut call = script.prepare_invoke();
                    call.arg(now).arg(check.len());
                    for (k, args) in check {
                        call.key(key(one_case, *k));
                        call.arg(args[0]).arg(args[1]).arg(args[2]);
                    }
                    expected.push(match call.invoke::<Vec<redis::Value>>(&mut *conn) {
                        Ok(reply) => answers(&reply, &[check.len()])
                            .expect("one check's reply")
                            .remove(0),
                        Err(e) => Answer::Failed(e.code().unwrap_or("?").to_owned()),
                    });
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
                let got = call
                    .invoke::<Vec<redis::Value>>(&mut *conn)
                    .map_err(|e| format!("the whole batch failed: {e}"))
                    .and_then(|reply| answers(&reply, &sizes));
                prop_assert_eq!(
                    got,
                    Ok(expected),
                    "at {} µs, checks {:?}, sets at keys {:?}",
                    now,
                    checks,
                    &poisoned
                );
            }
            // The same writes: the buckets hold the same, the sets are still sets.
            for k in 0..4 {
                let kinds: Vec<String> = [one_case, batch_case]
                    .iter()
                    .map(|&c| {
                        let kind: String = redis::cmd("TYPE")
                            .arg(key(c, k))
                            .query(&mut *conn)
                            .expect("TYPE");
                        if kind == "string" {
                            redis::cmd("GET")
                                .arg(key(c, k))
                                .query(&mut *conn)
                                .expect("GET")
                        } else {
                            kind
                        }
                    })
                    .collect();
                prop_assert_eq!(&kinds[0], &kinds[1], "key {}", k);
                if poisoned.contains(&k) {
                    prop_assert_eq!(&kinds[0], "set");
                }
            }
            Ok(())
        })
        .expect("a batch answers what its checks answer one by one");
}

/// Flux's side: checks queued together on one connection share one script call; the one whose
/// bucket key holds a set gets Redis' `WRONGTYPE` as its error, and every other check of the
/// call is decided as the same checks made one by one decide it. On one thread, so that the
/// batch task runs only once every check is queued.
#[tokio::test(flavor = "current_thread")]
async fn a_check_that_fails_in_flux_s_batch_fails_alone() {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::Poll;

    use flux::error::Error;
    use flux::{Decision, Flux, Limit, Rate};

    static API: Limit = Limit::new("api", Rate::per_hour::<3>());
    let limits = std::slice::from_ref(&API);
    let server = RedisServer::start();
    let clients: Vec<&str> = (0..16)
        .map(|i| {
            if i == 7 {
                "bad"
            } else {
                ["a", "b", "c"][i % 3]
            }
        })
        .collect();
    type Answer = Result<(bool, u32), Option<String>>;
    let answer = |d: Result<Decision, Error>| -> Answer {
        match d {
            Ok(d) => Ok((d.allowed, d.remaining)),
            Err(Error::Backend(e)) => Err(e.code().map(str::to_owned)),
            Err(e) => panic!("not Redis' error: {e}"),
        }
    };
    let mut expected = Vec::new();
    {
        let flux = server.flux("alone");
        server.cli(&["SADD", &server.bucket("alone", "bad", "api"), "x"]);
        for client in &clients {
            expected.push(answer(flux.try_check(*client, limits).await));
        }
    }
    let flux: Flux = server.flux("together");
    server.cli(&["SADD", &server.bucket("together", "bad", "api"), "x"]);
    flux.ping(std::time::Duration::from_secs(5))
        .await
        .expect("connected");
    // Polled in turn on this one task: the first goes alone on the connection, the fifteen
    // others queue up behind it and go as one script call.
    type Check<'a> = Pin<Box<dyn Future<Output = Result<Decision, Error>> + Send + 'a>>;
    let mut checks: Vec<Check> = clients
        .iter()
        .map(|client| Box::pin(flux.try_check(*client, limits)) as Pin<Box<_>>)
        .collect();
    let mut got: Vec<Option<Answer>> = (0..checks.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        for (check, slot) in checks.iter_mut().zip(got.iter_mut()) {
            if slot.is_none()
                && let Poll::Ready(d) = check.as_mut().poll(cx)
            {
                *slot = Some(answer(d));
            }
        }
        if got.iter().all(Option::is_some) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    let got: Vec<Answer> = got.into_iter().flatten().collect();
    assert_eq!(got, expected);
    assert_eq!(got[7], Err(Some("WRONGTYPE".to_owned())), "{got:?}");
    assert_eq!(got.iter().filter(|a| a.is_err()).count(), 1, "{got:?}");
}
