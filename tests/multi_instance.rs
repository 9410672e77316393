//! Several instances of a real service (separate processes), one real Redis, a real HTTP client
//! spreading connections over the instances as a load balancer would: the limit holds across
//! all of them, for one hot key and for a thousand keys at once. And the contrast: a naive
//! GET-then-DECRBY limiter, driven the same way, admits more than its limit.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{Conn, Instance, RedisServer};

const INSTANCES: usize = 3;
const CONNECTIONS: usize = 48;

/// Three instances on `redis` (the `closed` policy, see `support::fleet`).
async fn instances(redis: &RedisServer) -> Vec<Instance> {
    support::fleet(&redis.url(), INSTANCES).await
}

#[derive(Debug, Default)]
struct Counts {
    ok: AtomicU64,
    limited: AtomicU64,
    other: AtomicU64,
}

/// Drives `path` over `CONNECTIONS` keep-alive connections spread round-robin over the
/// instances until `until` says stop; `client(n)` names the `x-client` of request `n`.
/// Returns the counts and the time from the first request sent to the last answer.
async fn drive(
    instances: &[Instance],
    path: &'static str,
    client: Arc<dyn Fn(usize) -> Option<String> + Send + Sync>,
    run_for: Duration,
) -> (
    Arc<Counts>,
    Arc<Mutex<HashMap<String, (u64, u64)>>>,
    Duration,
) {
    let counts = Arc::new(Counts::default());
    let per_client = Arc::new(Mutex::new(HashMap::new()));
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|c| {
            let addr = instances[c % instances.len()].addr();
            let (counts, per_client, next, client) = (
                Arc::clone(&counts),
                Arc::clone(&per_client),
                Arc::clone(&next),
                Arc::clone(&client),
            );
            tokio::spawn(async move {
                let mut conn = Conn::open(addr).await.expect("connect to an instance");
                while start.elapsed() < run_for {
                    let Some(name) = client(next.fetch_add(1, Ordering::Relaxed)) else {
                        break;
                    };
                    let reply = conn
                        .get(path, &[("x-client", name.as_bytes())])
                        .await
                        .expect("the instance answers");
                    let slot = match reply.status {
                        200 => &counts.ok,
                        429 => &counts.limited,
                        _ => &counts.other,
                    };
                    slot.fetch_add(1, Ordering::Relaxed);
                    let mut map = per_client.lock().expect("per-client counts");
                    let entry = map.entry(name).or_insert((0, 0));
                    entry.0 += 1;
                    entry.1 += u64::from(reply.status == 200);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("connection task");
    }
    (counts, per_client, start.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_hot_key_across_three_instances_stays_within_the_bound() {
    let redis = RedisServer::start();
    let instances = instances(&redis).await;
    let (counts, _, elapsed) = drive(
        &instances,
        "/one",
        Arc::new(|_| Some("hot".to_owned())),
        Duration::from_secs(3),
    )
    .await;
    let (ok, limited, other) = (
        counts.ok.load(Ordering::Relaxed),
        counts.limited.load(Ordering::Relaxed),
        counts.other.load(Ordering::Relaxed),
    );
    // `/one` is 100/s with burst 50. Redis' clock ran at most `elapsed` between the first
    // and the last decision; +1 for a token earned at the very edge of the measurement.
    let bound = 50 + (100.0 * elapsed.as_secs_f64()) as u64 + 1;
    println!(
        "one key, {INSTANCES} instances, {CONNECTIONS} connections, {elapsed:.2?}: \
         {ok} admitted, {limited} limited, {other} other; bound {bound} ({:.1}%)",
        100.0 * ok as f64 / bound as f64
    );
    assert_eq!(
        other, 0,
        "every request was decided by Redis: no errors, no 503"
    );
    assert!(limited > ok, "the key was driven far over its limit");
    assert!(
        ok <= bound,
        "over-admission across instances: {ok} > {bound}"
    );
    assert!(ok * 10 >= bound * 9, "over-strict: {ok} < 90% of {bound}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_keys_at_once_each_stay_within_their_bound() {
    let redis = RedisServer::start();
    let instances = instances(&redis).await;
    const KEYS: usize = 1_000;
    const PER_KEY: usize = 6;
    // Request n goes to client n % 1000, six rounds: every client twice over its burst of 3.
    let client = Arc::new(|n: usize| (n < KEYS * PER_KEY).then(|| format!("client-{}", n % KEYS)));
    let (counts, per_client, elapsed) =
        drive(&instances, "/many", client, Duration::from_secs(60)).await;
    let per_client = per_client.lock().expect("counts");
    assert_eq!(per_client.len(), KEYS);
    assert_eq!(counts.other.load(Ordering::Relaxed), 0, "no errors, no 503");
    // `/many` is 5/min with burst 3: one more token per 12 s.
    let bound = 3 + (5.0 * elapsed.as_secs_f64() / 60.0) as u64 + 1;
    let worst = per_client.values().map(|&(_, ok)| ok).max().unwrap_or(0);
    let fewest = per_client.values().map(|&(_, ok)| ok).min().unwrap_or(0);
    println!(
        "{KEYS} keys x {PER_KEY} requests over {INSTANCES} instances in {elapsed:.2?}: \
         admitted per key {fewest}..={worst} (bound {bound}), {} admitted in all",
        counts.ok.load(Ordering::Relaxed)
    );
    for (client, &(sent, ok)) in per_client.iter() {
        assert_eq!(sent, PER_KEY as u64, "{client}");
        assert!(ok <= bound, "{client}: {ok} admitted > {bound}");
        assert!(
            ok >= 3,
            "{client}: only {ok} admitted, under its burst of 3"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contrast_a_naive_get_then_decrby_limiter_over_admits() {
    let redis = RedisServer::start();
    let instances = instances(&redis).await;
    let run_for = Duration::from_secs(2);
    // The naive limiter's bound: 50 per 10 s window, and the run is shorter than a window.
    // Whether requests meet in its read-then-write gap depends on how the machine schedules
    // them: a run may happen to serialize them all, so up to three runs (each on a fresh
    // client key) look for the race; an atomic limiter would show it in none.
    let mut naive_ok = 0;
    let mut naive_elapsed = Duration::ZERO;
    for attempt in 0..3 {
        let victim = format!("victim-{attempt}");
        let (naive, _, elapsed) = drive(
            &instances,
            "/naive",
            Arc::new(move |_| Some(victim.clone())),
            run_for,
        )
        .await;
        naive_ok = naive.ok.load(Ordering::Relaxed);
        naive_elapsed = elapsed;
        if naive_ok > 50 {
            break;
        }
    }
    // Flux, same drive, same burst of 50 (plus 100/s refill over the run).
    let (flux, _, flux_elapsed) = drive(
        &instances,
        "/one",
        Arc::new(|_| Some("victim".to_owned())),
        run_for,
    )
    .await;
    let flux_ok = flux.ok.load(Ordering::Relaxed);
    let flux_bound = 50 + (100.0 * flux_elapsed.as_secs_f64()) as u64 + 1;
    println!(
        "naive GET+DECRBY: {naive_ok} admitted in {naive_elapsed:.2?} against a limit of 50 ({:.1}x); \
         Flux: {flux_ok} admitted against a bound of {flux_bound}",
        naive_ok as f64 / 50.0
    );
    assert!(
        naive_ok > 50,
        "the read-then-write race over-admits ({naive_ok} > 50)"
    );
    assert!(flux_ok <= flux_bound);
}
