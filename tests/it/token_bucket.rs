//! Token-bucket semantics against a real Redis: burst, refill, retry_after, cost, all-or-nothing
//! multi-limit checks, key expiry, and the same answers from the in-memory backend.

use std::time::{Duration, Instant};

use flux::decision::Source;
use flux::{Flux, Limit, Rate};

use crate::support::RedisServer;

fn limit(name: &'static str, rate: &str, burst: u32) -> Limit {
    Limit::named(name, rate.parse().expect("valid rate"))
        .with_burst(burst)
        .expect("valid burst")
}

const T0: u64 = 1_700_000_000_000_000;
const MS: u64 = 1_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_is_admitted_then_denied_with_exact_retry_after() {
    let server = RedisServer::start();
    let flux = server.flux("burst");
    let l = [limit("search", "10/s", 3)];
    for expected_remaining in [2, 1, 0] {
        let d = flux
            .try_check_at("client", &l, T0)
            .await
            .expect("redis answers");
        assert!(d.allowed);
        assert_eq!(d.remaining, expected_remaining);
        assert_eq!(d.capacity, 3);
        assert_eq!(d.source, Source::Backend);
    }
    let d = flux
        .try_check_at("client", &l, T0)
        .await
        .expect("redis answers");
    assert!(!d.allowed);
    assert_eq!(d.retry_after, Duration::from_millis(100));
    assert_eq!(d.reset_after, Duration::from_millis(300));
    // Refill at the rate: one token per 100 ms.
    let d = flux
        .try_check_at("client", &l, T0 + 99 * MS)
        .await
        .expect("redis answers");
    assert!(!d.allowed);
    assert_eq!(d.retry_after, Duration::from_millis(1));
    let d = flux
        .try_check_at("client", &l, T0 + 100 * MS)
        .await
        .expect("redis answers");
    assert!(d.allowed);
    assert_eq!(d.remaining, 0);
    // After a full window, the whole burst is back.
    let d = flux
        .try_check_at("client", &l, T0 + 500 * MS)
        .await
        .expect("redis answers");
    assert!(d.allowed);
    assert_eq!(d.remaining, 2);
    // Other clients never saw any of this.
    let d = flux
        .try_check_at("other", &l, T0)
        .await
        .expect("redis answers");
    assert_eq!(d.remaining, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_clock_refills_in_real_time() {
    let server = RedisServer::start();
    let flux = server.flux("realtime");
    let l = [limit("rt", "20/s", 2)];
    assert!(flux.try_check("c", &l).await.expect("redis").allowed);
    assert!(flux.try_check("c", &l).await.expect("redis").allowed);
    let denied = flux.try_check("c", &l).await.expect("redis");
    assert!(!denied.allowed);
    // retry_after is measured on Redis' clock: at most one emission interval (50 ms).
    assert!(
        denied.retry_after <= Duration::from_millis(50),
        "{:?}",
        denied.retry_after
    );
    assert!(
        denied.retry_after >= Duration::from_millis(20),
        "{:?}",
        denied.retry_after
    );
    let started = Instant::now();
    tokio::time::sleep(denied.retry_after + Duration::from_millis(5)).await;
    let again = flux.try_check("c", &l).await.expect("redis");
    assert!(
        again.allowed,
        "retry_after {:?} was not enough ({:?} later)",
        denied.retry_after,
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cost_takes_that_many_tokens_and_waits_for_all_of_them() {
    let server = RedisServer::start();
    let flux = server.flux("cost");
    let heavy = [limit("export", "1/s", 5)
        .with_cost(3)
        .expect("cost <= burst")];
    let d = flux.try_check_at("c", &heavy, T0).await.expect("redis");
    assert!(d.allowed);
    assert_eq!(d.remaining, 2);
    let d = flux.try_check_at("c", &heavy, T0).await.expect("redis");
    assert!(!d.allowed, "2 tokens left, cost 3");
    assert_eq!(d.remaining, 2, "a denial charges nothing");
    assert_eq!(d.retry_after, Duration::from_secs(1));
    let d = flux
        .try_check_at("c", &heavy, T0 + 1_000 * MS)
        .await
        .expect("redis");
    assert!(d.allowed);
    assert_eq!(d.remaining, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stacked_limits_are_all_or_nothing() {
    let server = RedisServer::start();
    let flux = server.flux("stacked");
    // 5 per second, and 8 per minute.
    let limits = [limit("short", "5/s", 5), limit("long", "8/min", 8)];
    for i in 0..5 {
        let d = flux.try_check_at("c", &limits, T0).await.expect("redis");
        assert!(d.allowed, "request {i}");
    }
    // The per-second bucket is empty: denied, and the per-minute bucket is not charged.
    for _ in 0..3 {
        let d = flux.try_check_at("c", &limits, T0).await.expect("redis");
        assert!(!d.allowed);
        assert_eq!(d.index, 0, "the per-second limit decides");
        assert_eq!(d.retry_after, Duration::from_millis(200));
    }
    // One second later the short bucket is full again; the long one still holds 3.
    for i in 0..3 {
        let d = flux
            .try_check_at("c", &limits, T0 + 1_000 * MS)
            .await
            .expect("redis");
        assert!(
            d.allowed,
            "request {i}: the long bucket was charged by denials"
        );
    }
    let d = flux
        .try_check_at("c", &limits, T0 + 1_000 * MS)
        .await
        .expect("redis");
    assert!(!d.allowed);
    assert_eq!(d.index, 1, "now the per-minute limit decides");
    assert_eq!(d.retry_after, Duration::from_millis(7_500 - 1_000));
    // Exactly one key per limit, both in the client's hash tag (`stacked:limits`, the
    // registry of declared limits, is no bucket).
    let keys = server.cli(&["--raw", "KEYS", "stacked:{*"]);
    let mut keys: Vec<&str> = keys.lines().collect();
    keys.sort_unstable();
    let mut expected = [
        server.bucket("stacked", "c", "long"),
        server.bucket("stacked", "c", "short"),
    ];
    expected.sort_unstable();
    assert_eq!(keys, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_buckets_expire_when_full_again() {
    let server = RedisServer::start();
    let flux = server.flux("ttl");
    let l = [limit("ttl", "10/s", 10)];
    let bucket = server.bucket("ttl", "c", "ttl");
    let start = std::time::Instant::now();
    for _ in 0..4 {
        assert!(flux.try_check("c", &l).await.expect("redis").allowed);
    }
    let pttl: i64 = server
        .cli(&["PTTL", &bucket])
        .parse()
        .expect("PTTL is a number");
    // Four tokens taken at 100 ms each: full again 400 ms after the first check, less the
    // time the checks and this read took (a loaded machine may take a while).
    let elapsed = i64::try_from(start.elapsed().as_millis()).unwrap_or(i64::MAX);
    assert!(
        (400 - elapsed - 10..=400).contains(&pttl),
        "pttl {pttl} after {elapsed} ms"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    // Only the registry of declared limits (`ttl:limits`) is left.
    assert_eq!(
        server.cli(&["--raw", "KEYS", "ttl:{*"]),
        "",
        "an idle client costs no memory"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_keys_stay_isolated_and_inside_one_hash_tag() {
    let server = RedisServer::start();
    let flux = server.flux("hostile");
    let l = [limit("h", "1/min", 1)];
    let huge = vec![b'x'; 1 << 20];
    let hostile: [&[u8]; 6] = [&huge, b"}{", b"a}b", b"\0\xff\n", b"{", b"#"];
    for key in hostile {
        let d = flux.try_check(key, &l).await.expect("redis");
        assert!(d.allowed, "first request of each hostile key is its own");
        let d = flux.try_check(key, &l).await.expect("redis");
        assert!(
            !d.allowed,
            "and its second is denied: it has its own bucket"
        );
    }
    // Buckets only: `hostile:limits` is the registry of declared limits.
    let keys = server.cli(&["--raw", "KEYS", "hostile:{*"]);
    assert_eq!(keys.lines().count(), hostile.len());
    for key in keys.lines() {
        assert!(key.len() < 64, "{key}");
        assert_eq!(key.matches('{').count(), 1, "{key}");
        assert_eq!(key.matches('}').count(), 1, "{key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_and_redis_give_identical_answers() {
    let server = RedisServer::start();
    let redis = server.flux("same");
    let memory = Flux::builder().build().expect("valid configuration");
    let limits = [
        limit("a", "3/s", 4),
        limit("b", "7/10s", 7).with_cost(2).expect("valid"),
    ];
    let mut now = T0;
    for step in 0..200u64 {
        now += (step * 7_919) % 400_000;
        let key = if step % 3 == 0 { "x" } else { "y" };
        let r = redis.try_check_at(key, &limits, now).await.expect("redis");
        let m = memory
            .try_check_at(key, &limits, now)
            .await
            .expect("memory");
        assert_eq!(r, m, "step {step} at {now}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rates_and_limits_reject_bad_input_as_errors() {
    assert!("100/fortnight".parse::<Rate>().is_err());
    assert!("0/s".parse::<Rate>().is_err());
    let rate: Rate = "5/s".parse().expect("valid");
    assert!(Limit::new("x", rate).with_burst(0).is_err());
    assert!(Limit::new("x", rate).with_cost(6).is_err());
    let bad_prefix = Flux::builder().key_prefix("a{b").build();
    assert!(bad_prefix.is_err());
    let bad_url = Flux::builder().redis("http://nope").build();
    assert!(
        bad_url
            .expect_err("not a redis URL")
            .to_string()
            .contains("http://nope")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_list_of_limits_admits_without_asking() {
    let server = RedisServer::start();
    let flux = server.flux("empty");
    assert!(flux.check_all("k", &[]).await.allowed);
    assert!(
        flux.try_check("k", &[])
            .await
            .expect("no call to make")
            .allowed
    );
    assert!(
        Flux::builder()
            .build()
            .expect("valid")
            .check_all("k", &[])
            .await
            .allowed
    );
}
