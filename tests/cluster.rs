//! Flux on a real Redis Cluster: exact limits for keys on every master, hostile keys that stay
//! inside one hash tag (no CROSSSLOT), the script reloaded on every node, buckets that survive
//! slot migrations (ASK and MOVED followed), failover to a replica, a lost master that fails only
//! its own slots, and the deny cache in front of a cluster.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use flux::config::BreakerConfig;
use flux::decision::Source;
use flux::key::ToKey;
use flux::{Builder, FailurePolicy, Flux, Key, Limit, Rate};
use support::{Flood, RedisCluster, assert_cache_effect, flood, flood_limit};

/// A fixed arrival time (µs) for `try_check_at`: the answers do not depend on the clock.
const T0: u64 = 1_700_000_000_000_000;
const SECOND: u64 = 1_000_000;

/// A deadline for tests about the algorithm and routing, not about outages: generous enough
/// for MOVED/ASK round trips and script reloads on a loaded 2-core machine.
const ROUTING_DEADLINE: Duration = Duration::from_secs(5);

/// A Flux on `cluster`, reached through every node's URL.
fn on_cluster(cluster: &RedisCluster, prefix: &str) -> Builder {
    Flux::builder()
        .redis_cluster(cluster.urls())
        .key_prefix(prefix)
        .deadline(ROUTING_DEADLINE)
}

fn limit(name: &'static str, rate: Rate, burst: u32) -> Limit {
    Limit::named(name, rate)
        .with_burst(burst)
        .expect("valid burst")
}

/// The Redis key of `client`'s bucket for limit `name`, as Flux writes it (the client key's
/// digest in the hash tag).
fn bucket(prefix: &str, client: impl ToKey, name: &str) -> String {
    format!("{prefix}:{{{}}}:{name}", support::stored(client.to_key()))
}

/// The first `per_master` client keys `"{stem}-N"` on each master, by master index.
fn keys_per_master(
    cluster: &RedisCluster,
    prefix: &str,
    stem: &str,
    per_master: usize,
) -> BTreeMap<usize, Vec<String>> {
    let masters = cluster.master_indices();
    let mut out: BTreeMap<usize, Vec<String>> = masters.iter().map(|&m| (m, Vec::new())).collect();
    for i in 0..10_000 {
        if out.values().all(|keys| keys.len() >= per_master) {
            return out;
        }
        let key = format!("{stem}-{i}");
        let master = cluster.master_for_key(&bucket(prefix, key.as_str(), "any"));
        let keys = out.get_mut(&master).expect("a key's master is a master");
        if keys.len() < per_master {
            keys.push(key);
        }
    }
    panic!("10000 keys did not cover every master: {out:?}");
}

/// Redis Cluster stops answering for *every* slot once one master is marked failed and its slots
/// are not covered (`cluster-require-full-coverage yes`, the default) -- until a replica takes
/// over, or for good when there is none. A rate limiter that must keep the healthy slots working
/// needs this set to `no`; that is a property of the deployment, not of Flux.
fn serve_partial_coverage(cluster: &RedisCluster) {
    for node in cluster.nodes() {
        let reply = node.cli(&["CONFIG", "SET", "cluster-require-full-coverage", "no"]);
        assert_eq!(reply, "OK", "CONFIG SET on port {}", node.port());
    }
}

/// Limits stacked on one handler: 10/s with burst 5, and 100/min with burst 8.
fn stacked() -> [Limit; 2] {
    [
        limit("per-second", Rate::per_second::<10>(), 5),
        limit("per-minute", Rate::per_minute::<100>(), 8),
    ]
}

/// The exact answers of `stacked()` for a fresh client: 5 at T0 (the per-second burst), then
/// 4 more one second later (what the per-minute bucket has left), with exact `remaining`,
/// `retry_after` and the limit that denied. Every call must succeed: one CROSSSLOT error and
/// the test fails with it. (Buckets expire in real time: the per-minute one 3 s after the
/// first five checks, far longer than the few milliseconds the sequence takes.)
async fn exact_stacked_sequence(flux: &Flux, key: &str) {
    let limits = stacked();
    let check = |at: u64| {
        let limits = &limits;
        async move {
            flux.try_check_at(key, limits, at)
                .await
                .unwrap_or_else(|e| panic!("client {key:?} at {at}: {e}"))
        }
    };
    for expected in [4, 3, 2, 1, 0] {
        let d = check(T0).await;
        assert!(d.allowed, "{key}: {d:?}");
        assert_eq!(d.remaining, expected, "{key}: {d:?}");
        assert_eq!(d.source, Source::Backend);
    }
    let d = check(T0).await;
    assert!(
        !d.allowed,
        "{key}: the sixth at once is over the burst: {d:?}"
    );
    assert_eq!((d.index, d.retry_after), (0, Duration::from_millis(100)));
    // One second later the per-second bucket is full again, but the per-minute one
    // (one token per 600 ms, tolerance 4.8 s) holds 4 more: it is the one that denies.
    let t1 = T0 + SECOND;
    for expected in [3, 2, 1, 0] {
        let d = check(t1).await;
        assert!(d.allowed, "{key}: {d:?}");
        assert_eq!(d.remaining, expected, "{key}: {d:?}");
    }
    let d = check(t1).await;
    assert!(!d.allowed, "{key}: {d:?}");
    assert_eq!(
        (d.index, d.retry_after),
        (1, Duration::from_millis(200)),
        "{key}: {d:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stacked_limits_are_exact_for_300_clients_on_every_master() {
    let cluster = RedisCluster::start(3, 0);
    let flux = on_cluster(&cluster, "spread")
        .build()
        .expect("valid configuration");
    let keys: Vec<String> = (0..300).map(|i| format!("client-{i}")).collect();
    let mut spread: BTreeMap<usize, usize> = BTreeMap::new();
    for key in &keys {
        let master = cluster.master_for_key(&bucket("spread", key.as_str(), "per-second"));
        *spread.entry(master).or_default() += 1;
    }
    println!("300 clients per master (node index -> clients): {spread:?}");
    assert_eq!(spread.len(), 3, "clients on every master: {spread:?}");
    assert!(spread.values().all(|&n| n >= 50), "{spread:?}");

    let started = Instant::now();
    let tasks: Vec<_> = (0..6)
        .map(|t| {
            let flux = flux.clone();
            let mine: Vec<String> = keys.iter().skip(t).step_by(6).cloned().collect();
            tokio::spawn(async move {
                for key in mine {
                    exact_stacked_sequence(&flux, &key).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("every client gets the exact answers");
    }
    println!(
        "300 clients x 11 stacked checks = 3300 script calls, all Ok and exact, in {:?}",
        started.elapsed()
    );
}

/// The fleet heartbeat on a cluster: two limiters on one prefix count each other (a check
/// connects, the next one starts the heartbeat).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limiters_on_a_cluster_count_each_other() {
    let cluster = RedisCluster::start(3, 0);
    let build = || {
        on_cluster(&cluster, "fleet")
            .failure_policy(FailurePolicy::Local)
            .build()
            .expect("valid configuration")
    };
    let (flux, other) = (build(), build());
    let fleet = limit("fleet", Rate::per_second::<100>(), 100);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        for limiter in [&flux, &other] {
            limiter.check("fleet-client", &fleet).await;
        }
        let seen = [&flux, &other].map(|f| f.health().fleet_instances);
        if seen == [Some(2), Some(2)] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "fleet counts {seen:?}, not 2 each"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_real_time_checks_never_over_admit_on_any_master() {
    let cluster = RedisCluster::start(3, 0);
    let flux = on_cluster(&cluster, "realtime")
        .build()
        .expect("valid configuration");
    let keys = keys_per_master(&cluster, "realtime", "rt", 20);
    let keys: Arc<Vec<String>> = Arc::new(keys.into_values().flatten().collect());
    let index: HashMap<String, usize> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (k.clone(), i))
        .collect();
    let limits = Arc::new(stacked());
    let admitted: Arc<Vec<AtomicU64>> = Arc::new(keys.iter().map(|_| AtomicU64::new(0)).collect());
    let checked: Arc<Vec<AtomicU64>> = Arc::new(keys.iter().map(|_| AtomicU64::new(0)).collect());
    let run_for = Duration::from_millis(1_500);
    let start = Instant::now();
    let tasks: Vec<_> = (0..4)
        .map(|t| {
            let (flux, keys, limits) = (flux.clone(), Arc::clone(&keys), Arc::clone(&limits));
            let (admitted, checked) = (Arc::clone(&admitted), Arc::clone(&checked));
            tokio::spawn(async move {
                // Each task sweeps every key, starting at a different place.
                let mut i = t * keys.len() / 4;
                while start.elapsed() < run_for {
                    let key = &keys[i % keys.len()];
                    let d = flux.check_all(key.as_str(), &limits[..]).await;
                    assert!(
                        matches!(d.source, Source::Backend | Source::Cached),
                        "{key}: Redis must decide (an error would fail open): {d:?}"
                    );
                    checked[i % keys.len()].fetch_add(1, Ordering::Relaxed);
                    admitted[i % keys.len()].fetch_add(u64::from(d.allowed), Ordering::Relaxed);
                    i += 1;
                    if d.source == Source::Cached {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("checker task");
    }
    let elapsed = start.elapsed().as_secs_f64();
    // All or nothing: a client gets at most what the tighter of the two buckets allows over
    // the run (burst + rate x elapsed, rounded up for the edge).
    let bound =
        (5 + (10.0 * elapsed).ceil() as u64).min(8 + (100.0 / 60.0 * elapsed).ceil() as u64);
    let (mut total_checks, mut total_admitted, mut most) = (0, 0, 0);
    for key in keys.iter() {
        let i = index[key];
        let (a, c) = (
            admitted[i].load(Ordering::Relaxed),
            checked[i].load(Ordering::Relaxed),
        );
        assert!(a <= bound, "{key}: admitted {a} > {bound} in {elapsed:.2}s");
        assert!(
            a >= c.min(5),
            "{key}: only {a} of {c} admitted, under the burst"
        );
        total_checks += c;
        total_admitted += a;
        most = most.max(a);
    }
    println!(
        "real time, {} clients on 3 masters, 4 tasks, {elapsed:.2}s: {total_checks} checks, \
         {total_admitted} admitted, at most {most} per client (bound {bound})",
        keys.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_keys_keep_both_limits_in_one_slot_and_their_own_buckets() {
    let cluster = RedisCluster::start(3, 0);
    let prefix = "hostile";
    let flux = on_cluster(&cluster, prefix)
        .build()
        .expect("valid configuration");
    let digest_lookalike = Key::new("}{").as_str().as_bytes().to_vec();
    let hostile: Vec<Vec<u8>> = vec![
        b"}{".to_vec(),
        b"a{b}c".to_vec(),
        b"b".to_vec(), // the tag a naive `{a{b}c}` would hash on
        b"{}".to_vec(),
        b"{".to_vec(),
        b"}".to_vec(),
        b"".to_vec(),
        b"\xff\x00\xfe{\r\n}\x1b".to_vec(),
        [b"{".as_slice(), &vec![b'k'; 1 << 20], b"}"].concat(), // 1 MB
        b"user:{x}:api".to_vec(),
        b":{x}:".to_vec(),
        b"{x}".to_vec(),
        b"x".to_vec(),
        b"x".repeat(64),  // the longest key stored verbatim
        b"x".repeat(65),  // digested
        digest_lookalike, // a plain key may not pose as a digest
        b"tenant:7 a b".to_vec(),
    ];
    let limits = [
        limit("h-min", Rate::per_minute::<10>(), 3),
        limit("h-hour", Rate::per_hour::<100>(), 5),
    ];
    // One client after another: had two of them shared a bucket, the later one would find
    // it drained.
    for raw in &hostile {
        let shown = String::from_utf8_lossy(&raw[..raw.len().min(24)]).into_owned();
        for expected in [2, 1, 0] {
            let d = flux
                .try_check_at(raw.as_slice(), &limits, T0)
                .await
                .unwrap_or_else(|e| panic!("client {shown:?}: {e}"));
            assert!(d.allowed, "client {shown:?}: {d:?}");
            assert_eq!(d.remaining, expected, "client {shown:?} has its own bucket");
        }
        let d = flux
            .try_check_at(raw.as_slice(), &limits, T0)
            .await
            .unwrap_or_else(|e| panic!("client {shown:?}: {e}"));
        assert!(!d.allowed, "client {shown:?}: {d:?}");
    }

    // In Redis: both buckets of a client share one slot (the slot of its encoded key, which
    // is the hash tag) and sit on the master serving it.
    let mut stored = 0;
    let mut slots = BTreeMap::new();
    for raw in &hostile {
        let key = raw.as_slice().to_key();
        let names = [
            bucket(prefix, &key, "h-min"),
            bucket(prefix, &key, "h-hour"),
        ];
        let slot = cluster.key_slot(&names[0]);
        assert_eq!(cluster.key_slot(&names[1]), slot, "{names:?}");
        assert_eq!(
            cluster.key_slot(&support::stored(&key)),
            slot,
            "{names:?}: tagged by the key's digest"
        );
        let owner = cluster.node(cluster.master_for_slot(slot));
        // A multi-key EXISTS is refused with CROSSSLOT unless both keys share a slot.
        assert_eq!(
            owner.cli(&["EXISTS", &names[0], &names[1]]),
            "2",
            "{names:?}"
        );
        *slots.entry(cluster.master_for_slot(slot)).or_insert(0) += 1;
    }
    for master in cluster.master_indices() {
        let listed = cluster.node(master).cli(&["KEYS", &format!("{prefix}:*")]);
        // The registry of declared limits is the one key that is no client's bucket.
        let registry = format!("{prefix}:limits");
        let listed: Vec<&str> = listed
            .lines()
            .filter(|l| !l.is_empty() && *l != registry)
            .collect();
        for name in &listed {
            assert_eq!(name.matches('{').count(), 1, "one hash tag: {name}");
            assert_eq!(name.matches('}').count(), 1, "one hash tag: {name}");
            assert!(name.len() < 128, "bounded key: {name}");
        }
        stored += listed.len();
    }
    println!(
        "{} hostile clients -> {stored} bucket keys in Redis, clients per master: {slots:?}",
        hostile.len()
    );
    assert_eq!(
        stored,
        2 * hostile.len(),
        "two buckets per client, none shared"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushed_scripts_are_reloaded_on_every_master() {
    let cluster = RedisCluster::start(3, 0);
    let prefix = "scripts";
    let flux = on_cluster(&cluster, prefix)
        .build()
        .expect("valid configuration");
    let sha = redis::Script::new(include_str!("../lua/gcra.lua"))
        .get_hash()
        .to_owned();
    let keys = keys_per_master(&cluster, prefix, "s", 4);
    let all: Vec<String> = keys.values().flatten().cloned().collect();
    let l = [limit("api", Rate::per_minute::<10>(), 10)];
    for key in &all {
        let d = flux
            .try_check_at(key.as_str(), &l, T0)
            .await
            .expect("redis answers");
        assert_eq!(d.remaining, 9);
    }
    for &master in keys.keys() {
        let node = cluster.node(master);
        assert_eq!(
            node.cli(&["SCRIPT", "EXISTS", &sha]),
            "1",
            "loaded on {master}"
        );
        node.flush_scripts();
        node.reset_stats();
        assert_eq!(node.cli(&["SCRIPT", "EXISTS", &sha]), "0");
    }
    // Every client at once, on every master: each first EVALSHA meets NOSCRIPT.
    let tasks: Vec<_> = all
        .iter()
        .cloned()
        .map(|key| {
            let (flux, l) = (flux.clone(), l.clone());
            tokio::spawn(async move {
                flux.try_check_at(key.as_str(), &l, T0)
                    .await
                    .unwrap_or_else(|e| panic!("{key} after SCRIPT FLUSH: {e}"))
            })
        })
        .collect();
    for task in tasks {
        let d = task.await.expect("check task");
        assert!(d.allowed);
        assert_eq!(d.remaining, 8, "the data outlived the script cache");
    }
    for (&master, mine) in &keys {
        let node = cluster.node(master);
        println!(
            "master {master}: {} clients, after SCRIPT FLUSH {} EVALSHA, {} SCRIPT LOAD",
            mine.len(),
            node.command_calls("evalsha"),
            node.command_calls("script|load")
        );
        assert_eq!(
            node.cli(&["SCRIPT", "EXISTS", &sha]),
            "1",
            "reloaded on {master}"
        );
    }
}

/// Starts moving `slot` from master `from` to master `to` (IMPORTING, MIGRATING, then `MIGRATE`
/// of every key in it); returns the keys moved. Until [`finish_migration`], the old owner
/// answers ASK for them.
fn begin_migration(cluster: &RedisCluster, slot: u16, from: usize, to: usize) -> Vec<String> {
    let (src, dst) = (cluster.node(from), cluster.node(to));
    let (src_id, dst_id) = (src.cli(&["CLUSTER", "MYID"]), dst.cli(&["CLUSTER", "MYID"]));
    let slot = slot.to_string();
    assert_eq!(
        dst.cli(&["CLUSTER", "SETSLOT", &slot, "IMPORTING", &src_id]),
        "OK"
    );
    assert_eq!(
        src.cli(&["CLUSTER", "SETSLOT", &slot, "MIGRATING", &dst_id]),
        "OK"
    );
    let listed = src.cli(&["CLUSTER", "GETKEYSINSLOT", &slot, "1000"]);
    let keys: Vec<String> = listed
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    if !keys.is_empty() {
        let port = dst.port().to_string();
        let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
        args.extend(keys.iter().map(String::as_str));
        assert_eq!(src.cli(&args), "OK", "MIGRATE {keys:?}");
    }
    keys
}

/// Assigns `slot` to master `to` on every master, ending the migration.
fn finish_migration(cluster: &RedisCluster, slot: u16, to: usize) {
    let dst_id = cluster.node(to).cli(&["CLUSTER", "MYID"]);
    let slot_arg = slot.to_string();
    // The importing node first, as `redis-cli --cluster reshard` does.
    let mut order = vec![to];
    order.extend(cluster.master_indices().into_iter().filter(|&m| m != to));
    for m in order {
        let reply = cluster
            .node(m)
            .cli(&["CLUSTER", "SETSLOT", &slot_arg, "NODE", &dst_id]);
        assert_eq!(reply, "OK", "SETSLOT NODE on {m}");
    }
    assert_eq!(cluster.master_for_slot(slot), to);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buckets_survive_slot_migration_and_moved_keys_keep_their_state() {
    let cluster = RedisCluster::start(3, 0);
    let prefix = "migrate";
    let flux = on_cluster(&cluster, prefix)
        .build()
        .expect("valid configuration");
    let l = [limit("api", Rate::per_minute::<10>(), 10)];
    let check = |key: &str| {
        let (flux, l, key) = (flux.clone(), l.clone(), key.to_owned());
        async move {
            flux.try_check_at(key.as_str(), &l, T0)
                .await
                .unwrap_or_else(|e| panic!("{key}: {e}"))
        }
    };
    // `stay` keeps its slot; `moving` is another client on the same master, in a slot that
    // will move to another master.
    let stay = "stay-here";
    let stay_slot = cluster.key_slot(&bucket(prefix, stay, "api"));
    let home = cluster.master_for_slot(stay_slot);
    let moving = (0..10_000)
        .map(|i| format!("moving-{i}"))
        .find(|k| {
            let slot = cluster.key_slot(&bucket(prefix, k.as_str(), "api"));
            slot != stay_slot && cluster.master_for_slot(slot) == home
        })
        .expect("another slot on the same master");
    let moving = moving.as_str();
    let moving_slot = cluster.key_slot(&bucket(prefix, moving, "api"));
    let target = *cluster
        .master_indices()
        .iter()
        .find(|&&m| m != home)
        .expect("three masters");

    for expected in [9, 8, 7] {
        assert_eq!(check(stay).await.remaining, expected);
    }
    for expected in [9, 8] {
        assert_eq!(check(moving).await.remaining, expected);
    }

    let moved = begin_migration(&cluster, moving_slot, home, target);
    assert_eq!(
        moved,
        vec![bucket(prefix, moving, "api")],
        "only its bucket moves"
    );
    // Mid-migration: the old owner answers ASK for the moved bucket; the client follows it.
    let d = check(moving).await;
    assert_eq!(
        d.remaining, 7,
        "ASK followed to the importing master: {d:?}"
    );
    // The client whose slot does not move is untouched.
    assert_eq!(check(stay).await.remaining, 6);
    finish_migration(&cluster, moving_slot, target);
    // Now the old owner answers MOVED; the client follows it and refreshes its slot map.
    let d = check(moving).await;
    assert_eq!(d.remaining, 6, "MOVED followed, state intact: {d:?}");
    assert_eq!(
        check(stay).await.remaining,
        5,
        "unrelated slot: state intact"
    );
    assert_eq!(cluster.node(target).cli(&["EXISTS", &moved[0]]), "1");
    // (The registry of limits, `<prefix>:limits`, may live on any master: buckets only.)
    assert_eq!(
        cluster
            .node(home)
            .cli(&["--raw", "KEYS", &format!("{prefix}:{{*")])
            .trim(),
        bucket(prefix, stay, "api"),
        "only `stay` is left on {home}"
    );

    // Move it back with no client action in between, then keep limiting to the end.
    begin_migration(&cluster, moving_slot, target, home);
    finish_migration(&cluster, moving_slot, home);
    let mut left = Vec::new();
    for _ in 0..6 {
        let d = check(moving).await;
        left.push((d.allowed, d.remaining));
    }
    println!("slot {moving_slot} moved {home} -> {target} -> {home}; `moving` answers {left:?}");
    let expected: Vec<(bool, u32)> = (0..=5).rev().map(|r| (true, r)).collect();
    assert_eq!(left, expected, "the bucket went there and back intact");
    assert!(
        !check(moving).await.allowed,
        "burst 10 used up across two moves"
    );
    assert_eq!(check(stay).await.remaining, 4);
}

const FAULT_DEADLINE: Duration = Duration::from_millis(200);
/// What a check may cost beyond the deadline on a loaded 2-core machine.
const SLACK: Duration = Duration::from_millis(500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_to_a_replica_degrades_only_that_masters_slots_then_resumes() {
    let mut cluster = RedisCluster::start(3, 1);
    serve_partial_coverage(&cluster);
    let prefix = "failover";
    let flux = Flux::builder()
        .redis_cluster(cluster.urls())
        .key_prefix(prefix)
        .deadline(FAULT_DEADLINE)
        .breaker(BreakerConfig::new(
            NonZeroU32::new(3).expect("nonzero"),
            Duration::from_millis(200),
        ))
        .failure_policy(FailurePolicy::Local)
        .deny_cache(false)
        .build()
        .expect("valid configuration");
    let l = [limit("api", Rate::per_hour::<5>(), 5)];
    let victim = "victim";
    let dead = cluster.master_for_key(&bucket(prefix, victim, "api"));
    let others: Vec<String> = keys_per_master(&cluster, prefix, "other", 2)
        .into_iter()
        .filter(|(m, _)| *m != dead)
        .flat_map(|(_, keys)| keys)
        .collect();
    for _ in 0..2 {
        assert_eq!(flux.check_all(victim, &l).await.source, Source::Backend);
    }
    for key in &others {
        assert_eq!(
            flux.check_all(key.as_str(), &l).await.source,
            Source::Backend
        );
    }

    cluster.kill_node(dead);
    let killed = Instant::now();
    let (mut local, mut local_admitted, mut other_checks, mut worst) = (0, 0, 0, Duration::ZERO);
    let (recovered, first) = loop {
        let started = Instant::now();
        let d = flux.check_all(victim, &l).await;
        worst = worst.max(started.elapsed());
        assert!(
            started.elapsed() < FAULT_DEADLINE + SLACK,
            "a check on the lost master took {:?}",
            started.elapsed()
        );
        match d.source {
            Source::Backend => break (killed.elapsed(), d),
            Source::Local => {
                local += 1;
                local_admitted += u32::from(d.allowed);
            }
            other => panic!("policy Local answers Local, not {other:?}: {d:?}"),
        }
        // The per-slot breaker: the other masters' slots keep asking Redis, throughout the
        // failure detection (node timeout 2 s) and the replica's election.
        for key in &others {
            let d = flux.check_all(key.as_str(), &l).await;
            assert_eq!(
                d.source,
                Source::Backend,
                "{key} on a healthy master, {:?} after the kill: {d:?}",
                killed.elapsed()
            );
            other_checks += 1;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(20),
            "checks on {victim} never reached the promoted replica"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let new_master = cluster.master_for_key(&bucket(prefix, victim, "api"));
    assert_ne!(new_master, dead, "a replica took over");
    // Limiting resumes. Replication is asynchronous, so the bucket may have lost the writes
    // the old master had not yet sent to its replica: up to the whole burst may be admitted
    // again, never more.
    assert!(first.allowed, "at least 3 of 5 tokens are left: {first:?}");
    let mut admitted = 1;
    let mut denied = None;
    for _ in 0..6 {
        let d = flux.check_all(victim, &l).await;
        assert_eq!(d.source, Source::Backend, "{d:?}");
        if d.allowed {
            admitted += 1;
        } else {
            denied = Some(d);
            break;
        }
    }
    println!(
        "failover: {local} Local answers for {victim} ({local_admitted} admitted, worst check \
         {worst:?}), {other_checks} \
         Backend answers on the other masters, Backend again {recovered:?} after the kill; \
         then {admitted} admitted before a Redis denial (2 were admitted before the kill)"
    );
    assert!(local > 0, "the lost master's slot took the failure policy");
    assert!(
        local_admitted <= 5,
        "the Local fallback limits too: {local_admitted} admitted"
    );
    assert!(denied.is_some(), "limiting resumed within the burst");
    assert!(
        (3..=5).contains(&admitted),
        "admitted {admitted} after failover"
    );
    assert!(!flux.is_degraded(), "every circuit closed again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_master_without_replica_fails_only_its_own_slots() {
    let mut cluster = RedisCluster::start(3, 0);
    serve_partial_coverage(&cluster);
    let prefix = "lost";
    let flux = Flux::builder()
        .redis_cluster(cluster.urls())
        .key_prefix(prefix)
        .deadline(FAULT_DEADLINE)
        .breaker(BreakerConfig::new(
            NonZeroU32::new(3).expect("nonzero"),
            Duration::from_millis(200),
        ))
        .failure_policy(FailurePolicy::Closed)
        .deny_cache(false)
        .build()
        .expect("valid configuration");
    let l = [limit("api", Rate::per_hour::<60>(), 3)];
    let mut keys = keys_per_master(&cluster, prefix, "k", 7);
    // Every master answers once before the fault (connections made, script loaded).
    for mine in keys.values_mut() {
        let first = mine.remove(0);
        let d = flux.check_all(first.as_str(), &l).await;
        assert!(d.allowed && d.source == Source::Backend, "{d:?}");
    }
    let dead = *keys.keys().next().expect("three masters");
    let dead_keys = keys.remove(&dead).expect("keys on the victim");
    let fresh_live: Vec<String> = keys.into_values().flatten().collect();
    let fresh_dead = keys_per_master(&cluster, prefix, "fresh", 20)
        .remove(&dead)
        .expect("keys on the victim");

    cluster.kill_node(dead);
    let killed = Instant::now();
    // Keys on the dead master, hammered meanwhile.
    let hammer = {
        let (flux, l, dead_keys) = (flux.clone(), l.clone(), dead_keys.clone());
        let stop = Arc::new(AtomicU64::new(0));
        let stop2 = Arc::clone(&stop);
        let task = tokio::spawn(async move {
            let (mut checks, mut worst, mut i) = (0u64, Duration::ZERO, 0usize);
            while stop2.load(Ordering::Relaxed) == 0 {
                let key = &dead_keys[i % dead_keys.len()];
                let started = Instant::now();
                let d = flux.check_all(key.as_str(), &l).await;
                let took = started.elapsed();
                assert!(
                    took < FAULT_DEADLINE + SLACK,
                    "{key}: a check took {took:?}"
                );
                assert!(!d.allowed && d.source == Source::FailClosed, "{key}: {d:?}");
                worst = worst.max(took);
                checks += 1;
                i += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (checks, worst)
        });
        (stop, task)
    };
    // Keys on the live masters, one new client every 300 ms, so that they span the failure
    // detection (node timeout 2 s): each gets exactly its burst of 3 from Redis.
    for key in &fresh_live {
        let answers: Vec<(bool, Source)> = {
            let mut v = Vec::new();
            for _ in 0..5 {
                let d = flux.check_all(key.as_str(), &l).await;
                v.push((d.allowed, d.source));
            }
            v
        };
        let expected: Vec<(bool, Source)> = [true, true, true, false, false]
            .into_iter()
            .map(|a| (a, Source::Backend))
            .collect();
        assert_eq!(
            answers,
            expected,
            "{key}, {:?} after the kill",
            killed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (stop, task) = hammer;
    stop.store(1, Ordering::Relaxed);
    let (dead_checks, worst) = task.await.expect("hammer task");
    println!(
        "lost master: {dead_checks} checks on its keys all FailClosed (worst {worst:?}, deadline \
         {FAULT_DEADLINE:?}); {} clients on the 2 live masters each got exactly 3 of 5 from \
         Redis over {:?}",
        fresh_live.len(),
        killed.elapsed()
    );
    assert!(flux.is_degraded());
    assert!(dead_checks > 10);

    // The breaker has one circuit per master: once it is open, clients of the lost master that
    // were never checked before skip Redis too, instead of each paying the deadline.
    let (mut slow, mut worst) = (0, Duration::ZERO);
    for key in &fresh_dead {
        let started = Instant::now();
        let d = flux.check_all(key.as_str(), &l).await;
        let took = started.elapsed();
        assert!(!d.allowed && d.source == Source::FailClosed, "{key}: {d:?}");
        assert!(took < FAULT_DEADLINE + SLACK, "{key}: took {took:?}");
        slow += usize::from(took >= FAULT_DEADLINE);
        worst = worst.max(took);
    }
    println!(
        "{slow} of {} first checks of new clients of the lost master waited the whole \
         {FAULT_DEADLINE:?} deadline (worst {worst:?})",
        fresh_dead.len()
    );
    // At most a probe's worth: the master's circuit is open for all of its slots.
    assert!(
        slow <= 1,
        "{slow} new clients of the lost master waited for the deadline"
    );
}

/// A flood on one client of the cluster, counting the script calls on the master that owns it.
async fn flood_on(cluster: &RedisCluster, cache: bool, run_for: Duration) -> Flood {
    let prefix = if cache { "with-cache" } else { "without-cache" };
    let flux = on_cluster(cluster, prefix)
        .deny_cache(cache)
        .build()
        .expect("valid configuration");
    let owner = cluster.node(cluster.master_for_key(&bucket(prefix, "attacker", "flood")));
    // Connect and load the script before counting.
    assert!(flux.check("warm-up", &flood_limit()).await.allowed);
    owner.reset_stats();
    let mut f = flood(&flux, "attacker", run_for).await;
    f.redis_calls = owner.command_calls("evalsha") + owner.command_calls("eval");
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deny_cache_keeps_a_one_client_flood_off_its_master() {
    let cluster = RedisCluster::start(3, 0);
    let run_for = Duration::from_millis(1_500);
    let with = flood_on(&cluster, true, run_for).await;
    let without = flood_on(&cluster, false, run_for).await;
    assert_cache_effect(&with, &without);
}
