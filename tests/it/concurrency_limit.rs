//! `#[concurrency_limit]` and `Flux::acquire`: at most `max` requests in flight per client,
//! in one process (in-memory backend) and across instances that are separate processes on
//! one Redis, counted by the handlers themselves; slots released on panic and on client
//! disconnect, freed by their lease after an instance is killed (SIGKILL) while holding
//! them; the failure policies when Redis is unavailable; acquisitions answered after the
//! deadline leave no slot behind; slot sets and buckets never share a key.
//!
//! Run with `-- --nocapture` to see the figures.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::{Extension, Router};
use flux::concurrency::ConcurrencyLimit;
use flux::decision::Source;
use flux::{FailurePolicy, Flux, concurrency_limit};

use crate::support::{self, Conn, Instance, RedisServer, Reply};

/// `/slow` requests running in this test process, and the most seen at once.
static RUNNING: AtomicU32 = AtomicU32::new(0);
static PEAK: AtomicU32 = AtomicU32::new(0);

/// The quickstart's `/slow`: 2 in flight per address, 500 ms each.
#[concurrency_limit(max = 2, key = "ip")]
async fn slow() -> String {
    let now = RUNNING.fetch_add(1, Ordering::SeqCst) + 1;
    PEAK.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    RUNNING.fetch_sub(1, Ordering::SeqCst);
    format!("running={now}")
}

/// Sends `GET path` on a new connection to each address of `targets` at once, with
/// `x-client: alice`.
async fn at_once(targets: &[SocketAddr], path: &str) -> Vec<Reply> {
    let tasks: Vec<_> = targets
        .iter()
        .map(|&addr| {
            let path = path.to_owned();
            tokio::spawn(async move {
                let mut conn = Conn::open(addr).await.expect("connect");
                conn.get(&path, &[("x-client", b"alice")])
                    .await
                    .expect("an answer")
            })
        })
        .collect();
    let mut replies = Vec::new();
    for task in tasks {
        replies.push(task.await.expect("request task"));
    }
    replies
}

/// (200s, 429s), after checking every 429 says what it is.
fn tally(replies: &[Reply]) -> (usize, usize) {
    for reply in replies.iter().filter(|r| r.status == 429) {
        assert_eq!(reply.header("retry-after"), Some("1"), "{}", reply.body);
        assert!(reply.body.contains("concurrency limit"), "{}", reply.body);
    }
    let ok = replies.iter().filter(|r| r.status == 200).count();
    let limited = replies.iter().filter(|r| r.status == 429).count();
    assert_eq!(ok + limited, replies.len(), "only 200s and 429s");
    (ok, limited)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_at_once_in_memory_two_pass() {
    let flux = Flux::builder().memory().build().expect("valid");
    let app = Router::new()
        .route("/slow", get(slow))
        .layer(Extension(flux));
    let addr = support::serve(app).await;
    let replies = at_once(&[addr; 6], "/slow").await;
    let (ok, limited) = tally(&replies);
    println!(
        "in memory: 6 at once -> {ok} x 200, {limited} x 429; handlers' peak {}",
        PEAK.load(Ordering::SeqCst)
    );
    assert_eq!((ok, limited), (2, 4));
    assert_eq!(PEAK.load(Ordering::SeqCst), 2);
    // Released when the responses were produced: the next two pass.
    let (ok, _) = tally(&at_once(&[addr; 2], "/slow").await);
    assert_eq!(ok, 2);
}

/// `n` instances (processes) of the test service on one Redis, failure policy closed: a
/// 200 means Redis gave a slot.
async fn fleet(redis: &RedisServer, n: usize) -> Vec<Instance> {
    support::fleet(&redis.url(), n).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_at_once_across_two_instances_two_pass() {
    let redis = RedisServer::start();
    let instances = fleet(&redis, 2).await;
    let targets: Vec<SocketAddr> = (0..6).map(|i| instances[i % 2].addr()).collect();
    let replies = at_once(&targets, "/slow").await;
    let (ok, limited) = tally(&replies);
    println!("2 instances on Redis: 6 at once -> {ok} x 200, {limited} x 429");
    assert_eq!((ok, limited), (2, 4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_more_than_max_in_flight_across_the_fleet() {
    let redis = RedisServer::start();
    let instances = fleet(&redis, 3).await;
    let addrs: Vec<SocketAddr> = instances.iter().map(Instance::addr).collect();
    // 12 keep-alive connections, round robin over 3 instances, each sending back to back
    // for 3 s; each handler runs 50 ms and reports how many ran fleet-wide at its start.
    let run_for = Duration::from_secs(3);
    let start = Instant::now();
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let addr = addrs[i % addrs.len()];
            tokio::spawn(async move {
                let mut conn = Conn::open(addr).await.expect("connect");
                let (mut ok, mut limited, mut peak) = (0u32, 0u32, 0i64);
                while start.elapsed() < run_for {
                    let reply = conn
                        .get("/slow?ms=50", &[("x-client", b"alice")])
                        .await
                        .expect("an answer");
                    match reply.status {
                        200 => {
                            ok += 1;
                            let fleet: i64 = reply
                                .body
                                .rsplit("fleet=")
                                .next()
                                .and_then(|n| n.parse().ok())
                                .expect("fleet=N in the body");
                            peak = peak.max(fleet);
                        }
                        429 => limited += 1,
                        other => panic!("unexpected status {other}: {}", reply.body),
                    }
                }
                (ok, limited, peak)
            })
        })
        .collect();
    let (mut ok, mut limited, mut peak) = (0, 0, 0);
    for task in tasks {
        let (o, l, p) = task.await.expect("driver");
        ok += o;
        limited += l;
        peak = peak.max(p);
    }
    println!(
        "3 instances, 12 connections, 3 s, max 2: {ok} x 200, {limited} x 429; most in flight \
         fleet-wide as counted by the handlers: {peak}"
    );
    assert!(peak <= 2, "{peak} handlers ran at once across the fleet");
    // Not over-strict: the two slots were used.
    assert_eq!(peak, 2);
    assert!(ok >= 20, "only {ok} admitted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_are_released_on_panic_and_on_disconnect() {
    let redis = RedisServer::start();
    let instances = fleet(&redis, 1).await;
    let addr = instances[0].addr();

    // Two handlers take both slots and panic: the connection closes without an answer.
    let panics: Vec<_> = (0..2)
        .map(|_| {
            tokio::spawn(async move {
                let mut conn = Conn::open(addr).await.expect("connect");
                conn.get("/slow?ms=200&panic=1", &[("x-client", b"alice")])
                    .await
                    .map(|r| r.status)
            })
        })
        .collect();
    for task in panics {
        assert!(
            task.await.expect("task").is_err(),
            "a panic gives no answer"
        );
    }
    // The lease is 2 s: a pass within it means the slots were released.
    let after_panic = Instant::now();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (ok, _) = tally(&at_once(&[addr; 2], "/slow?ms=100").await);
    println!(
        "after 2 panics: {ok} of 2 pass, {:?} later",
        after_panic.elapsed()
    );
    assert_eq!(ok, 2, "the panicking handlers' slots were not released");

    // Two clients start 10 s requests and hang up after 300 ms.
    let mut held = Vec::new();
    for _ in 0..2 {
        let conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
        held.push(conn);
    }
    for conn in &mut held {
        use tokio::io::AsyncWriteExt;
        conn.write_all(b"GET /slow?ms=10000 HTTP/1.1\r\nhost: flux\r\nx-client: alice\r\n\r\n")
            .await
            .expect("send");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (ok, _) = tally(&at_once(&[addr], "/slow?ms=10").await);
    assert_eq!(ok, 0, "both slots are held while the requests run");
    drop(held);
    // Renewed leases would keep the slots for 10 s if the handlers still ran.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (ok, _) = tally(&at_once(&[addr; 2], "/slow?ms=10").await);
    println!("after 2 clients hung up: {ok} of 2 pass");
    assert_eq!(ok, 2, "the dropped requests' slots were not released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instances_slots_expire_after_the_lease() {
    let redis = RedisServer::start();
    let mut instances = fleet(&redis, 2).await;
    let survivor = instances[1].addr();
    let doomed = instances[0].addr();
    // The doomed instance takes both slots with long requests.
    let mut held = Vec::new();
    for _ in 0..2 {
        use tokio::io::AsyncWriteExt;
        let mut conn = tokio::net::TcpStream::connect(doomed)
            .await
            .expect("connect");
        conn.write_all(b"GET /slow?ms=30000 HTTP/1.1\r\nhost: flux\r\nx-client: alice\r\n\r\n")
            .await
            .expect("send");
        held.push(conn);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (ok, _) = tally(&at_once(&[survivor], "/slow?ms=10").await);
    assert_eq!(ok, 0, "the doomed instance holds both slots");
    // SIGKILL (`Child::kill`): no release, no more renewals.
    drop(instances.remove(0));
    let killed = Instant::now();
    let freed = loop {
        let (ok, _) = tally(&at_once(&[survivor], "/slow?ms=10").await);
        if ok == 1 {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "the killed instance's slots never expired"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!("lease 2 s: the killed instance's slots were free {freed:?} after SIGKILL");
    // Renewed every 2/3 s, so the last lease ran out between 1.3 s and 2 s after the kill.
    assert!(
        freed >= Duration::from_millis(1000),
        "freed too early: {freed:?}"
    );
    assert!(freed <= Duration::from_secs(4), "freed too late: {freed:?}");
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_slot_outlives_its_lease_by_renewal() {
    let redis = RedisServer::start();
    let flux = Flux::builder()
        .redis(redis.url())
        .deadline(Duration::from_secs(2))
        .build()
        .expect("valid");
    let limit = ConcurrencyLimit::new("renewed", 1)
        .with_lease(Duration::from_millis(300))
        .expect("valid lease");
    let slot = flux.acquire("k", &limit).await.expect("free");
    assert!(slot.is_held());
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        flux.acquire("k", &limit).await.is_err(),
        "four leases later, still held"
    );
    drop(slot);
    let deadline = Instant::now() + Duration::from_secs(2);
    while flux.acquire("k", &limit).await.is_err() {
        assert!(Instant::now() < deadline, "never released");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_slots_are_released_by_a_panicking_task() {
    static ONE: ConcurrencyLimit = ConcurrencyLimit::new("one", 1);
    let flux = Flux::builder().memory().build().expect("valid");
    let held = flux.clone();
    let task = tokio::spawn(async move {
        let _slot = held.acquire("k", &ONE).await.expect("free");
        panic!("the handler fails while holding its slot");
    });
    assert!(task.await.is_err());
    assert!(
        flux.acquire("k", &ONE).await.is_ok(),
        "released by the unwinding"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_policies_when_redis_is_unavailable() {
    static TWO: ConcurrencyLimit = ConcurrencyLimit::new("two", 2);
    let url = {
        let redis = RedisServer::start();
        redis.url()
    }; // stopped: nothing listens there now
    let with = |policy| {
        Flux::builder()
            .redis(url.clone())
            .failure_policy(policy)
            .build()
            .expect("valid")
    };
    let open = with(FailurePolicy::Open);
    let admitted: Vec<_> = futures_all(&open, &TWO, 3).await;
    assert!(
        admitted
            .iter()
            .all(|r| r.as_ref().is_ok_and(|s| !s.is_held()))
    );

    let closed = with(FailurePolicy::Closed);
    let refused = closed.acquire("k", &TWO).await.expect_err("closed refuses");
    assert_eq!(refused.source(), Source::FailClosed);
    use axum::response::IntoResponse;
    assert_eq!(refused.into_response().status(), 503);

    let local = with(FailurePolicy::Local);
    let results = futures_all(&local, &TWO, 3).await;
    let held = results
        .iter()
        .filter(|r| r.as_ref().is_ok_and(|s| s.is_held()))
        .count();
    let denied: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(held, 2, "per-process slots");
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0].source(), Source::Local);
}

/// `n` acquisitions of `limit` for one key, all held until the end.
async fn futures_all(
    flux: &Flux,
    limit: &'static ConcurrencyLimit,
    n: usize,
) -> Vec<Result<flux::concurrency::Slot, flux::concurrency::ConcurrencyLimited>> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(flux.acquire("k", limit).await);
    }
    out
}

/// A slot of `limit` for `k`, held; a refusal by the `Closed` policy (a deadline missed on a
/// loaded machine, the breaker not yet closed again) is tried again, a refusal by Redis
/// (max in flight) is a false 429.
async fn admitted(flux: &Flux, limit: &ConcurrencyLimit) -> flux::concurrency::Slot {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        match flux.acquire("k", limit).await {
            Ok(slot) => {
                assert!(slot.is_held());
                return slot;
            }
            Err(refused) if refused.source() == Source::FailClosed && Instant::now() < until => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(refused) => panic!("refused by {:?}: {refused}", refused.source()),
        }
    }
}

/// Acquisitions that Redis ran after Flux's deadline had given up on them (a stall under
/// load) leave no slot behind: each is released by its id in the background, so once Redis
/// answers again the client has its full `max`, not false 429s for a whole lease (30 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_acquisition_leaves_no_slot_behind() {
    static TWO: ConcurrencyLimit = ConcurrencyLimit::new("late", 2);
    let mut redis = RedisServer::start();
    let flux = Flux::builder()
        .redis(redis.url())
        .deadline(Duration::from_millis(150))
        .failure_policy(FailurePolicy::Closed)
        .build()
        .expect("valid");
    // The connection is up and the script loaded.
    drop(admitted(&flux, &TWO).await);
    redis.pause();
    let stalled = Instant::now();
    // Six requests at once, each past its deadline: Redis holds them unanswered.
    let late: Vec<_> = (0..6)
        .map(|_| {
            let flux = flux.clone();
            tokio::spawn(async move { flux.acquire("k", &TWO).await.map(drop) })
        })
        .collect();
    for task in late {
        let refused = task.await.expect("task").expect_err("Redis is stopped");
        assert_eq!(refused.source(), Source::FailClosed);
    }
    tokio::time::sleep(Duration::from_millis(200).saturating_sub(stalled.elapsed())).await;
    redis.resume();
    // Redis now runs the six acquisitions (two take a slot), then their releases.
    let first = admitted(&flux, &TWO).await;
    let second = admitted(&flux, &TWO).await;
    assert!(flux.acquire("k", &TWO).await.is_err(), "max is still 2");
    drop((first, second));
}

/// A rate limit and a concurrency limit of the same client never share a key, whatever
/// their names: a rate limit `X:slots` beside a concurrency limit `X` once did (the bucket's
/// string and the slot set's sorted set at one key, and `WRONGTYPE` for one or the other).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_and_concurrency_limits_never_share_a_key() {
    static SLOTS: ConcurrencyLimit = ConcurrencyLimit::new("exports", 1);
    static RATE: flux::Limit = flux::Limit::new("exports:slots", flux::Rate::per_hour::<100>());
    let redis = RedisServer::start();
    let flux = Flux::builder()
        .redis(redis.url())
        .deadline(Duration::from_secs(5))
        .failure_policy(FailurePolicy::Closed)
        .build()
        .expect("valid");
    let rate = std::slice::from_ref(&RATE);
    // Either kind first.
    let decision = flux
        .try_check("k", rate)
        .await
        .expect("a bucket of its own");
    assert!(decision.allowed);
    let slot = flux
        .acquire("k", &SLOTS)
        .await
        .expect("a slot set of its own");
    let decision = flux
        .try_check("k", rate)
        .await
        .expect("a bucket of its own");
    assert_eq!((decision.allowed, decision.remaining), (true, 98));
    assert!(flux.acquire("k", &SLOTS).await.is_err(), "the slot is held");
    let set = redis.cli(&["TYPE", &redis.slot_set("flux", "k", "exports")]);
    assert_eq!(set.trim(), "zset");
    drop(slot);
    let kinds = redis.cli(&["TYPE", &redis.bucket("flux", "k", "exports:slots")]);
    assert_eq!(kinds.trim(), "string");
    assert_eq!(redis.dbsize(), 2, "two keys");
}

/// A request dropped while its acquisition waits on Redis (the client went away, an outer
/// timeout) leaves no slot behind either, though Redis runs the acquisition after the drop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_acquisition_leaves_no_slot_behind() {
    static ONE: ConcurrencyLimit = ConcurrencyLimit::new("dropped", 1);
    let mut redis = RedisServer::start();
    let flux = Flux::builder()
        .redis(redis.url())
        .deadline(Duration::from_secs(5))
        .build()
        .expect("valid");
    drop(admitted(&flux, &ONE).await);
    redis.pause();
    let gave_up = tokio::time::timeout(Duration::from_millis(100), flux.acquire("k", &ONE)).await;
    assert!(gave_up.is_err(), "Redis is stopped");
    redis.resume();
    // The release is sent by a task spawned at the drop: a request sent in the moment before
    // it ran can still meet the slot. Within a second it is free, not after the 30 s lease.
    let resumed = Instant::now();
    loop {
        match flux.acquire("k", &ONE).await {
            Ok(slot) => {
                assert!(slot.is_held());
                break;
            }
            Err(refused) => assert!(
                resumed.elapsed() < Duration::from_secs(1),
                "still held {:?} after Redis answered: {refused}",
                resumed.elapsed()
            ),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
