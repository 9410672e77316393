//! Token leasing (`lease = N`): an instance takes up to N checks' worth from the shared bucket
//! in one script call and admits them itself. Against a real Redis: leased tokens come out of
//! the bucket (never more admitted than it holds, across three service processes too), Redis
//! sees about one call per N checks, and a flushed script cache, a `FLUSHALL` or a restarted
//! Redis lose leases safely.
//!
//! With `--nocapture` the three-instance test prints its figures (docs/operations.md).

mod support;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use flux::config::BreakerConfig;
use flux::decision::Source;
use flux::{FailurePolicy, Flux, Limit, Rate};
use support::{Conn, Instance, RedisServer, wait_healthy};

/// 20 tokens and (practically) no refill during a test, leased 5 at a time.
static SCARCE: Limit = Limit::new("scarce", Rate::per_hour::<1>()).with_lease(5);

fn flux(server: &RedisServer, deny_cache: bool) -> Flux {
    Flux::builder()
        .deny_cache(deny_cache)
        .redis(server.url())
        .key_prefix("lease")
        .deadline(Duration::from_millis(200))
        .breaker(BreakerConfig::new(
            NonZeroU32::new(3).expect("nonzero"),
            Duration::from_millis(100),
        ))
        // Only Redis (or a lease) may admit: an outage must not hide an over-admission.
        .failure_policy(FailurePolicy::Closed)
        .build()
        .expect("valid configuration")
}

fn scarce() -> Limit {
    SCARCE.clone().with_burst(20).expect("valid burst")
}

/// Checks `n` times: (admitted, admitted from a lease, fallback answers).
async fn checks(flux: &Flux, limit: &Limit, n: usize) -> (u32, u32, u32) {
    let (mut admitted, mut leased, mut fallback) = (0, 0, 0);
    for _ in 0..n {
        let d = flux.check("client", limit).await;
        admitted += u32::from(d.allowed);
        leased += u32::from(d.source == Source::Leased);
        fallback += u32::from(matches!(d.source, Source::FailClosed | Source::FailOpen));
    }
    (admitted, leased, fallback)
}

/// The script itself, at explicit times: a lease (`"n:want"`) takes as many checks as every
/// bucket of the check holds, at most `want`, and a plain check after it sees what is left.
#[test]
fn the_script_takes_what_every_bucket_holds() {
    let server = RedisServer::start();
    let client = redis::Client::open(server.url()).expect("valid URL");
    let mut conn = client.get_connection().expect("connection");
    let script = redis::Script::new(include_str!("../lua/gcra.lua"));
    // One token a second (so that the keys outlive the test: their TTL is real time);
    // `burst` tokens; a check of one token.
    const SEC: u64 = 1_000_000;
    let mut call = |keys: &[&str], bursts: &[u64], now: u64, count: &str| -> Vec<i64> {
        let mut invocation = script.prepare_invoke();
        for key in keys {
            invocation.key(*key);
        }
        invocation.arg(now).arg(count);
        for burst in bursts {
            invocation.arg(SEC).arg(burst * SEC).arg(SEC);
        }
        invocation.invoke(&mut conn).expect("the script answers")
    };
    let t = 1_000 * SEC;
    // 10 tokens: a lease of 4 takes 4 (6 left), one of 10 takes the 6, the next none.
    assert_eq!(call(&["a"], &[10], t, "1:4")[..2], [4, 6]);
    assert_eq!(call(&["a"], &[10], t, "1:10")[..2], [6, 0]);
    assert_eq!(
        call(&["a"], &[10], t, "1:10"),
        [0, 0, SEC as i64, 10 * SEC as i64]
    );
    // 2.5 s later: 2 tokens; a plain check takes one, the lease the other.
    assert_eq!(call(&["a"], &[10], t + 5 * SEC / 2, "1")[0], 1);
    assert_eq!(call(&["a"], &[10], t + 5 * SEC / 2, "1:10")[0], 1);
    assert_eq!(call(&["a"], &[10], t + 5 * SEC / 2, "1")[0], 0);
    // Two buckets, 10 and 3 tokens: the lease takes 3 from each.
    let both = call(&["b", "c"], &[10, 3], t, "2:5");
    assert_eq!((both[0], both[1], both[4]), (3, 7, 0));
    assert_eq!(call(&["b"], &[10], t, "1:10")[0], 7, "b gave 3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leased_tokens_come_out_of_the_bucket() {
    let server = RedisServer::start();
    let flux = flux(&server, true);
    let limit = scarce();
    server.reset_stats();
    let (admitted, leased, fallback) = checks(&flux, &limit, 30).await;
    assert_eq!(fallback, 0);
    assert_eq!(admitted, 20, "exactly the burst, leased or not");
    assert_eq!(
        leased, 16,
        "4 refills of 5: one from Redis, 4 from the lease each"
    );
    // 4 refills, and the denials after them: the deny cache answers most.
    let calls = server.command_calls("evalsha");
    assert!(calls <= 8, "{calls} script calls for 30 checks");
    let denied = flux.check("client", &limit).await;
    assert!(!denied.allowed);
    assert!(
        matches!(denied.source, Source::Cached | Source::Backend),
        "{denied:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_flush_flushall_and_restart_lose_leases_safely() {
    let mut server = RedisServer::start();
    // Without the deny cache, whose denials would outlast the FLUSHALL by an hour.
    let flux = flux(&server, false);
    let limit = scarce();

    // Spend 3 checks: one lease of 5, 2 left in it.
    assert_eq!(checks(&flux, &limit, 3).await, (3, 2, 0));
    // SCRIPT FLUSH: the bucket stands; the lease is spent, the script reloaded, and the total
    // is still exactly the burst.
    server.flush_scripts();
    let (admitted, _, fallback) = checks(&flux, &limit, 30).await;
    assert_eq!(
        fallback, 0,
        "a flushed script cache is reloaded inside the check"
    );
    assert_eq!(3 + admitted, 20, "SCRIPT FLUSH: exactly the burst in all");

    // FLUSHALL: a full bucket again, nothing more (no lease was held).
    server.cli(&["FLUSHALL"]);
    let (admitted, _, fallback) = checks(&flux, &limit, 30).await;
    assert_eq!(fallback, 0);
    assert_eq!(admitted, 20, "FLUSHALL: a fresh bucket, exactly the burst");

    // A restart with 3 checks of a lease held: those 3, then a fresh bucket.
    server.cli(&["FLUSHALL"]);
    assert_eq!(checks(&flux, &limit, 2).await.0, 2);
    server.restart();
    let start = Instant::now();
    let mut admitted = 0;
    let mut answered = 0;
    while answered < 40 && start.elapsed() < Duration::from_secs(10) {
        let d = flux.check("client", &limit).await;
        if d.source == Source::FailClosed {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        answered += 1;
        admitted += u32::from(d.allowed);
    }
    assert_eq!(answered, 40, "limiting resumed after the restart");
    assert!(
        (20..=23).contains(&admitted),
        "restart: the 3 leased checks held at most, then a fresh bucket: {admitted}"
    );
}

/// Three service processes, `/leased` (100/s, burst 50, lease 10), one client at three times
/// the limit: within the bound, and at least 0.9 of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_at_three_times_the_limit_admit_within_the_bound() {
    let server = RedisServer::start();
    let url = server.url();
    let instances: Vec<Instance> = (0..3)
        .map(|_| {
            Instance::start(&[
                ("FLUX_REDIS_URL", url.as_str()),
                ("FLUX_DEADLINE_MS", "2000"),
                ("FLUX_FAILURE_POLICY", "closed"),
            ])
        })
        .collect();
    wait_healthy(&instances).await;
    server.reset_stats();
    let admitted = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let run_for = Duration::from_secs(3);
    let start = Instant::now();
    // One connection per instance, one request every 10 ms each: 300 requests/s offered.
    let tasks: Vec<_> = instances
        .iter()
        .map(|instance| {
            let (addr, admitted, sent) =
                (instance.addr(), Arc::clone(&admitted), Arc::clone(&sent));
            tokio::spawn(async move {
                let mut conn = Conn::open(addr).await.expect("connect");
                let mut every = tokio::time::interval(Duration::from_millis(10));
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                while start.elapsed() < run_for {
                    every.tick().await;
                    let reply = conn
                        .get("/leased", &[("x-client", b"hot")])
                        .await
                        .expect("answers");
                    assert!(matches!(reply.status, 200 | 429), "{}", reply.status);
                    sent.fetch_add(1, Ordering::Relaxed);
                    admitted.fetch_add(u64::from(reply.status == 200), Ordering::Relaxed);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("load task");
    }
    let elapsed = start.elapsed();
    let (admitted, sent) = (
        admitted.load(Ordering::Relaxed),
        sent.load(Ordering::Relaxed),
    );
    let calls = server.command_calls("evalsha");
    let bound = 50.0 + 100.0 * elapsed.as_secs_f64() + 1.0;
    println!(
        "leasing, 3 instances, /leased 100/s burst 50 lease 10, {sent} requests in {elapsed:.2?} \
         ({:.1}x the limit): {admitted} admitted, bound {bound:.0} ({:.3} of it); \
         {calls} script calls ({:.3} per request)",
        sent as f64 / elapsed.as_secs_f64() / 100.0,
        admitted as f64 / bound,
        calls as f64 / sent as f64,
    );
    assert!(
        admitted as f64 <= bound,
        "over the bound: {admitted} > {bound:.0}"
    );
    assert!(
        admitted as f64 >= 0.9 * bound,
        "under-admission beyond 10%: {admitted} < 0.9 x {bound:.0}"
    );
    // At three times the limit the bucket holds no stock to lease: refills bring a token or
    // two and the deny cache answers most denials. Leasing saves calls on keys that are hot
    // and admitted (`leased_tokens_come_out_of_the_bucket`, flux-bench part 8).
}
