//! An outage is logged once and the recovery once, not once per request; a flood of requests
//! that no bucket can admit is one WARN per limit per 10 s, not one per request. Its own test binary:
//! tracing caches per-callsite interest process-wide, so a capturing subscriber must not share
//! the process with tests that log nowhere.

mod support;

use std::io::Write;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flux::config::BreakerConfig;
use flux::decision::Source;
use flux::{FailurePolicy, Flux, Limit, Rate};
use support::RedisServer;

static LIMIT: Limit = Limit::new("api", Rate::per_minute::<3>());

/// Captured log output of one limiter's life.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs `work` on a current-thread runtime under a subscriber that records events up to
/// `level`; returns what it logged.
fn logged<F: std::future::Future<Output = ()>>(
    level: tracing::Level,
    work: impl FnOnce() -> F,
) -> String {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(level)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(work());
    });
    let log = captured.0.lock().expect("log").clone();
    String::from_utf8(log).expect("utf-8 log")
}

#[test]
fn an_outage_is_logged_once_not_per_request() {
    let mut server = RedisServer::start();
    let log = logged(tracing::Level::INFO, || async {
        let flux = Flux::builder()
            .redis(server.url())
            .deadline(Duration::from_millis(50))
            .breaker(BreakerConfig::new(
                NonZeroU32::new(3).expect("nonzero"),
                Duration::from_millis(200),
            ))
            .failure_policy(FailurePolicy::Open)
            .build()
            .expect("valid configuration");
        assert_eq!(flux.check("l", &LIMIT).await.source, Source::Backend);
        server.kill();
        let until = Instant::now() + Duration::from_millis(700);
        let mut requests = 0;
        while Instant::now() < until {
            flux.check("l", &LIMIT).await;
            requests += 1;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(requests > 100, "{requests}");
        server.restart();
        let restarted = Instant::now();
        while flux.check("l", &LIMIT).await.source != Source::Backend {
            assert!(
                restarted.elapsed() < Duration::from_secs(5),
                "limiting did not resume"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    assert_eq!(log.matches("Redis unavailable").count(), 1, "log:\n{log}");
    assert_eq!(log.matches("reachable again").count(), 1, "log:\n{log}");
}

#[test]
fn each_denial_is_one_debug_event_with_a_digest_of_the_key() {
    let client = "user-4242@example.test";
    let log = logged(tracing::Level::DEBUG, || async {
        let flux = Flux::builder().build().expect("valid configuration");
        for _ in 0..5 {
            flux.check(client, &LIMIT).await;
        }
    });
    let denials: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("rate limit denied a request"))
        .collect();
    assert_eq!(denials.len(), 2, "3 admitted, 2 denied; log:\n{log}");
    for line in &denials {
        assert!(line.contains("DEBUG"), "{line}");
        assert!(
            line.contains("limit=\"api\"") || line.contains("limit=api"),
            "{line}"
        );
        assert!(
            line.contains("cost=1") && line.contains("retry_after_ms="),
            "{line}"
        );
        assert!(
            !line.contains("user-4242"),
            "the raw key never reaches the log: {line}"
        );
    }
    // The same key gives the same digest, so one client's denials can be followed.
    let digest = |line: &str| {
        line.split("key=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_owned)
    };
    assert_eq!(digest(denials[0]), digest(denials[1]));
    assert_eq!(digest(denials[0]).map(|d| d.len()), Some(12));
}

#[derive(serde::Deserialize)]
struct Items {
    items: u64,
}

/// 10 tokens a minute; each request takes `?items=N` of them.
#[flux::rate_limit(rate = "10/min", key = "global", cost = q.items, name = "flood-items")]
async fn items(axum::extract::Query(q): axum::extract::Query<Items>) -> &'static str {
    let _ = q.items;
    "ok\n"
}

/// Status of `GET /items?items=N` on `app`.
async fn get_items(app: &axum::Router, n: u64) -> u16 {
    use tower::ServiceExt;
    let request = axum::http::Request::get(format!("/items?items={n}"))
        .body(axum::body::Body::empty())
        .expect("a request");
    let response = app.clone().oneshot(request).await.expect("infallible");
    response.status().as_u16()
}

#[test]
fn a_flood_of_unadmissible_costs_is_one_warn_per_interval_with_a_count() {
    const FLOOD: u64 = 10_000;
    let log = logged(tracing::Level::DEBUG, || async {
        let flux = Flux::builder().build().expect("valid configuration");
        let app = axum::Router::new()
            .route("/items", axum::routing::get(items))
            .layer(axum::Extension(flux));
        // Costs the client chose, each above the burst of 10: none can ever be admitted.
        for n in 0..FLOOD {
            assert_eq!(get_items(&app, 11 + n).await, 429);
        }
        // One interval later, the next one is logged with the count of those held back.
        tokio::time::sleep(Duration::from_millis(10_200)).await;
        assert_eq!(get_items(&app, 12).await, 429);
        assert_eq!(get_items(&app, 1).await, 200);
    });
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("request refused"))
        .collect();
    let warns: Vec<&str> = refused
        .iter()
        .copied()
        .filter(|l| l.contains("WARN"))
        .collect();
    assert_eq!(
        warns.len(),
        2,
        "one WARN, then one after 10 s: {:?}",
        &warns[..warns.len().min(5)]
    );
    assert!(warns[0].contains("suppressed=0"), "{}", warns[0]);
    assert!(
        warns[1].contains(&format!("suppressed={}", FLOOD - 1)),
        "{}",
        warns[1]
    );
    assert!(warns.iter().all(|l| l.contains("flood-items")), "{warns:?}");
    // The others are DEBUG events: still there for whoever asks for them.
    let debug = refused.iter().filter(|l| l.contains("DEBUG")).count();
    assert_eq!(debug as u64, FLOOD - 1);
}
