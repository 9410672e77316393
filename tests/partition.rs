//! Partitions and failovers behind a stable address: Flux reaches Redis through a fault proxy
//! (`support::proxy`) that plays the address while the server behind it is demoted, goes
//! dark or resets its connections. A client checks every 25 ms (40 requests a second) under
//! the `closed` failure policy, so every check that Redis does not decide is a denial.
//!
//! Scenarios: (a) the primary demoted to a replica of another server, the address switched
//! to that one a second later; (b) the connections Flux holds black-holed (no reset) while
//! new ones reach Redis, with the override watcher and the fleet heartbeat; (c) every
//! connection reset; (d) replies slower than the deadline for 2 s. Per scenario it prints
//! (run with `-- --nocapture`) the time from the address leading to a healthy primary again
//! to the first check Redis decided, and the undecided checks before and after that; and
//! asserts the targets: recovered within 2 s, nothing undecided after.
//!
//! ```text
//! cargo test -p flux-tests --test partition -- --nocapture --test-threads 1
//! ```

mod support;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use flux::decision::Source;
use flux::overrides::{Override, Setting};
use flux::{FailurePolicy, Flux, Limit, Rate};

use crate::support::RedisServer;
use crate::support::proxy::{FaultProxy, Mode};

static API: Limit = Limit::new("api", Rate::per_second::<1000>());

/// The target: the first decided check within this of the address leading to a healthy
/// primary.
const RECOVERY: Duration = Duration::from_secs(2);
/// Time between two checks: 40 a second.
const EVERY: Duration = Duration::from_millis(25);

fn flux(url: &str) -> Flux {
    Flux::builder()
        .redis(url)
        .key_prefix("partition")
        .failure_policy(FailurePolicy::Closed)
        .build()
        .expect("valid configuration")
}

/// One check: when it started, when it ended (since the client's start), and who decided.
#[derive(Clone, Copy, Debug)]
struct Sample {
    sent: Duration,
    done: Duration,
    source: Source,
}

/// A client checking every [`EVERY`], each check on a task of its own.
struct Client {
    start: Instant,
    samples: Arc<Mutex<Vec<Sample>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Client {
    fn start(flux: &Flux) -> Client {
        let start = Instant::now();
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (flux, log) = (flux.clone(), Arc::clone(&samples));
        let task = tokio::spawn(async move {
            let mut every = tokio::time::interval(EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let (flux, log) = (flux.clone(), Arc::clone(&log));
                tokio::spawn(async move {
                    let sent = start.elapsed();
                    let d = flux.check("client", &API).await;
                    let sample = Sample {
                        sent,
                        done: start.elapsed(),
                        source: d.source,
                    };
                    log.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(sample);
                });
            }
        });
        Client {
            start,
            samples,
            task,
        }
    }

    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    fn samples(&self) -> Vec<Sample> {
        let mut s = self
            .samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        s.sort_by_key(|s| s.sent);
        s
    }

    /// Waits until a check sent after `since` was decided by Redis (or `within` passed).
    async fn until_decided(&self, since: Duration, within: Duration) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self
                .samples()
                .iter()
                .any(|s| s.sent >= since && s.source == Source::Backend)
            {
                return;
            }
            tokio::time::sleep(EVERY).await;
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the client saw after the address led to a healthy primary again at `healed`.
struct Recovery {
    /// From `healed` to the end of the first check Redis decided.
    first_decided: Option<Duration>,
    /// Checks sent after that one.
    after: usize,
    /// Those of them Redis did not decide.
    undecided_after: usize,
    /// Checks not decided by Redis between the fault and that first decided one.
    undecided_before: usize,
}

fn recovery(samples: &[Sample], fault: Duration, healed: Duration) -> Recovery {
    let first = samples
        .iter()
        .filter(|s| s.sent >= healed && s.source == Source::Backend)
        .min_by_key(|s| s.sent);
    let until = first.map_or(Duration::MAX, |f| f.sent);
    let undecided_before = samples
        .iter()
        .filter(|s| s.sent >= fault && s.sent < until && s.source != Source::Backend)
        .count();
    let Some(first) = first else {
        return Recovery {
            first_decided: None,
            after: 0,
            undecided_after: 0,
            undecided_before,
        };
    };
    let after: Vec<&Sample> = samples.iter().filter(|s| s.sent > first.sent).collect();
    Recovery {
        first_decided: Some(first.done.saturating_sub(healed)),
        after: after.len(),
        undecided_after: after.iter().filter(|s| s.source != Source::Backend).count(),
        undecided_before,
    }
}

fn report(scenario: &str, r: &Recovery) {
    println!(
        "partition {scenario}: first decided check {} after the address led to a healthy primary; \
         undecided checks: {} from the fault to then, {} of {} after",
        r.first_decided
            .map_or_else(|| "never".to_owned(), |d| format!("{} ms", d.as_millis())),
        r.undecided_before,
        r.undecided_after,
        r.after
    );
}

fn assert_recovered(scenario: &str, r: &Recovery) {
    let first = r
        .first_decided
        .unwrap_or_else(|| panic!("{scenario}: no check decided by Redis after the fault"));
    assert!(
        first <= RECOVERY,
        "{scenario}: first decided check {first:?} after the heal, over {RECOVERY:?}"
    );
    assert!(r.after > 0, "{scenario}: no check after the recovery");
    assert_eq!(
        r.undecided_after, 0,
        "{scenario}: checks undecided after the recovery"
    );
}

/// Waits for the client's checks to be decided again after `healed` (the fault began at
/// `fault`), watches them for two more seconds, prints the figures and asserts the recovery.
async fn judge(client: &Client, scenario: &str, fault: Duration, healed: Duration) {
    client.until_decided(healed, RECOVERY * 2).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r = recovery(&client.samples(), fault, healed);
    report(scenario, &r);
    assert_recovered(scenario, &r);
}

/// Warms the client up: every check decided by Redis for a second.
async fn warm_up(client: &Client) {
    tokio::time::sleep(Duration::from_secs(1)).await;
    let samples = client.samples();
    assert!(
        samples.len() >= 20 && samples.iter().all(|s| s.source == Source::Backend),
        "before the fault: {samples:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demoted_primary_behind_the_same_address() {
    support::init_tracing();
    let a = RedisServer::start();
    let b = RedisServer::start();
    let proxy = FaultProxy::start(a.port()).await;
    let flux = flux(&proxy.url());
    let client = Client::start(&flux);
    warm_up(&client).await;

    // The failover: A becomes B's replica, and a second later (a DNS record's time to
    // live, a proxy's health check) the address leads to B, the new primary. Meanwhile the
    // breaker opens on A's READONLY and probes every 500 ms.
    let fault = client.now();
    a.cli(&["REPLICAOF", "127.0.0.1", &b.port().to_string()]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    proxy.point_at(b.port());
    let healed = client.now();
    judge(&client, "(a) demoted primary", fault, healed).await;
    assert!(
        b.command_calls("evalsha") > 0,
        "the checks run on the new primary"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_hole_while_the_address_leads_to_a_healthy_redis() {
    support::init_tracing();
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.port()).await;
    let flux = flux(&proxy.url());
    let client = Client::start(&flux);
    warm_up(&client).await;

    // The connections Flux holds go dark without a reset; a new one would reach Redis.
    let fault = client.now();
    proxy.black_hole_existing();
    let healed = fault;
    judge(&client, "(b) black hole", fault, healed).await;

    // The override watcher heals with the connection: an override set by another instance
    // (straight to Redis) is in force within a few seconds.
    let operator = flux_direct(&server);
    let set = Instant::now();
    operator
        .set_override(
            &Override::new(
                "api",
                Setting::Limited {
                    rate: "1/m".parse().expect("valid rate"),
                    burst: 1,
                },
            )
            .expires_in(Duration::from_secs(60)),
        )
        .await
        .expect("set the override");
    let within = Duration::from_secs(5);
    for i in 0.. {
        // The override allows one check a minute per client: a new client's second check is
        // denied once it is in force.
        let key = format!("watcher-{i}");
        let _ = flux.check(key.as_str(), &API).await;
        let second = flux.check(key.as_str(), &API).await;
        // Denied by Redis, or by the deny cache on Redis' word.
        if !second.allowed && matches!(second.source, Source::Backend | Source::Cached) {
            break;
        }
        assert!(
            set.elapsed() < within,
            "the override was not in force within {within:?} of being set"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "partition (b) black hole: override set by another instance in force after {} ms",
        set.elapsed().as_millis()
    );
}

fn flux_direct(server: &RedisServer) -> Flux {
    flux(&server.url())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_connections() {
    support::init_tracing();
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.port()).await;
    let flux = flux(&proxy.url());
    let client = Client::start(&flux);
    warm_up(&client).await;

    let fault = client.now();
    proxy.reset_all();
    let healed = fault;
    judge(&client, "(c) reset", fault, healed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_heartbeat_recovers_from_a_black_hole() {
    support::init_tracing();
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.port()).await;
    let local = |url: &str| {
        Flux::builder()
            .redis(url)
            .key_prefix("partition")
            .failure_policy(FailurePolicy::Local)
            .build()
            .expect("valid configuration")
    };
    // The instance behind the proxy, under steady traffic (its checks start its heartbeat),
    // and another one straight on Redis.
    let watched = local(&proxy.url());
    let client = Client::start(&watched);
    let other = local(&server.url());
    let _ = other.check("other", &API).await;
    let fleet_is = |n: u32, within: Duration| {
        let watched = watched.clone();
        async move {
            let start = Instant::now();
            while start.elapsed() < within {
                if watched.health().fleet_instances == Some(n) {
                    return Some(start.elapsed());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            None
        }
    };
    assert!(
        fleet_is(2, Duration::from_secs(5)).await.is_some(),
        "two instances counted before the fault: {:?}",
        watched.health().fleet_instances
    );

    proxy.black_hole_existing();
    // A third instance joins during the fault: the watched one counts it only once its
    // heartbeat reaches Redis again.
    let third = local(&server.url());
    let _ = third.check("third", &API).await;
    let within = Duration::from_secs(5);
    let seen = fleet_is(3, within).await;
    drop(client);
    println!(
        "partition (b) black hole: the fleet heartbeat counts a new instance {} after the fault",
        seen.map_or_else(|| "never".to_owned(), |d| format!("{} ms", d.as_millis()))
    );
    assert!(
        seen.is_some(),
        "the heartbeat did not count the third instance within {within:?}: {:?}",
        watched.health().fleet_instances
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_slower_than_the_deadline_then_fast_again() {
    support::init_tracing();
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.port()).await;
    let flux = flux(&proxy.url());
    let client = Client::start(&flux);
    warm_up(&client).await;

    // Every reply 200 ms late, on every connection, new ones too: the connection is replaced
    // a few times to no avail; nothing must stick once the link is fast again.
    let fault = client.now();
    proxy.set_mode(Mode::SlowReplies(Duration::from_millis(200)));
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.set_mode(Mode::Pass);
    let healed = client.now();
    judge(&client, "(d) slow replies", fault, healed).await;
}
