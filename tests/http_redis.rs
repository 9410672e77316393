//! `#[rate_limit]` handlers served over real TCP, limited through a real Redis: status codes,
//! header fields, per-client isolation (distinct loopback source addresses, distinct API keys),
//! stacked limits, and each `on_error` override while Redis is down, then back.
//!
//! The limiter is process-wide, so this binary holds one test that installs it once, pointed
//! at its own redis-server, and walks through the scenarios in order.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use flux::config::BreakerConfig;
use flux::{FailurePolicy, Flux, rate_limit};
use support::RedisServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

#[rate_limit(rate = "1/min", burst = 3, key = "ip", name = "http-burst")]
async fn burst() -> &'static str {
    "burst\n"
}

#[rate_limit(rate = "2/min", key = "header:x-api-key", name = "http-api")]
async fn api() -> String {
    "api\n".to_owned()
}

#[rate_limit(rate = "2/min", key = "ip", name = "http-tight")]
#[rate_limit(rate = "10/min", key = "ip", name = "http-loose")]
async fn stacked() -> &'static str {
    "stacked\n"
}

#[rate_limit(rate = "10/min", key = "ip", name = "http-loose")]
async fn loose_only() -> &'static str {
    "loose\n"
}

#[rate_limit(
    rate = "1/min",
    burst = 2,
    key = "ip",
    name = "http-closed",
    on_error = "closed"
)]
async fn closed() -> &'static str {
    "closed\n"
}

#[rate_limit(
    rate = "1/min",
    burst = 2,
    key = "ip",
    name = "http-open",
    on_error = "open"
)]
async fn open() -> &'static str {
    "open\n"
}

/// No override: the limiter's `Local` policy applies.
#[rate_limit(rate = "1/min", burst = 2, key = "ip", name = "http-local")]
async fn local() -> &'static str {
    "local\n"
}

/// Generic over the router's state.
#[rate_limit(rate = "1/min", burst = 2, key = "global", name = "http-generic")]
async fn generic<S>(State(state): State<S>) -> String
where
    S: std::fmt::Display + Clone + Send + Sync + 'static,
{
    format!("state {state}\n")
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request from source address `from` (any 127.x.y.z works on Linux loopback).
async fn get_from(
    server: SocketAddr,
    from: [u8; 4],
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(from)), 0))
        .expect("bind a loopback source address");
    let mut stream = socket.connect(server).await.expect("connect");
    let mut request = format!("GET {path} HTTP/1.1\r\nhost: flux\r\nconnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete response");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_owned(),
    }
}

async fn statuses(server: SocketAddr, from: [u8; 4], path: &str, n: usize) -> Vec<u16> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(get_from(server, from, path, &[]).await.status);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_limit_through_redis_and_honour_failure_policies() {
    let mut redis = RedisServer::start();
    let flux = Flux::builder()
        .redis(redis.url())
        .key_prefix("http")
        .deadline(Duration::from_millis(200))
        .breaker(BreakerConfig::new(
            NonZeroU32::new(3).expect("nonzero"),
            Duration::from_millis(200),
        ))
        .failure_policy(FailurePolicy::Local)
        // The application's own denial body; Flux adds Retry-After and the RateLimit fields.
        .deny_response(|decision| {
            let status = if decision.source == flux::decision::Source::FailClosed {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::TOO_MANY_REQUESTS
            };
            let body = format!(
                "{{\"error\":\"slow down\",\"retry_ms\":{}}}",
                decision.retry_after.as_millis()
            );
            (status, [("content-type", "application/json")], body).into_response()
        })
        .install()
        .expect("the first and only install in this process");
    let app = Router::new()
        .route("/burst", get(burst))
        .route("/api", get(api))
        .route("/stacked", get(stacked))
        .route("/loose", get(loose_only))
        .route("/closed", get(closed))
        .route("/open", get(open))
        .route("/local", get(local))
        .route("/generic", get(generic::<String>))
        .with_state("s".to_owned());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .expect("serve");
    });

    // Burst 3, then 429 with Retry-After and the RateLimit fields.
    let a = [127, 0, 0, 2];
    let b = [127, 0, 0, 3];
    let first = get_from(addr, a, "/burst", &[]).await;
    assert_eq!(first.status, 200);
    assert_eq!(
        first.header("ratelimit-policy"),
        Some("\"http-burst\";q=3;w=180")
    );
    assert_eq!(first.header("ratelimit"), Some("\"http-burst\";r=2;t=60"));
    assert_eq!(statuses(addr, a, "/burst", 2).await, [200, 200]);
    let denied = get_from(addr, a, "/burst", &[]).await;
    assert_eq!(denied.status, 429);
    let retry: u64 = denied
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in whole seconds");
    assert!((59..=60).contains(&retry), "one token per 60 s: {retry}");
    assert_eq!(denied.header("ratelimit"), Some("\"http-burst\";r=0;t=180"));
    // The configured deny response, with Flux's fields added.
    assert_eq!(denied.header("content-type"), Some("application/json"));
    assert!(
        denied
            .body
            .starts_with("{\"error\":\"slow down\",\"retry_ms\":"),
        "{}",
        denied.body
    );
    // Another address has its own bucket, and the bucket lives in Redis.
    assert_eq!(statuses(addr, b, "/burst", 4).await, [200, 200, 200, 429]);
    let keys = redis.cli(&["--raw", "KEYS", "http:*:http-burst"]);
    let mut keys: Vec<&str> = keys.lines().collect();
    keys.sort_unstable();
    let mut expected = [
        redis.bucket("http", "127.0.0.2", "http-burst"),
        redis.bucket("http", "127.0.0.3", "http-burst"),
    ];
    expected.sort_unstable();
    assert_eq!(keys, expected);

    // Header keys: per API key, and a missing key is a 400, not a shared bucket.
    let with_key = |k: &'static str| async move {
        get_from(addr, a, "/api", &[("x-api-key", k)]).await.status
    };
    assert_eq!(
        [
            with_key("k1").await,
            with_key("k1").await,
            with_key("k1").await
        ],
        [200, 200, 429]
    );
    assert_eq!(with_key("k2").await, 200);
    assert_eq!(get_from(addr, a, "/api", &[]).await.status, 400);

    // Stacked: the tight limit denies, and the loose one (shared by name with /loose) is not
    // charged by denials: 2 admitted of 5 leave 8 tokens.
    assert_eq!(
        statuses(addr, b, "/stacked", 5).await,
        [200, 200, 429, 429, 429]
    );
    let loose = get_from(addr, b, "/loose", &[]).await;
    assert_eq!(loose.status, 200);
    assert_eq!(loose.header("ratelimit"), Some("\"http-loose\";r=7;t=18"));

    // A generic handler over state.
    assert_eq!(statuses(addr, a, "/generic", 3).await, [200, 200, 429]);

    // Redis goes away: each handler's policy applies, and no request waits long.
    redis.kill();
    let c = [127, 0, 0, 4];
    let started = Instant::now();
    assert_eq!(statuses(addr, c, "/closed", 3).await, [503, 503, 503]);
    let refused = get_from(addr, c, "/closed", &[]).await;
    assert_eq!(refused.status, 503);
    assert_eq!(
        refused.header("content-type"),
        Some("application/json"),
        "the override answers 503s too"
    );
    let open_reply = get_from(addr, c, "/open", &[]).await;
    assert_eq!(open_reply.status, 200);
    assert_eq!(
        open_reply.header("ratelimit"),
        None,
        "fail-open knows no bucket state"
    );
    assert_eq!(statuses(addr, c, "/open", 3).await, [200, 200, 200]);
    assert_eq!(
        statuses(addr, c, "/local", 3).await,
        [200, 200, 429],
        "per-process buckets"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?} for 12 requests",
        started.elapsed()
    );
    assert!(flux.is_degraded());

    // Redis is back (empty): limiting through Redis resumes.
    redis.restart();
    let resumed = Instant::now();
    loop {
        let reply = get_from(addr, [127, 0, 0, 5], "/closed", &[]).await;
        if reply.status == 200 {
            break;
        }
        assert_eq!(reply.status, 503);
        assert!(resumed.elapsed() < Duration::from_secs(5), "no recovery");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("limiting resumed {:?} after the restart", resumed.elapsed());
    assert_eq!(
        statuses(addr, [127, 0, 0, 5], "/closed", 2).await,
        [200, 429]
    );
    let bucket = redis.bucket("http", "127.0.0.5", "http-closed");
    assert_eq!(redis.cli(&["EXISTS", &bucket]), "1");
    server.abort();
}
