//! Redis killed, paused (SIGSTOP), restarted or stripped of its scripts: what each failure
//! policy answers, how long a check may wait, and how limiting resumes.

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use flux::config::BreakerConfig;
use flux::decision::Source;
use flux::{FailurePolicy, Flux, Limit, Rate};

use crate::support::RedisServer;

static LIMIT: Limit = Limit::new("api", Rate::per_minute::<3>());

const DEADLINE: Duration = Duration::from_millis(50);
/// Scheduling slack on a loaded 2-core machine: a fault must cost about the deadline, never
/// the seconds of a TCP or Redis timeout.
const SLACK: Duration = Duration::from_millis(250);

fn flux(server: &RedisServer, policy: FailurePolicy) -> Flux {
    Flux::builder()
        .redis(server.url())
        .key_prefix("policy")
        .deadline(DEADLINE)
        .breaker(BreakerConfig::new(
            NonZeroU32::new(3).expect("nonzero"),
            Duration::from_millis(200),
        ))
        .failure_policy(policy)
        .build()
        .expect("valid configuration")
}

/// Waits until checks reach Redis again (the breaker probes every 200 ms).
async fn until_backend(flux: &Flux, key: &str, limit: &Limit, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let d = flux.check(key, limit).await;
        if d.source == Source::Backend {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "limiting did not resume within {within:?}: {d:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_redis_open_policy_serves_and_recovers_after_restart() {
    let mut server = RedisServer::start();
    let flux = flux(&server, FailurePolicy::Open);
    assert_eq!(flux.check("a", &LIMIT).await.source, Source::Backend);
    server.kill();
    for _ in 0..50 {
        let started = Instant::now();
        let d = flux.check("a", &LIMIT).await;
        assert!(
            started.elapsed() < DEADLINE + SLACK,
            "took {:?}",
            started.elapsed()
        );
        assert!(d.allowed, "fail-open admits");
        assert_eq!(d.source, Source::FailOpen);
    }
    assert!(flux.is_degraded(), "the breaker opened");
    server.restart();
    let took = until_backend(&flux, "a", &LIMIT, Duration::from_secs(5)).await;
    println!("limiting resumed {took:?} after the restart");
    // The restarted Redis is empty (the script cache too): limiting is right again.
    let mut admitted = 1;
    for _ in 0..5 {
        admitted += usize::from(flux.check("a", &LIMIT).await.allowed);
    }
    assert_eq!(admitted, 3, "burst 3 per minute on the fresh Redis");
    assert!(!flux.is_degraded());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_redis_closed_policy_refuses() {
    let mut server = RedisServer::start();
    let flux = flux(&server, FailurePolicy::Closed);
    assert!(flux.check("a", &LIMIT).await.allowed);
    server.kill();
    for _ in 0..10 {
        let d = flux.check("a", &LIMIT).await;
        assert!(!d.allowed);
        assert_eq!(d.source, Source::FailClosed);
    }
    // A per-call override wins over the limiter's policy.
    let d = flux
        .check_with_policy("a", std::slice::from_ref(&LIMIT), Some(FailurePolicy::Open))
        .await;
    assert!(d.allowed);
    assert_eq!(d.source, Source::FailOpen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_redis_local_policy_limits_per_process() {
    let mut server = RedisServer::start();
    let flux = flux(&server, FailurePolicy::Local);
    server.kill();
    let decisions: Vec<_> = check_n(&flux, "local-client", 6).await;
    let admitted = decisions.iter().filter(|d| d.allowed).count();
    assert_eq!(
        admitted, 3,
        "the local bucket enforces burst 3: {decisions:?}"
    );
    assert!(decisions.iter().all(|d| d.source == Source::Local));
    // Other clients have their own local buckets.
    assert!(flux.check("someone-else", &LIMIT).await.allowed);
}

async fn check_n(flux: &Flux, key: &str, n: usize) -> Vec<flux::Decision> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(flux.check(key, &LIMIT).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_redis_costs_one_deadline_then_microseconds() {
    let mut server = RedisServer::start();
    let flux = flux(&server, FailurePolicy::Open);
    assert_eq!(flux.check("p", &LIMIT).await.source, Source::Backend);
    server.pause();
    // 64 concurrent requests arrive at a hung Redis: none waits much longer than the deadline.
    let started = Instant::now();
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let flux = flux.clone();
            tokio::spawn(async move {
                let t = Instant::now();
                let d = flux.check(format!("p{i}"), &LIMIT).await;
                (t.elapsed(), d)
            })
        })
        .collect();
    let mut worst = Duration::ZERO;
    for task in tasks {
        let (took, d) = task.await.expect("task");
        worst = worst.max(took);
        assert!(d.allowed && d.source == Source::FailOpen, "{d:?}");
    }
    println!("worst check latency with Redis paused: {worst:?} (deadline {DEADLINE:?})");
    assert!(worst < DEADLINE + SLACK, "worst {worst:?}");
    assert!(started.elapsed() < DEADLINE + SLACK);
    // The breaker is open now: checks skip Redis and cost microseconds.
    for _ in 0..3 {
        flux.check("p", &LIMIT).await;
    }
    assert!(flux.is_degraded());
    let started = Instant::now();
    for i in 0..1_000 {
        let d = flux.check(format!("q{i}"), &LIMIT).await;
        assert!(d.allowed);
    }
    let per_check = started.elapsed() / 1_000;
    println!("check with the breaker open: {per_check:?} each");
    assert!(
        per_check < Duration::from_millis(1),
        "{per_check:?} per check"
    );
    server.resume();
    let took = until_backend(&flux, "p", &LIMIT, Duration::from_secs(5)).await;
    println!("limiting resumed {took:?} after SIGCONT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_flush_is_recovered_transparently() {
    let server = RedisServer::start();
    let flux = flux(&server, FailurePolicy::Closed);
    let limits = [Limit::new("flush", Rate::per_minute::<100>())];
    assert!(flux.try_check("f", &limits).await.expect("redis").allowed);
    let loaded_before = server.command_calls("script|load") + server.command_calls("script");
    server.flush_scripts();
    // The next call gets NOSCRIPT, reloads the script and succeeds, all inside one check.
    let d = flux
        .try_check("f", &limits)
        .await
        .expect("NOSCRIPT recovered by itself");
    assert!(d.allowed);
    assert_eq!(d.remaining, 98, "the bucket survived the script flush");
    let loaded_after = server.command_calls("script|load") + server.command_calls("script");
    assert!(loaded_after > loaded_before, "the script was loaded again");
    // Concurrent checks travel pipelined together; after a flush every one of them still
    // gets Redis' answer. CLIENT PAUSE holds them all until they are queued, so the pipelined
    // batches meet NOSCRIPT too, not only the first check.
    let patient = Flux::builder()
        .redis(server.url())
        .key_prefix("policy")
        .deadline(Duration::from_secs(5))
        .build()
        .expect("valid configuration");
    server.flush_scripts();
    server.cli(&["CLIENT", "PAUSE", "200", "ALL"]);
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let (flux, limits) = (patient.clone(), limits.clone());
            tokio::spawn(async move { flux.try_check(format!("f{i}"), &limits).await })
        })
        .collect();
    for task in tasks {
        let d = task
            .await
            .expect("task")
            .expect("NOSCRIPT recovered in a pipelined batch");
        assert!(d.allowed);
        assert_eq!(d.remaining, 99);
    }
}

/// What Redis answers surfaces as Flux's own error type: a kind and Redis' code to match on,
/// the message, and the client library's error only as the `source()`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_error_is_flux_s_own_type_with_its_code() {
    use flux::error::{BackendErrorKind, Error};
    let server = RedisServer::start();
    let flux = server.flux("typed");
    // A key of another type where the bucket lives: the script's GET fails with WRONGTYPE.
    server.cli(&["SADD", &server.bucket("typed", "k", "api"), "x"]);
    let err = flux
        .try_check("k", std::slice::from_ref(&LIMIT))
        .await
        .expect_err("the bucket key holds a set");
    let Error::Backend(backend) = &err else {
        panic!("expected a backend error, got {err:?}");
    };
    assert_eq!(backend.kind(), BackendErrorKind::Server, "{err}");
    // Redis 7 passes the command's code through the script; 6.2 answers `ERR`.
    assert!(
        matches!(backend.code(), Some("WRONGTYPE" | "ERR")),
        "{:?}: {err}",
        backend.code()
    );
    assert!(err.to_string().contains("WRONGTYPE"), "{err}");
    let source = std::error::Error::source(backend).expect("the client's error");
    assert!(source.downcast_ref::<redis::RedisError>().is_some());
    // A refused connection is a connection error.
    let port = server.port();
    drop(server);
    let gone = Flux::builder()
        .redis(format!("redis://127.0.0.1:{port}/"))
        .build()
        .expect("valid");
    match gone.ping(Duration::from_secs(5)).await {
        Err(Error::Backend(e)) => assert_eq!(e.kind(), BackendErrorKind::Connection, "{e}"),
        other => panic!("expected a connection error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_or_misconfigured_redis_is_a_clear_error() {
    let server = RedisServer::builder().password("s3cret").start();
    let wrong = Flux::builder()
        .redis(server.url_with_password("wrong"))
        .build()
        .expect("a URL with a password is valid");
    let err = wrong
        .ping(Duration::from_secs(5))
        .await
        .expect_err("wrong password");
    let text = err.to_string();
    assert!(
        text.to_lowercase().contains("pass") || text.contains("AUTH"),
        "{text}"
    );
    assert!(
        !format!("{wrong:?}").contains("wrong"),
        "the password never reaches logs"
    );
    // The failure policy applies to checks, no panic.
    let d = wrong.check("k", &LIMIT).await;
    assert_eq!(d.source, Source::FailOpen);
    let right = Flux::builder()
        .redis(server.url_with_password("s3cret"))
        .build()
        .expect("valid");
    right
        .ping(Duration::from_secs(5))
        .await
        .expect("right password");
    assert_eq!(right.check("k", &LIMIT).await.source, Source::Backend);
}
