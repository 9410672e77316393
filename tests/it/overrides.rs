//! Overrides of named limits while the fleet runs: instances of the test service as separate
//! processes on one real Redis, changed through the library's operator calls (what the
//! `flux` tool uses). The limit in force is read where a client sees it: the
//! `RateLimit-Policy` field (`"one";q=50;w=1`) of `/one` (100/s, burst 50, per `x-client`).
//! Also the in-memory backend's `FLUX_OVERRIDES` file, and `Flux::peek`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use flux::overrides::{Override, Setting};
use flux::{Flux, Limit, Rate};

use crate::support::{self, Conn, Instance, RedisCluster, RedisServer};

/// How long a change may take to reach every instance before the test fails. The promise
/// is one second; pub/sub usually takes milliseconds. The bound is generous for a loaded
/// machine, and each test prints what it measured.
const BOUND: Duration = Duration::from_secs(3);

/// A client key never used before, so each probe finds a full bucket.
fn fresh() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("probe-{}", N.fetch_add(1, Ordering::Relaxed))
}

/// The capacity `/one` announces for `client` on `instance` (`None`: no RateLimit fields).
async fn capacity(instance: &Instance, client: &str) -> Option<u32> {
    let mut conn = Conn::open(instance.addr()).await.expect("connect");
    let reply = conn
        .get("/one", &[("x-client", client.as_bytes())])
        .await
        .expect("an answer");
    assert_eq!(reply.status, 200, "{}", reply.body);
    let policy = reply.header("ratelimit-policy")?;
    policy.split(";q=").nth(1)?.split(';').next()?.parse().ok()
}

/// Polls until every instance announces `expected` for keys made by `client`; returns how
/// long that took, or fails after [`BOUND`].
async fn until_all(
    instances: &[Instance],
    client: impl Fn() -> String,
    expected: Option<u32>,
) -> Duration {
    let start = Instant::now();
    loop {
        let mut all = true;
        for instance in instances {
            if capacity(instance, &client()).await != expected {
                all = false;
            }
        }
        if all {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < BOUND,
            "instances did not apply capacity {expected:?} within {BOUND:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn admin(redis: &RedisServer) -> Flux {
    Flux::builder().redis(redis.url()).build().expect("valid")
}

fn rate(text: &str, burst: u32) -> Setting {
    Setting::Limited {
        rate: text.parse().expect("valid rate"),
        burst,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_override_reaches_every_instance_within_a_second_and_clear_restores_the_code() {
    let redis = RedisServer::start();
    let fleet = support::fleet(&redis.url(), 3).await;
    until_all(&fleet, fresh, Some(50)).await;
    let admin = admin(&redis);

    admin
        .set_override(&Override::new("one", rate("3/s", 3)))
        .await
        .expect("stored");
    let took = until_all(&fleet, fresh, Some(3)).await;
    eprintln!("override applied on 3 instances after {took:?}");

    // A burst of 12 from one client, spread over the fleet: 3 admitted (a 4th only if a
    // token refilled meanwhile, one per 333 ms).
    let mut admitted = 0;
    for i in 0..12 {
        let mut conn = Conn::open(fleet[i % 3].addr()).await.expect("connect");
        let reply = conn
            .get("/one", &[("x-client", b"burst")])
            .await
            .expect("answer");
        admitted += u32::from(reply.status == 200);
    }
    assert!((3..=4).contains(&admitted), "admitted {admitted} of 12");

    assert!(admin.clear_override("one", None).await.expect("cleared"));
    let took = until_all(&fleet, fresh, Some(50)).await;
    eprintln!("clear applied on 3 instances after {took:?}");
    assert!(
        !admin
            .clear_override("one", None)
            .await
            .expect("nothing left")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_override_ends_by_itself_after_its_ttl() {
    let redis = RedisServer::start();
    let fleet = support::fleet(&redis.url(), 2).await;
    let admin = admin(&redis);
    admin
        .set_override(&Override::new("one", rate("5/s", 5)).expires_in(Duration::from_secs(2)))
        .await
        .expect("stored");
    until_all(&fleet, fresh, Some(5)).await;
    let set = Instant::now();
    until_all(&fleet, fresh, Some(50)).await;
    let after = set.elapsed();
    eprintln!("the 2 s override ended {after:?} after it was seen");
    assert!(admin.overrides().await.expect("listed").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_key_override_touches_no_other_key_and_wins_over_the_limit_wide_one() {
    let redis = RedisServer::start();
    let fleet = support::fleet(&redis.url(), 2).await;
    let admin = admin(&redis);
    admin
        .set_override(&Override::new("one", rate("10/s", 7)).for_key("vip"))
        .await
        .expect("stored");
    until_all(&fleet, || "vip".to_owned(), Some(7)).await;
    for instance in &fleet {
        assert_eq!(capacity(instance, &fresh()).await, Some(50));
    }
    // The limit-wide override applies to everyone else; vip keeps its own.
    admin
        .set_override(&Override::new("one", rate("2/s", 2)))
        .await
        .expect("stored");
    until_all(&fleet, fresh, Some(2)).await;
    for instance in &fleet {
        assert_eq!(capacity(instance, "vip").await, Some(7));
    }
    // `off` for one key: no limit, so no RateLimit fields, however many requests.
    admin
        .set_override(&Override::new("one", Setting::Off).for_key("free"))
        .await
        .expect("stored");
    until_all(&fleet, || "free".to_owned(), None).await;
    for _ in 0..20 {
        assert_eq!(capacity(&fleet[0], "free").await, None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_override_written_by_hand_is_reported_once_and_ignored() {
    let redis = RedisServer::start();
    let fleet = support::fleet(&redis.url(), 2).await;
    redis.cli(&["HSET", "flux:overrides", "one", "lots/s"]);
    redis.cli(&["HSET", "flux:overrides", "many", "5/s burst=3"]);
    // Several re-reads pass (one a second); the good entry next to it applies.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for instance in &fleet {
        assert_eq!(capacity(instance, &fresh()).await, Some(50));
        let log = instance.log();
        let reports = log.matches("malformed override \"one\"").count();
        assert_eq!(reports, 1, "{log}");
        assert!(log.contains("lots/s"), "{log}");
        let mut conn = Conn::open(instance.addr()).await.expect("connect");
        let reply = conn
            .get("/many", &[("x-client", b"m")])
            .await
            .expect("answer");
        assert_eq!(reply.header("ratelimit-policy"), Some("\"many\";q=3;w=1"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overrides_survive_an_instance_restart() {
    let redis = RedisServer::start();
    let mut fleet = support::fleet(&redis.url(), 2).await;
    admin(&redis)
        .set_override(&Override::new("one", rate("4/s", 4)))
        .await
        .expect("stored");
    until_all(&fleet, fresh, Some(4)).await;
    fleet.pop();
    fleet.extend(support::fleet(&redis.url(), 1).await);
    let took = until_all(&fleet, fresh, Some(4)).await;
    eprintln!("a restarted instance applied the override after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_an_override_reaches_instances_subscribed_to_other_nodes() {
    let cluster = RedisCluster::start(3, 0);
    let urls = cluster.urls();
    // Each instance subscribes on the first node of its list: two different nodes.
    let mut reversed = urls.clone();
    reversed.reverse();
    let fleet: Vec<Instance> = [urls.join(","), reversed.join(",")]
        .iter()
        .map(|nodes| {
            Instance::start(&[
                ("FLUX_REDIS_CLUSTER", nodes),
                ("FLUX_DEADLINE_MS", "2000"),
                ("FLUX_FAILURE_POLICY", "closed"),
            ])
        })
        .collect();
    support::wait_healthy(&fleet).await;
    until_all(&fleet, fresh, Some(50)).await;
    let admin = Flux::builder().redis_cluster(urls).build().expect("valid");
    admin
        .set_override(&Override::new("one", rate("5/s", 5)))
        .await
        .expect("stored");
    let took = until_all(&fleet, fresh, Some(5)).await;
    eprintln!("cluster: override applied on 2 instances after {took:?}");
    admin.clear_override("one", None).await.expect("cleared");
    until_all(&fleet, fresh, Some(50)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peek_answers_as_a_check_would_and_consumes_nothing() {
    static API: Limit = Limit::new("peek-api", Rate::per_minute::<5>());
    let redis = RedisServer::start();
    for flux in [admin(&redis), Flux::builder().build().expect("memory")] {
        let limits = std::slice::from_ref(&API);
        assert!(flux.check("alice", &API).await.allowed);
        let peeked = flux.peek("alice", limits).await.expect("peeked");
        assert_eq!((peeked.allowed, peeked.remaining), (true, 3));
        let again = flux.peek("alice", limits).await.expect("peeked");
        assert_eq!(again.remaining, 3);
        let checked = flux.check("alice", &API).await;
        assert_eq!(checked.remaining, 3);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charge_settles_in_the_limit_in_force() {
    static BUDGET: Limit = Limit::new("budget", Rate::per_second::<10>());
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("overrides.toml");
    std::fs::write(
        &file,
        "[[override]]\nlimit = \"budget\"\nrate = \"1/s\"\nburst = 1\n\n\
         [[override]]\nlimit = \"budget\"\nkey = \"free\"\nrate = \"off\"\n",
    )
    .expect("write the file");
    let flux = Flux::builder()
        .overrides_file(&file)
        .build()
        .expect("valid");
    // Under 1/s burst 1, one token charged empties the bucket: the next check waits ~1 s
    // (under the code's 10/s it would pass with 9 left).
    assert!(flux.charge("alice", &BUDGET, 1).await.recorded());
    let d = flux.check("alice", &BUDGET).await;
    assert!(!d.allowed, "{d:?}");
    assert!(d.retry_after > Duration::from_millis(800), "{d:?}");
    // Off for one key: nothing to charge.
    let off = flux.charge("free", &BUDGET, 5).await;
    assert!(!off.recorded());
    assert!(flux.check("free", &BUDGET).await.allowed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_backend_reads_its_overrides_file_again_when_it_changes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("overrides.toml");
    let write = |text: &str| std::fs::write(&file, text).expect("write the file");
    write("[[override]]\nlimit = \"one\"\nrate = \"3/s\"\n");
    let path = file.to_str().expect("UTF-8 path");
    let instance = Instance::start(&[("FLUX_OVERRIDES", path)]);
    support::wait_healthy(std::slice::from_ref(&instance)).await;
    let one = std::slice::from_ref(&instance);
    // Read at start: in force from the first request.
    assert_eq!(capacity(&instance, &fresh()).await, Some(3));

    write("[[override]]\nlimit = \"one\"\nrate = \"6/s\"\nburst = 6\n");
    until_all(one, fresh, Some(6)).await;
    // A broken file is reported and holds no overrides; fixing it applies again.
    write("[[override]\n");
    until_all(one, fresh, Some(50)).await;
    assert!(
        instance.log().contains("is not valid"),
        "{}",
        instance.log()
    );
    write("[[override]]\nlimit = \"one\"\nrate = \"off\"\n");
    until_all(one, fresh, None).await;
}
