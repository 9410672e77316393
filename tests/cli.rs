//! The `flux` command-line tool end to end: the built binary (of the `flux-cli` package)
//! against instances of the test service on one real Redis, as an operator would use it.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use support::{Conn, Instance, RedisServer};

/// The `flux` binary, built once per test run into this target directory (a test can name
/// only its own package's binaries, and the tool is a package of its own).
fn flux_bin() -> &'static PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "-p", "flux-cli", "--bin", "flux"])
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building the flux binary failed");
        // This test runs from <target>/<profile>/deps/.
        let exe = std::env::current_exe().expect("test binary path");
        let profile = exe
            .parent()
            .and_then(|deps| deps.parent())
            .expect("<target>/<profile>");
        let bin = profile.join("flux");
        assert!(bin.exists(), "{} missing", bin.display());
        bin
    })
}

/// Runs `flux ARGS` against `url`.
fn run(url: &str, args: &[&str]) -> std::process::Output {
    Command::new(flux_bin())
        .args(args)
        .env_remove("FLUX_REDIS_CLUSTER")
        .env_remove("FLUX_KEY_PREFIX")
        .env("FLUX_REDIS_URL", url)
        .output()
        .expect("run flux")
}

/// Runs `flux ARGS` against `url`: exit success, stdout, stderr.
fn flux(url: &str, args: &[&str]) -> (bool, String, String) {
    let out = run(url, args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `flux ARGS`, which must succeed; returns stdout.
fn ok(url: &str, args: &[&str]) -> String {
    let (success, stdout, stderr) = flux(url, args);
    assert!(success, "flux {args:?} failed: {stderr}");
    stdout
}

/// `GET /one` as `client`: status and `RateLimit-Policy`.
async fn one(instance: &Instance, client: &str) -> (u16, Option<String>) {
    let mut conn = Conn::open(instance.addr()).await.expect("connect");
    let reply = conn
        .get("/one", &[("x-client", client.as_bytes())])
        .await
        .expect("answer");
    let policy = reply.header("ratelimit-policy").map(str::to_owned);
    (reply.status, policy)
}

/// Waits until `instance` announces a policy starting with `policy` to fresh clients.
async fn until_policy(instance: &Instance, policy: &str) {
    let start = Instant::now();
    let mut n = 0;
    loop {
        n += 1;
        let seen = one(instance, &format!("fresh-{n}")).await.1;
        if seen.is_some_and(|p| p.starts_with(policy)) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "never saw {policy}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_list_override_inspect_and_clear_limits() {
    let redis = RedisServer::start();
    let url = redis.url();
    let fleet = support::fleet(&url, 2).await;
    // A limit registers on its first check.
    one(&fleet[0], "warm-up").await;
    let start = Instant::now();
    while !ok(&url, &["limits"]).contains("\none\t") {
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "`one` never registered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let listed = ok(&url, &["limits"]);
    assert!(
        listed.starts_with("NAME\tKEY\tRATE\tBURST\tCOST\tOVERRIDE\n"),
        "{listed}"
    );
    assert!(listed.contains("one\t*\t100/s\t50\t1\t-\n"), "{listed}");

    assert_eq!(
        ok(&url, &["override", "set", "one", "3/s", "--burst", "3"]),
        "set one *: 3/s burst=3\n"
    );
    for instance in &fleet {
        until_policy(instance, "\"one\";q=3;").await;
    }
    ok(
        &url,
        &[
            "override", "set", "one", "off", "--key", "vip", "--ttl", "1h",
        ],
    );
    let listed = ok(&url, &["limits"]);
    assert!(
        listed.contains("one\t*\t100/s\t50\t1\t3/s burst=3\n"),
        "{listed}"
    );
    // A per-key override is listed by the client's digest: Redis holds no client key.
    let vip = support::stored("vip");
    assert!(
        listed.contains(&format!("one\t{vip}\t100/s\t50\t1\toff ttl=3600s\n")),
        "{listed}"
    );
    assert!(!redis.cli(&["HGETALL", "flux:overrides"]).contains("vip"));

    // Inspect consumes nothing: the same tokens twice, the bucket only refilling.
    for _ in 0..2 {
        one(&fleet[1], "carol").await;
    }
    let first = ok(&url, &["inspect", "one", "carol"]);
    let second = ok(&url, &["inspect", "one", "carol"]);
    let field = |text: &str, name: &str| -> u64 {
        let line = text.lines().find_map(|l| l.strip_prefix(name));
        line.and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {text}"))
    };
    assert!(
        field(&second, "tokens: ") >= field(&first, "tokens: "),
        "{first}{second}"
    );
    assert!(
        field(&second, "full_in_ms: ") <= field(&first, "full_in_ms: "),
        "{first}{second}"
    );
    assert!(first.contains("override: 3/s burst=3\n"), "{first}");
    assert!(first.contains("capacity: 3\n"), "{first}");
    assert!(
        first.contains("tokens: 1\n") || first.contains("tokens: 2\n"),
        "{first}"
    );
    assert!(ok(&url, &["inspect", "one", "vip"]).contains("tokens: unlimited\n"));

    assert_eq!(ok(&url, &["override", "clear", "one"]), "cleared one *\n");
    assert_eq!(
        ok(&url, &["override", "clear", "one"]),
        "no override of one *\n"
    );
    for instance in &fleet {
        until_policy(instance, "\"one\";q=50;").await;
    }
    assert_eq!(
        ok(&url, &["override", "clear", "one", "--key", "vip"]),
        "cleared one vip\n"
    );
    // The digest, as `flux limits` lists it, clears it as well.
    ok(&url, &["override", "set", "one", "off", "--key", "vip"]);
    assert_eq!(
        ok(&url, &["override", "clear", "one", "--key", &vip]),
        format!("cleared one {vip}\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_their_cause_and_exit_non_zero() {
    let redis = RedisServer::start();
    let url = redis.url();
    redis.cli(&["HSET", "flux:limits", "api", "10/s burst=10 cost=2"]);
    let cases: [(&str, &[&str], &str); 6] = [
        (
            url.as_str(),
            &["override", "set", "typo", "3/s"],
            "unknown limit \"typo\"",
        ),
        (
            url.as_str(),
            &["override", "set", "api", "fast"],
            "bad rate \"fast\"",
        ),
        (
            url.as_str(),
            &["override", "set", "api", "3/s", "--burst", "1"],
            "cost",
        ),
        (
            url.as_str(),
            &["override", "set", "api", "3/s", "--ttl", "5"],
            "no unit",
        ),
        (url.as_str(), &["inspect", "typo", "k"], "unknown limit"),
        ("redis://127.0.0.1:1/", &["limits"], "Redis unreachable"),
    ];
    for (target, args, says) in cases {
        let (success, stdout, stderr) = flux(target, args);
        assert!(!success, "flux {args:?} succeeded: {stdout}");
        assert!(stderr.contains(says), "flux {args:?}: {stderr}");
    }
    // --force sets an override for a limit no instance registered yet.
    ok(&url, &["override", "set", "later", "1/s", "--force"]);
    assert!(ok(&url, &["limits"]).contains("later\t*\t?\t?\t?\t1/s burst=1\n"));
    // With no instance running, the overrides still expire: 7 days after this set.
    let pttl: u64 = redis
        .cli(&["PTTL", "flux:overrides"])
        .parse()
        .expect("a time to live, not -1");
    let week = 7 * 24 * 3600 * 1000;
    assert!(pttl > week - 60_000 && pttl <= week, "{pttl}");
}

/// Runs `flux ARGS` against `url`, which must refuse them as the tool's own error: exit
/// status 1 and one `flux: ...` message on stderr. Returns that message.
fn refused(url: &str, args: &[&str]) -> String {
    let out = run(url, args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "flux {args:?}: {stderr}");
    assert!(stderr.starts_with("flux: "), "flux {args:?}: {stderr}");
    assert!(out.stdout.is_empty(), "flux {args:?} printed output");
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_input_is_refused_and_nothing_is_stored() {
    let redis = RedisServer::start();
    let url = redis.url();
    redis.cli(&["HSET", "flux:limits", "api", "10/s burst=10 cost=1"]);
    redis.cli(&["HSET", "flux:limits", "a@b", "10/s burst=10 cost=1"]);
    let cases: [(&[&str], &str); 7] = [
        // Once saturated into an override for good.
        (
            &["override", "set", "api", "3/s", "--ttl", "99999999999999d"],
            "longer than 365d",
        ),
        (
            &["override", "set", "api", "3/s", "--ttl", "366d"],
            "longer than 365d",
        ),
        (
            &[
                "override",
                "set",
                "api",
                "off",
                "--ttl",
                "18446744073709551616ms",
            ],
            "longer than 365d",
        ),
        // Stored as `a@b`, it would read back as the override of `a` for the key `b`.
        (&["override", "set", "a@b", "3/s"], "contains '@'"),
        (
            &["override", "set", "x@y", "off", "--force"],
            "contains '@'",
        ),
        (
            &["override", "set", "a@b", "off", "--key", "k"],
            "contains '@'",
        ),
        // It would remove the override of `a` for the key `b`.
        (&["override", "clear", "a@b"], "contains '@'"),
    ];
    for (args, says) in cases {
        let stderr = refused(&url, args);
        assert!(stderr.contains(says), "flux {args:?}: {stderr}");
    }
    assert_eq!(redis.cli(&["HLEN", "flux:overrides"]), "0");
    // The longest TTL there is still sets an override that ends.
    ok(&url, &["override", "set", "api", "3/s", "--ttl", "365d"]);
    let until = redis.cli(&["HGET", "flux:overrides", "api"]);
    let ms: u64 = until
        .split_once("until=")
        .and_then(|(_, ms)| ms.parse().ok())
        .unwrap_or_else(|| panic!("no expiry in {until:?}"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64;
    assert!(ms <= now + 365 * 86_400_000 && ms > now, "{until}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_stay_out_of_the_tools_errors() {
    for (url, secret) in [
        (
            "redis+unix:///nonexistent/redis.sock?pass=s3cr3t-pw",
            "s3cr3t-pw",
        ),
        ("redis://:s3cr3t/pw@127.0.0.1:1/", "s3cr3t"),
        ("redis://app:12/s3cr3t-pw@127.0.0.1:1/0", "s3cr3t-pw"),
    ] {
        let stderr = refused(url, &["limits"]);
        assert!(!stderr.contains(secret), "{url}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_override_of_an_ipv6_address_meets_its_64() {
    use flux::{Key, Limit, Rate};
    static BY_IP: Limit = Limit::new("by-ip", Rate::per_second::<100>());
    let redis = RedisServer::start();
    let url = redis.url();
    redis.cli(&["HSET", "flux:limits", "by-ip", "100/s burst=100 cost=1"]);
    // Requests of `key = "ip"` key 2001:db8::ffff by its /64, as `Key::from_ip` does.
    assert_eq!(
        ok(
            &url,
            &[
                "override",
                "set",
                "by-ip",
                "1/min",
                "--burst",
                "1",
                "--key",
                "2001:db8::1"
            ]
        ),
        "set by-ip 2001:db8::/64: 1/min burst=1\n"
    );
    let flux = redis.flux("flux");
    flux.sync_overrides().await.expect("overrides read");
    let neighbour = || Key::from_ip("2001:db8::ffff".parse().expect("an address"));
    let elsewhere = || Key::from_ip("2001:db8:0:1::1".parse().expect("an address"));
    assert!(flux.check(neighbour(), &BY_IP).await.allowed);
    assert!(!flux.check(neighbour(), &BY_IP).await.allowed);
    assert!(flux.check(elsewhere(), &BY_IP).await.allowed);
    assert!(flux.check(elsewhere(), &BY_IP).await.allowed);

    let inspected = ok(&url, &["inspect", "by-ip", "2001:db8::abcd"]);
    assert!(inspected.contains("key: 2001:db8::/64\n"), "{inspected}");
    assert!(
        inspected.contains("override: 1/min burst=1\n"),
        "{inspected}"
    );
    assert!(inspected.contains("tokens: 0\n"), "{inspected}");

    // Verbatim, for a header value that reads as an address.
    assert_eq!(
        ok(
            &url,
            &[
                "override",
                "set",
                "by-ip",
                "off",
                "--key",
                "2001:db8::1",
                "--raw-key"
            ]
        ),
        "set by-ip 2001:db8::1: off\n"
    );
    assert_eq!(
        ok(
            &url,
            &["override", "clear", "by-ip", "--key", "2001:db8::42"]
        ),
        "cleared by-ip 2001:db8::/64\n"
    );
}
