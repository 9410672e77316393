//! The fleet: three instances of a real service (separate processes) count each other through
//! their heartbeats in one real Redis, and when that Redis is frozen (SIGSTOP) under load the
//! `local` policy gives each instance a third of the limit, so that the fleet as a whole stays
//! near the limit instead of admitting three times it. When Redis comes back, the instances
//! return to the shared bucket.
//!
//! With `--nocapture` the outage test prints its figures (docs/operations.md quotes them).

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{Conn, Instance, RedisServer, wait_healthy};

/// `/global` of the test server: 10/s, burst 10, one bucket for everybody.
const RATE: f64 = 10.0;
const BURST: f64 = 10.0;
/// Connections per instance, each sending one request every `PACE`: 3 x 2 x 10/s = 60/s
/// offered, six times the limit.
const CONNECTIONS: usize = 2;
const PACE: Duration = Duration::from_millis(100);
const BEFORE: Duration = Duration::from_secs(2);
const OUTAGE: Duration = Duration::from_secs(5);
const AFTER: Duration = Duration::from_secs(3);

/// Starts `prefixes.len()` instances on `redis` with the `local` policy, instance `i` with
/// key prefix `prefixes[i]` (one prefix for all: one fleet; one each: three fleets of one).
async fn instances(redis: &RedisServer, prefixes: &[&str]) -> Vec<Instance> {
    let url = redis.url();
    let list: Vec<Instance> = prefixes
        .iter()
        .map(|prefix| {
            Instance::start(&[
                ("FLUX_REDIS_URL", url.as_str()),
                ("FLUX_FAILURE_POLICY", "local"),
                ("FLUX_DEADLINE_MS", "50"),
                ("FLUX_KEY_PREFIX", prefix),
            ])
        })
        .collect();
    wait_healthy(&list).await;
    list
}

/// What `/fleet` of `instance` says: the live instances it counted, or `unknown`.
async fn fleet_seen(instance: &Instance) -> String {
    let mut conn = Conn::open(instance.addr()).await.expect("connect");
    conn.get("/fleet", &[]).await.expect("/fleet answers").body
}

/// Waits until every instance counts `n` live instances (the first check starts the
/// heartbeat, so each gets one request of `/global` first).
async fn until_fleet(instances: &[Instance], n: &str) {
    for instance in instances {
        let mut conn = Conn::open(instance.addr()).await.expect("connect");
        conn.get("/global", &[]).await.expect("/global answers");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for instance in instances {
        loop {
            let seen = fleet_seen(instance).await;
            if seen == n {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "instance {} counts {seen} live instances, not {n}",
                instance.addr()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Admitted requests by phase: sent before the pause, while Redis was frozen, after it.
#[derive(Debug, Default)]
struct Phases {
    before: u64,
    outage: u64,
    after: u64,
    other: u64,
}

/// Drives `/global` on every instance at `PACE` per connection for `BEFORE + OUTAGE +
/// AFTER`, freezing `redis` during `OUTAGE`. Returns the admissions by the phase in which
/// each request was sent, with the phases' exact lengths.
async fn run(instances: &[Instance], redis: &mut RedisServer) -> (Phases, [Duration; 3]) {
    let start = Instant::now();
    let total = BEFORE + OUTAGE + AFTER;
    let sent: Arc<Mutex<Vec<(Instant, u16)>>> = Arc::default();
    let tasks: Vec<_> = instances
        .iter()
        .flat_map(|i| std::iter::repeat_n(i.addr(), CONNECTIONS))
        .map(|addr| {
            let sent = Arc::clone(&sent);
            tokio::spawn(async move {
                let mut conn = Conn::open(addr).await.expect("connect to an instance");
                let mut every = tokio::time::interval(PACE);
                while start.elapsed() < total {
                    every.tick().await;
                    let at = Instant::now();
                    let reply = conn
                        .get("/global", &[])
                        .await
                        .expect("the instance answers");
                    sent.lock().expect("results").push((at, reply.status));
                }
            })
        })
        .collect();
    tokio::time::sleep(BEFORE).await;
    let paused = Instant::now();
    redis.pause();
    tokio::time::sleep(OUTAGE).await;
    redis.resume();
    let resumed = Instant::now();
    for task in tasks {
        task.await.expect("load task");
    }
    let end = Instant::now();
    let mut phases = Phases::default();
    for &(at, status) in sent.lock().expect("results").iter() {
        let phase = if at < paused {
            &mut phases.before
        } else if at < resumed {
            &mut phases.outage
        } else {
            &mut phases.after
        };
        match status {
            200 => *phase += 1,
            429 => {}
            _ => phases.other += 1,
        }
    }
    (phases, [paused - start, resumed - paused, end - resumed])
}

/// What one bucket of 10/s with a burst of 10 admits at most in `d`: full at the start, then
/// 10 a second (+1 for a token earned at the very edge).
fn bound(d: Duration) -> f64 {
    BURST + RATE * d.as_secs_f64() + 1.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_an_outage_the_fleet_shares_the_limit_and_returns_to_redis_after() {
    let mut redis = RedisServer::start();

    // One fleet of three: each instance takes a third of the limit during the outage.
    let fleet = instances(&redis, &["fleet"; 3]).await;
    until_fleet(&fleet, "3").await;
    let (shared, [before, outage, after]) = run(&fleet, &mut redis).await;

    // The contrast, on the same Redis: three instances that cannot see each other (a key
    // prefix each, so three fleets of one), which is how `local` limited before heartbeats.
    let alone = instances(&redis, &["alone-1", "alone-2", "alone-3"]).await;
    until_fleet(&alone, "1").await;
    let (separate, [_, alone_outage, _]) = run(&alone, &mut redis).await;

    let outage_bound = bound(outage);
    println!(
        "fleet of 3, /global 10/s burst 10, {} req/s offered, Redis frozen for {outage:.2?}:\n\
         phase        seconds  admitted  bound   ratio\n\
         before       {:>7.2}  {:>8}  {:>5.0}  {:>5.2}x\n\
         outage       {:>7.2}  {:>8}  {:>5.0}  {:>5.2}x\n\
         after        {:>7.2}  {:>8}  {:>5.0}  {:>5.2}x\n\
         outage, 3 fleets of one (no sharing): {} admitted against {:.0} ({:.2}x)",
        3 * CONNECTIONS * 10,
        before.as_secs_f64(),
        shared.before,
        bound(before),
        shared.before as f64 / bound(before),
        outage.as_secs_f64(),
        shared.outage,
        outage_bound,
        shared.outage as f64 / outage_bound,
        after.as_secs_f64(),
        shared.after,
        bound(after),
        shared.after as f64 / bound(after),
        separate.outage,
        bound(alone_outage),
        separate.outage as f64 / bound(alone_outage),
    );
    assert_eq!(
        shared.other, 0,
        "the local policy answers 200 or 429, never an error"
    );
    // Requests are counted by the phase they were sent in, and a loaded machine decides some
    // of them a moment later: the phases' edges get the same slack as the outage.
    assert!(
        shared.before as f64 <= 1.25 * bound(before),
        "before the outage the shared bucket holds: {shared:?}"
    );
    assert!(
        shared.outage as f64 <= 1.25 * outage_bound,
        "during the outage the fleet stays within 1.25x the limit: {} > 1.25 x {outage_bound:.0}",
        shared.outage
    );
    assert!(
        shared.outage as f64 >= 0.5 * outage_bound,
        "during the outage the fleet still admits: {shared:?}"
    );
    assert!(
        separate.outage as f64 > 2.0 * bound(alone_outage),
        "without sharing, three instances admit about three times the limit: {separate:?}"
    );
    // Back to Redis: every instance logged the recovery, and no circuit is open.
    for instance in &fleet {
        let log = instance.log();
        assert!(
            log.contains("Redis is reachable again"),
            "instance {} did not return to Redis:\n{log}",
            instance.addr()
        );
    }
    // And each decides through the shared bucket again: a request written by the script.
    let bucket = &redis.bucket("fleet", "global", "global");
    for instance in &fleet {
        redis.cli(&["DEL", bucket]);
        let mut conn = Conn::open(instance.addr()).await.expect("connect");
        conn.get("/global", &[]).await.expect("answers");
        assert_eq!(
            redis.cli(&["EXISTS", bucket]).trim(),
            "1",
            "instance {} decided without Redis after the recovery",
            instance.addr()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_count_follows_instances_that_start_and_stop() {
    let redis = RedisServer::start();
    let mut fleet = instances(&redis, &["count"; 2]).await;
    until_fleet(&fleet, "2").await;
    fleet.extend(instances(&redis, &["count"]).await);
    until_fleet(&fleet, "3").await;
    // An instance that stops drops out when its heartbeat expires (3 s).
    drop(fleet.pop());
    let deadline = Instant::now() + Duration::from_secs(8);
    for instance in &fleet {
        while fleet_seen(instance).await != "2" {
            assert!(
                Instant::now() < deadline,
                "the stopped instance is still counted"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // A flushed Redis loses the set; the next heartbeats write it again.
    redis.cli(&["FLUSHALL"]);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    for instance in &fleet {
        assert_eq!(fleet_seen(instance).await, "2");
    }
    assert_eq!(
        redis.cli(&["ZCARD", "count:fleet"]).trim(),
        "2",
        "one member per live instance"
    );
}
