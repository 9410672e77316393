//! What Redis holds of a client: after traffic through the quickstart on Redis, no key name and
//! no value carries the client's address or its API key (they are keyed digests), while the
//! limits hold as before; `FLUX_CLEAR_KEYS=on` (for debugging) shows them, which is how this
//! test knows it would see them.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use flux::overrides::{Override, Setting};
use flux::{Flux, Rate};

use crate::support::{Conn, RedisServer};

const API_KEY: &str = "sk-live-4f9a1c2e7b";
const ADDRESS: &str = "127.0.0.1";

/// The quickstart example, run as a user runs it, killed on drop.
struct Quickstart {
    child: Child,
    addr: SocketAddr,
}

impl Quickstart {
    fn start(env: &[(&str, &str)]) -> Quickstart {
        let mut child = Command::new(env!("CARGO_BIN_EXE_quickstart"))
            .env("FLUX_ADDR", "127.0.0.1:0")
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the quickstart starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stdout = BufReader::new(stdout);
        let mut first = String::new();
        stdout
            .read_line(&mut first)
            .expect("the quickstart prints its address");
        // The rest is read (and dropped) so that its prints never meet a closed pipe.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        let addr = first
            .trim()
            .strip_prefix("flux quickstart on http://")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"));
        Quickstart { child, addr }
    }
}

impl Drop for Quickstart {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Statuses of `n` requests to `path` on one connection.
async fn statuses(addr: SocketAddr, path: &str, headers: &[(&str, &[u8])], n: usize) -> Vec<u16> {
    let mut conn = Conn::open(addr).await.expect("connect");
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(conn.get(path, headers).await.expect("an answer").status);
    }
    out
}

/// Every key name in `redis` and every value it holds, as text.
fn everything(redis: &RedisServer) -> String {
    let mut all = String::new();
    for key in redis.cli(&["--scan"]).lines().filter(|k| !k.is_empty()) {
        all.push_str(key);
        all.push('\n');
        let value = match redis.cli(&["TYPE", key]).trim() {
            "string" => redis.cli(&["GET", key]),
            "hash" => redis.cli(&["HGETALL", key]),
            "zset" => redis.cli(&["ZRANGE", key, "0", "-1", "WITHSCORES"]),
            "set" => redis.cli(&["SMEMBERS", key]),
            "list" => redis.cli(&["LRANGE", key, "0", "-1"]),
            other => panic!("unexpected type {other:?} of {key}"),
        };
        all.push_str(&value);
        all.push('\n');
    }
    all
}

/// Traffic from 127.0.0.1 with an API key over every kind of route, and a per-key override
/// of each client set as an operator would.
async fn traffic(redis: &RedisServer, env: &[(&str, &str)]) -> String {
    let url = redis.url();
    let mut env = env.to_vec();
    env.push(("FLUX_REDIS_URL", url.as_str()));
    // `local` keeps the fleet's heartbeat going too.
    env.push(("FLUX_FAILURE_POLICY", "local"));
    let quickstart = Quickstart::start(&env);
    let addr = quickstart.addr;
    let key: &[(&str, &[u8])] = &[("x-api-key", API_KEY.as_bytes())];
    // The limits hold as ever: /api is 2/s, burst 2 per key; /burst 5 per address.
    assert_eq!(statuses(addr, "/api", key, 3).await, [200, 200, 429]);
    assert_eq!(
        statuses(addr, "/burst", &[], 6).await,
        [200, 200, 200, 200, 200, 429]
    );
    assert_eq!(statuses(addr, "/stacked", &[], 2).await, [200, 200]);
    assert_eq!(statuses(addr, "/global", &[], 1).await, [200]);
    assert_eq!(statuses(addr, "/slow", &[], 1).await, [200]);

    // Overrides for those two clients, through the library as `flux override set --key` does.
    let mut builder = Flux::builder().redis(url.as_str());
    for (name, value) in &env {
        match *name {
            "FLUX_KEY_SECRET" => builder = builder.key_secret(value),
            "FLUX_CLEAR_KEYS" => builder = builder.clear_keys(true),
            _ => {}
        }
    }
    let operator = builder.build().expect("valid configuration");
    let raise = Setting::rate(Rate::per_second::<100>());
    operator
        .set_override(&Override::new("quickstart::api", raise).for_key(API_KEY))
        .await
        .expect("stored");
    let ip: std::net::IpAddr = ADDRESS.parse().expect("an address");
    operator
        .set_override(&Override::new("quickstart::burst", raise).for_key(ip))
        .await
        .expect("stored");
    // The raise applies to the client it names, which only a digest of the same key finds:
    // /api admits again within the watcher's second.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while statuses(addr, "/api", key, 1).await != [200] {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the per-key override never applied"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Let the instance write what it writes in the background (registry, heartbeat).
    tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;
    everything(redis)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_holds_no_client_address_or_api_key() {
    let redis = RedisServer::start();
    let held = traffic(&redis, &[]).await;
    assert!(
        held.contains(":quickstart::stacked#2\n"),
        "the buckets are there:\n{held}"
    );
    assert!(!held.contains(API_KEY), "the API key is in Redis:\n{held}");
    assert!(
        !held.contains(ADDRESS),
        "the client address is in Redis:\n{held}"
    );

    // With a secret of the deployment's own: other digests, the same limits.
    let secret = "9c1f6a0e4b7d2c8f5a3e1b6d0c9f7a2e";
    let other = RedisServer::start();
    let held_too = traffic(&other, &[("FLUX_KEY_SECRET", secret)]).await;
    assert!(!held_too.contains(API_KEY) && !held_too.contains(ADDRESS));
    assert!(
        !held_too.contains(secret),
        "the secret itself is not in Redis"
    );
    let bucket_names = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with("flux:{"))
            .map(str::to_owned)
            .collect()
    };
    let names = bucket_names(&held);
    assert!(!names.is_empty());
    assert!(
        bucket_names(&held_too).iter().all(|n| !names.contains(n)),
        "another secret, other names"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_in_clear_show_the_client_for_debugging() {
    let redis = RedisServer::start();
    let held = traffic(&redis, &[("FLUX_CLEAR_KEYS", "on")]).await;
    // /stacked's 20/min bucket is far from full again, unlike /api's 2/s.
    let stacked = format!("flux:{{{ADDRESS}}}:quickstart::stacked#2");
    assert!(held.contains(&stacked), "{held}");
    assert!(
        held.contains(&format!("quickstart::api@{API_KEY}")),
        "{held}"
    );
}
