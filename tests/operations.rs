//! Operating Flux, over real TCP and a real Redis: the metrics match what clients saw, shadow
//! mode never denies, exemptions never reach Redis, and an outage shows in the fallback
//! counters, the breaker gauge and the health report, then clears; a demoted primary shows
//! in the reconnect counter.
//!
//! One Prometheus recorder serves the whole test binary (the `metrics` facade has one global
//! recorder), so each test uses limit names of its own and reads only its own series. One
//! test fills the process' cap on limit names built at run time
//! (`flux::limit::MAX_LIMIT_NAMES`): every other test here names its limits in the code.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Extension, Router};
use flux::config::BreakerConfig;
use flux::{FailurePolicy, Flux, rate_limit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use support::{Conn, RedisServer};

fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        PrometheusBuilder::new()
            .install_recorder()
            .expect("the only recorder of this test binary")
    })
}

#[rate_limit(rate = "2/min", burst = 2, key = "ip", name = "ops-limited")]
async fn limited() -> &'static str {
    "limited\n"
}

#[rate_limit(
    rate = "2/min",
    burst = 2,
    key = "ip",
    name = "ops-shadow",
    mode = "shadow"
)]
async fn shadow() -> &'static str {
    "shadow\n"
}

#[rate_limit(
    rate = "2/min",
    burst = 2,
    key = "ip",
    name = "ops-internal",
    exempt = is_internal(&headers)
)]
async fn internal(headers: HeaderMap) -> &'static str {
    "internal\n"
}

fn is_internal(headers: &HeaderMap) -> bool {
    headers
        .get("x-internal")
        .is_some_and(|value| value.as_bytes() == b"yes")
}

#[rate_limit(rate = "2/min", key = "ip", name = "ops-tight")]
#[rate_limit(rate = "10/min", key = "ip", name = "ops-loose")]
async fn stacked() -> &'static str {
    "stacked\n"
}

#[rate_limit(rate = "100/min", key = "global", name = "ops-outage")]
async fn outage() -> &'static str {
    "outage\n"
}

#[rate_limit(rate = "1/min", key = "header:x-api-key", name = "ops-exempt-ip")]
async fn keyed() -> &'static str {
    "keyed\n"
}

async fn healthz(Extension(flux): Extension<Flux>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let health = flux.health();
    let status = if health.ready { 200 } else { 503 };
    let status = axum::http::StatusCode::from_u16(status).expect("valid status");
    (status, axum::Json(health)).into_response()
}

/// Serves `app` (with `/metrics` and `/healthz` added, and `flux` in every request) on a free
/// loopback port.
async fn serve(app: Router, flux: Flux) -> SocketAddr {
    let handle = prometheus();
    let app = app
        .route("/metrics", get(move || async move { handle.render() }))
        .route("/healthz", get(healthz))
        .layer(Extension(flux));
    support::serve(app).await
}

async fn statuses(conn: &mut Conn, path: &str, headers: &[(&str, &[u8])], n: usize) -> Vec<u16> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(conn.get(path, headers).await.expect("answer").status);
    }
    out
}

/// One series of the Prometheus text: the metric's name and labels.
type Series = (String, BTreeMap<String, String>);

/// Parses Prometheus' text format into series and values.
fn parse_metrics(text: &str) -> Vec<(Series, f64)> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let value: f64 = value.parse().ok()?;
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split(',')
                .filter_map(|pair| pair.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
                .collect();
            Some(((name.to_owned(), labels), value))
        })
        .collect()
}

/// The sum of metric `name` over the series whose labels include all of `labels`.
fn sum(metrics: &[(Series, f64)], name: &str, labels: &[(&str, &str)]) -> f64 {
    metrics
        .iter()
        .filter(|((n, l), _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, v)| v)
        .sum()
}

async fn scrape(addr: SocketAddr) -> (String, Vec<(Series, f64)>) {
    let mut conn = Conn::open(addr).await.expect("connect");
    let reply = conn.get("/metrics", &[]).await.expect("metrics");
    assert_eq!(reply.status, 200);
    let parsed = parse_metrics(&reply.body);
    (reply.body, parsed)
}

fn decisions(metrics: &[(Series, f64)], limit: &str, outcome: &str) -> f64 {
    sum(
        metrics,
        "flux_decisions_total",
        &[("limit", limit), ("outcome", outcome)],
    )
}

fn count(statuses: &[u16], status: u16) -> f64 {
    statuses.iter().filter(|s| **s == status).count() as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_match_what_clients_saw() {
    let redis = RedisServer::start();
    let flux = Flux::builder()
        .redis(redis.url())
        .key_prefix("ops1")
        .build()
        .expect("valid configuration");
    let app = Router::new()
        .route("/limited", get(limited))
        .route("/shadow", get(shadow))
        .route("/internal", get(internal))
        .route("/stacked", get(stacked));
    let addr = serve(app, flux).await;
    let mut conn = Conn::open(addr).await.expect("connect");

    let limited = statuses(&mut conn, "/limited", &[], 5).await;
    assert_eq!(limited, [200, 200, 429, 429, 429]);

    // Shadow mode: decided and charged like the above, never denied, no header fields.
    let mut shadow = Vec::new();
    for _ in 0..5 {
        let reply = conn.get("/shadow", &[]).await.expect("answer");
        assert!(
            reply.header("ratelimit").is_none() && reply.header("ratelimit-policy").is_none(),
            "a shadow limit tells clients nothing"
        );
        shadow.push(reply.status);
    }
    assert_eq!(shadow, [200; 5]);

    let internal_yes = statuses(&mut conn, "/internal", &[("x-internal", b"yes")], 3).await;
    assert_eq!(internal_yes, [200; 3], "exempt requests are never limited");
    let internal_no = statuses(&mut conn, "/internal", &[], 3).await;
    assert_eq!(
        internal_no,
        [200, 200, 429],
        "exemption did not charge the bucket"
    );

    let stacked = statuses(&mut conn, "/stacked", &[], 4).await;
    assert_eq!(stacked, [200, 200, 429, 429]);

    let (text, m) = scrape(addr).await;
    assert_eq!(
        decisions(&m, "ops-limited", "allowed"),
        count(&limited, 200)
    );
    assert_eq!(decisions(&m, "ops-limited", "denied"), count(&limited, 429));
    assert_eq!(decisions(&m, "ops-shadow", "allowed"), 2.0);
    assert_eq!(decisions(&m, "ops-shadow", "shadow_denied"), 3.0);
    assert_eq!(decisions(&m, "ops-shadow", "denied"), 0.0);
    assert_eq!(decisions(&m, "ops-internal", "exempt"), 3.0);
    assert_eq!(
        sum(
            &m,
            "flux_decisions_total",
            &[
                ("limit", "ops-internal"),
                ("outcome", "exempt"),
                ("source", "none")
            ]
        ),
        3.0
    );
    assert_eq!(
        decisions(&m, "ops-internal", "allowed"),
        count(&internal_no, 200)
    );
    assert_eq!(
        decisions(&m, "ops-internal", "denied"),
        count(&internal_no, 429)
    );
    // A stacked check counts once per limit, each with the check's outcome.
    for limit in ["ops-tight", "ops-loose"] {
        assert_eq!(decisions(&m, limit, "allowed"), 2.0, "{limit}");
        assert_eq!(decisions(&m, limit, "denied"), 2.0, "{limit}");
    }
    // Admissions came from Redis; denials from Redis or from the deny cache, nothing else.
    assert_eq!(
        sum(
            &m,
            "flux_decisions_total",
            &[("limit", "ops-limited"), ("source", "redis")]
        ) + sum(
            &m,
            "flux_decisions_total",
            &[("limit", "ops-limited"), ("source", "deny_cache")]
        ),
        5.0
    );
    assert!(sum(&m, "flux_backend_duration_seconds_count", &[]) >= 2.0);
    // No label carries a client key.
    assert!(!text.contains("127.0.0.1"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exempt_addresses_never_reach_redis() {
    let redis = RedisServer::start();
    let flux = Flux::builder()
        .redis(redis.url())
        .key_prefix("ops2")
        .exempt_ips(["127.0.0.0/8"])
        .build()
        .expect("valid configuration");
    let addr = serve(Router::new().route("/keyed", get(keyed)), flux).await;
    let mut conn = Conn::open(addr).await.expect("connect");
    // No x-api-key either: an exempt request needs no key.
    let seen = statuses(&mut conn, "/keyed", &[], 4).await;
    assert_eq!(seen, [200; 4]);
    assert_eq!(redis.dbsize(), 0, "no bucket was written");
    assert_eq!(redis.command_calls("evalsha"), 0, "Redis was never asked");
    let (_, m) = scrape(addr).await;
    assert_eq!(decisions(&m, "ops-exempt-ip", "exempt"), 4.0);
    assert_eq!(decisions(&m, "ops-exempt-ip", "allowed"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_shows_in_counters_gauge_and_health_then_clears() {
    let mut redis = RedisServer::start();
    let flux = Flux::builder()
        .redis(redis.url())
        .key_prefix("ops3")
        .deadline(Duration::from_millis(50))
        .breaker(BreakerConfig::new(
            NonZeroU32::new(3).expect("nonzero"),
            Duration::from_millis(200),
        ))
        .failure_policy(FailurePolicy::Closed)
        .build()
        .expect("valid configuration");
    let addr = serve(Router::new().route("/outage", get(outage)), flux).await;
    let mut conn = Conn::open(addr).await.expect("connect");
    assert_eq!(conn.get("/outage", &[]).await.expect("answer").status, 200);
    let health = conn.get("/healthz", &[]).await.expect("health");
    assert_eq!(health.status, 200, "{}", health.body);
    let json: serde_json::Value = serde_json::from_str(&health.body).expect("JSON");
    assert_eq!(json["backend"], "redis");
    assert_eq!(json["failure_policy"], "closed");
    assert_eq!(json["ready"], true);

    redis.pause();
    let until = Instant::now() + Duration::from_secs(5);
    let mut refused = 0;
    while refused < 5 && Instant::now() < until {
        if conn.get("/outage", &[]).await.expect("answer").status == 503 {
            refused += 1;
        }
    }
    assert_eq!(refused, 5, "the closed policy refuses during the outage");
    let (_, m) = scrape(addr).await;
    assert!(
        sum(
            &m,
            "flux_decisions_total",
            &[("limit", "ops-outage"), ("source", "fallback_closed")]
        ) >= 5.0
    );
    assert_eq!(sum(&m, "flux_breaker_open", &[("circuit", "redis")]), 1.0);
    assert!(sum(&m, "flux_backend_errors_total", &[("kind", "timeout")]) >= 1.0);
    let health = conn.get("/healthz", &[]).await.expect("health");
    assert_eq!(health.status, 503, "{}", health.body);
    let json: serde_json::Value = serde_json::from_str(&health.body).expect("JSON");
    assert_eq!(json["ready"], false);
    assert_eq!(json["degraded"], true);
    assert_eq!(json["open_circuits"][0]["circuit"], "redis");
    assert!(
        json["last_error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("deadline")),
        "{json}"
    );

    redis.resume();
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        if conn.get("/outage", &[]).await.expect("answer").status == 200 {
            break;
        }
        assert!(Instant::now() < until, "limiting through Redis resumes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, m) = scrape(addr).await;
    assert_eq!(sum(&m, "flux_breaker_open", &[("circuit", "redis")]), 0.0);
    let health = conn.get("/healthz", &[]).await.expect("health");
    assert_eq!(health.status, 200, "{}", health.body);
}

/// 10,000 distinct limit names built at run time (as `limit = EXPR` or a per-tenant
/// `Limit::named(format!(..))` make them): each is still limited on its own, but only the
/// first `MAX_LIMIT_NAMES` are registered in Redis and shown in the `limit` label; the rest
/// are counted under `limit="_other"`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_limit_names_are_capped_and_each_still_limited() {
    use flux::limit::MAX_LIMIT_NAMES;
    use flux::{Limit, Rate};

    const NAMES: usize = 10_000;
    const TASKS: usize = 16;
    let redis = RedisServer::start();
    let flux = redis.flux("ops-names");
    let handle = prometheus();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..TASKS {
        let flux = flux.clone();
        tasks.spawn(async move {
            let mut wrong = Vec::new();
            for n in (t..NAMES).step_by(TASKS) {
                let limit = Limit::named(format!("ops-tenant-{n}"), Rate::per_minute::<1>());
                let first = flux.check("k", &limit).await;
                let second = flux.check("k", &limit).await;
                if !first.allowed || second.allowed {
                    wrong.push(n);
                }
            }
            wrong
        });
    }
    while let Some(wrong) = tasks.join_next().await {
        let wrong = wrong.expect("task");
        assert!(wrong.is_empty(), "not limited on its own: {wrong:?}");
    }

    // The registry in Redis: the first MAX_LIMIT_NAMES names, no more.
    let hlen = || -> usize {
        redis
            .cli(&["HLEN", "ops-names:limits"])
            .parse()
            .expect("HLEN is a number")
    };
    let start = Instant::now();
    while hlen() < MAX_LIMIT_NAMES {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{} registered",
            hlen()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(hlen(), MAX_LIMIT_NAMES);

    // The `limit` label: as many names, and `_other` for all the others.
    let metrics = parse_metrics(&handle.render());
    let shown: std::collections::BTreeSet<&str> = metrics
        .iter()
        .filter(|((name, _), _)| name == "flux_decisions_total")
        .filter_map(|((_, labels), _)| labels.get("limit"))
        .map(String::as_str)
        .filter(|l| l.starts_with("ops-tenant-"))
        .collect();
    assert_eq!(shown.len(), MAX_LIMIT_NAMES);
    let others = (NAMES - MAX_LIMIT_NAMES) as f64;
    assert_eq!(decisions(&metrics, "_other", "allowed"), others);
    assert_eq!(decisions(&metrics, "_other", "denied"), others);
    println!(
        "{NAMES} runtime names: {} registered, {} label values, {others} checks of each outcome \
         counted as _other",
        hlen(),
        shown.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_keys_stay_under_the_memory_cap_and_evictions_are_counted() {
    static DAILY: flux::Limit = flux::Limit::new("ops-daily", flux::Rate::per_day::<10>());
    let handle = prometheus();
    let flux = Flux::builder()
        .memory_max_buckets(flux::config::MIN_MEMORY_MAX_BUCKETS)
        .build()
        .expect("valid configuration");
    // A client per request (rotating addresses): against a per-day limit, no bucket is full
    // again before the flood ends, so only the cap keeps the table small.
    for i in 0..3_000u32 {
        let ip = std::net::Ipv6Addr::new(0x2001, 0xdb8, (i >> 16) as u16, i as u16, 0, 0, 0, 1);
        assert!(
            flux.check(flux::Key::from_ip(ip.into()), &DAILY)
                .await
                .allowed
        );
    }
    assert!(flux.local_buckets() <= flux::config::MIN_MEMORY_MAX_BUCKETS);
    let evicted = flux.local_evictions();
    assert!(evicted as usize >= 3_000 - flux::config::MIN_MEMORY_MAX_BUCKETS);
    let metrics = parse_metrics(&handle.render());
    assert!(
        sum(&metrics, "flux_memory_evictions_total", &[]) >= evicted as f64,
        "every eviction is counted: {evicted} evicted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demoted_primary_shows_as_a_reconnect() {
    static DEMOTED: flux::Limit = flux::Limit::new("ops-demoted", flux::Rate::per_second::<100>());
    let metrics = prometheus();
    let primary = RedisServer::start();
    let replica_of = RedisServer::start();
    let flux = Flux::builder()
        .redis(primary.url())
        .key_prefix("ops-demoted")
        .failure_policy(FailurePolicy::Closed)
        .build()
        .expect("valid configuration");
    assert!(flux.check("a", &DEMOTED).await.allowed);
    primary.cli(&["REPLICAOF", "127.0.0.1", &replica_of.port().to_string()]);
    let readonly = || {
        sum(
            &parse_metrics(&metrics.render()),
            "flux_redis_reconnects_total",
            &[("reason", "readonly")],
        )
    };
    let until = Instant::now() + Duration::from_secs(5);
    while readonly() < 1.0 && Instant::now() < until {
        let _ = flux.check("a", &DEMOTED).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(readonly() >= 1.0, "{}", metrics.render());
}
