//! What `#[rate_limit]` expands to, exercised: axum routers driven with
//! `tower::ServiceExt::oneshot`, and plain async fns, on the in-memory backend (no Redis).
//!
//! Every handler here has its own name (so its own buckets): the tests share one process-wide
//! limiter and run in parallel.

use std::fmt::Display;
use std::net::SocketAddr;
use std::num::ParseIntError;
use std::sync::Once;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use flux::{RateLimited, rate_limit};
use serde::Serialize;
use tower::ServiceExt;

/// Installs the in-memory limiter, whatever `FLUX_REDIS_URL` says.
fn setup() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| match flux::Flux::builder().memory().install() {
        Ok(_) | Err(flux::Error::AlreadyInstalled) => {}
        Err(e) => panic!("cannot install the in-memory limiter: {e}"),
    });
}

/// One request through `app`, from `ip` (as `ConnectInfo`) if given, with `headers`.
async fn call(app: &Router, uri: &str, ip: Option<[u8; 4]>, headers: &[(&str, &str)]) -> Response {
    let mut request = Request::get(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut request = request.body(Body::empty()).expect("valid request");
    if let Some(ip) = ip {
        request
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::from((ip, 40_000))));
    }
    app.clone().oneshot(request).await.expect("infallible")
}

fn header(response: &Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().expect("ASCII header").to_owned())
}

/// The `r` (remaining) parameter of the `RateLimit` field.
fn remaining(response: &Response) -> u32 {
    let field = header(response, "ratelimit").expect("a RateLimit field");
    field
        .split(';')
        .find_map(|p| p.strip_prefix("r="))
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("no r= in {field:?}"))
}

async fn body_text(response: Response) -> String {
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("readable body");
    String::from_utf8(bytes.to_vec()).expect("UTF-8 body")
}

const A: Option<[u8; 4]> = Some([192, 0, 2, 1]);
const B: Option<[u8; 4]> = Some([192, 0, 2, 2]);

// ---------------------------------------------------------------- key = "ip" (the default)

/// Three at once per address, then one every 20 s.
#[rate_limit(rate = "3/min")]
async fn by_ip() -> &'static str {
    "ok"
}

#[tokio::test]
async fn ip_key_admits_the_burst_then_answers_429_with_headers() {
    setup();
    let app = Router::new().route("/", get(by_ip));
    for left in [2, 1, 0] {
        let response = call(&app, "/", A, &[]).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(remaining(&response), left);
        assert_eq!(
            header(&response, "ratelimit-policy").as_deref(),
            Some("\"by_ip\";q=3;w=60")
        );
        assert_eq!(header(&response, "retry-after"), None);
        assert_eq!(body_text(response).await, "ok");
    }
    let denied = call(&app, "/", A, &[]).await;
    assert_eq!(denied.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = header(&denied, "retry-after")
        .expect("Retry-After on a 429")
        .parse()
        .expect("whole seconds");
    assert!((19..=20).contains(&retry), "retry-after {retry}");
    assert_eq!(remaining(&denied), 0);
    assert!(header(&denied, "ratelimit-policy").is_some());

    // Another address has its own bucket.
    let other = call(&app, "/", B, &[]).await;
    assert_eq!(other.status(), StatusCode::OK);
    assert_eq!(remaining(&other), 2);
}

#[rate_limit(rate = "3/min", key = "ip")]
async fn needs_connect_info() -> &'static str {
    "ok"
}

#[tokio::test]
async fn ip_key_without_connect_info_is_a_500_not_a_shared_bucket() {
    setup();
    let app = Router::new().route("/", get(needs_connect_info));
    for _ in 0..5 {
        let response = call(&app, "/", None, &[]).await;
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(body_text(response).await.contains("connect_info"));
    }
}

// ---------------------------------------------------------------- key = "header:NAME"

/// The literal's name is lowercased at compile time.
#[rate_limit(rate = "2/min", key = "header:X-Api-Key")]
async fn by_api_key() -> &'static str {
    "ok"
}

#[tokio::test]
async fn header_key_isolates_clients_and_requires_the_header() {
    setup();
    let app = Router::new().route("/", get(by_api_key));
    for _ in 0..2 {
        let ok = call(&app, "/", A, &[("x-api-key", "alice")]).await;
        assert_eq!(ok.status(), StatusCode::OK);
    }
    let denied = call(&app, "/", A, &[("x-api-key", "alice")]).await;
    assert_eq!(denied.status(), StatusCode::TOO_MANY_REQUESTS);
    // Same address, other key: another bucket.
    let bob = call(&app, "/", A, &[("X-API-KEY", "bob")]).await;
    assert_eq!(bob.status(), StatusCode::OK);
    assert_eq!(remaining(&bob), 1);

    let missing = call(&app, "/", A, &[]).await;
    assert_eq!(missing.status(), StatusCode::BAD_REQUEST);
    assert!(body_text(missing).await.contains("x-api-key"));
}

/// Names of exactly 32 bytes still travel in the extractor's type; longer ones are read from
/// a copy of the headers. Both behave the same.
#[rate_limit(rate = "1/min", key = "header:x-thirty-two-bytes-long-name-012")]
async fn by_32_byte_header() -> &'static str {
    "ok"
}

#[rate_limit(
    rate = "1/min",
    key = "header:x-a-header-name-longer-than-thirty-two-bytes"
)]
async fn by_long_header() -> &'static str {
    "ok"
}

#[tokio::test]
async fn header_names_of_any_length_key_the_bucket() {
    setup();
    assert_eq!("x-thirty-two-bytes-long-name-012".len(), 32);
    for (path, name) in [
        ("/32", "x-thirty-two-bytes-long-name-012"),
        ("/long", "x-a-header-name-longer-than-thirty-two-bytes"),
    ] {
        let app = Router::new()
            .route("/32", get(by_32_byte_header))
            .route("/long", get(by_long_header));
        assert_eq!(
            call(&app, path, A, &[(name, "k1")]).await.status(),
            StatusCode::OK
        );
        assert_eq!(
            call(&app, path, A, &[(name, "k1")]).await.status(),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            call(&app, path, A, &[(name, "k2")]).await.status(),
            StatusCode::OK,
            "{name}"
        );
        let missing = call(&app, path, A, &[]).await;
        assert_eq!(missing.status(), StatusCode::BAD_REQUEST);
        assert!(body_text(missing).await.contains(name), "{name}");
    }
}

// ---------------------------------------------------------------- key = EXPRESSION

/// The key borrows `tenant`, which the body then moves.
#[rate_limit(rate = "2/min", key = tenant)]
async fn by_tenant(Path(tenant): Path<String>) -> String {
    tenant
}

#[tokio::test]
async fn expression_key_is_evaluated_before_the_body() {
    setup();
    let app = Router::new().route("/t/{tenant}", get(by_tenant));
    for _ in 0..2 {
        let ok = call(&app, "/t/acme", None, &[]).await;
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(body_text(ok).await, "acme");
    }
    let denied = call(&app, "/t/acme", None, &[]).await;
    assert_eq!(denied.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        call(&app, "/t/globex", None, &[]).await.status(),
        StatusCode::OK
    );
}

// ---------------------------------------------------------------- cost, name, on_error

#[rate_limit(
    rate = "10/min",
    cost = 5,
    key = "global",
    name = "expansion-cost",
    on_error = "closed"
)]
async fn expensive() -> impl IntoResponse {
    (StatusCode::CREATED, "made")
}

#[tokio::test]
async fn cost_name_and_impl_into_response() {
    setup();
    let app = Router::new().route("/", get(expensive));
    for left in [5, 0] {
        let ok = call(&app, "/", None, &[]).await;
        assert_eq!(ok.status(), StatusCode::CREATED);
        assert_eq!(remaining(&ok), left);
        assert_eq!(
            header(&ok, "ratelimit-policy").as_deref(),
            Some("\"expansion-cost\";q=10;w=60")
        );
    }
    let denied = call(&app, "/", None, &[]).await;
    assert_eq!(denied.status(), StatusCode::TOO_MANY_REQUESTS);
    // Five tokens at one per 6 s: 30 s.
    let retry: u64 = header(&denied, "retry-after")
        .and_then(|r| r.parse().ok())
        .expect("Retry-After");
    assert!((29..=30).contains(&retry), "retry-after {retry}");
}

// ---------------------------------------------------------------- stacked limits

/// The tight limit shares its bucket with `loose_alone` (same name).
#[rate_limit(rate = "2/min", key = "ip", name = "expansion-tight")]
#[rate_limit(rate = "10/min", key = "ip", name = "expansion-loose")]
async fn stacked() -> &'static str {
    "ok"
}

#[rate_limit(rate = "10/min", name = "expansion-loose")]
async fn loose_alone() -> &'static str {
    "ok"
}

#[tokio::test]
async fn stacked_limits_are_one_all_or_nothing_check() {
    setup();
    let app = Router::new()
        .route("/stacked", get(stacked))
        .route("/loose", get(loose_alone));
    for left in [1, 0] {
        let ok = call(&app, "/stacked", A, &[]).await;
        assert_eq!(ok.status(), StatusCode::OK);
        // The deciding limit is the one with the fewest tokens left: the tight one.
        assert_eq!(remaining(&ok), left);
        assert!(
            header(&ok, "ratelimit").is_some_and(|f| f.starts_with("\"expansion-tight\"")),
            "{:?}",
            header(&ok, "ratelimit")
        );
    }
    for _ in 0..3 {
        let denied = call(&app, "/stacked", A, &[]).await;
        assert_eq!(denied.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(header(&denied, "ratelimit").is_some_and(|f| f.starts_with("\"expansion-tight\"")));
    }
    // The loose bucket was charged by the 2 admitted requests only, not by the 3 denied ones.
    let loose = call(&app, "/loose", A, &[]).await;
    assert_eq!(loose.status(), StatusCode::OK);
    assert_eq!(remaining(&loose), 10 - 2 - 1);
}

/// Unnamed stacked limits get `#1`, `#2`: two buckets, not one charged twice.
#[flux::rate_limit(rate = "3/min", key = "global")]
#[flux::rate_limit(rate = "5/min")]
async fn stacked_unnamed() -> &'static str {
    "ok"
}

#[tokio::test]
async fn unnamed_stacked_limits_get_their_own_buckets() {
    setup();
    let app = Router::new().route("/", get(stacked_unnamed));
    let first = call(&app, "/", None, &[]).await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(remaining(&first), 2);
    assert!(header(&first, "ratelimit").is_some_and(|f| f.starts_with("\"stacked_unnamed#1\"")));
    for _ in 0..2 {
        assert_eq!(call(&app, "/", None, &[]).await.status(), StatusCode::OK);
    }
    assert_eq!(
        call(&app, "/", None, &[]).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

// ---------------------------------------------------------------- Result handlers and `?`

#[derive(Serialize)]
struct Doubled {
    value: u64,
}

struct AppError(String);

impl From<ParseIntError> for AppError {
    fn from(e: ParseIntError) -> Self {
        AppError(e.to_string())
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        (StatusCode::UNPROCESSABLE_ENTITY, self.0).into_response()
    }
}

/// `?` still converts into `AppError`: the body's output type is pinned to the declared one.
#[rate_limit(rate = "3/min", key = "global")]
async fn double(Path(raw): Path<String>) -> Result<Json<Doubled>, AppError> {
    let n: u64 = raw.parse()?;
    if n == 0 {
        return Err(AppError("zero".to_owned()));
    }
    Ok(Json(Doubled { value: n * 2 }))
}

#[tokio::test]
async fn result_handler_with_question_mark() {
    setup();
    let app = Router::new().route("/double/{raw}", get(double));
    let ok = call(&app, "/double/21", None, &[]).await;
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(remaining(&ok), 2);
    assert_eq!(body_text(ok).await, r#"{"value":42}"#);

    let bad = call(&app, "/double/abc", None, &[]).await;
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // Error responses carry the fields too (the request was admitted and charged).
    assert_eq!(remaining(&bad), 1);

    let zero = call(&app, "/double/0", None, &[]).await;
    assert_eq!(zero.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body_text(zero).await, "zero");

    assert_eq!(
        call(&app, "/double/1", None, &[]).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

// ---------------------------------------------------------------- generic handler with state

/// Generic over the state, with a where-clause; the limit is shared by everybody.
#[rate_limit(rate = "1/min", key = "global")]
async fn greet<S>(State(state): State<S>) -> String
where
    S: Display + Clone + Send + Sync + 'static,
{
    format!("hello from {state}")
}

#[tokio::test]
async fn generic_handler_with_state() {
    setup();
    let app = Router::new()
        .route("/", get(greet::<&'static str>))
        .with_state("flux");
    let ok = call(&app, "/", None, &[]).await;
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(body_text(ok).await, "hello from flux");
    assert_eq!(
        call(&app, "/", None, &[]).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

// ---------------------------------------------------------------- deny = "error"

#[derive(Debug)]
enum MyError {
    Limited(Duration),
    Parse(ParseIntError),
}

impl From<RateLimited> for MyError {
    fn from(e: RateLimited) -> Self {
        MyError::Limited(e.retry_after())
    }
}

impl From<ParseIntError> for MyError {
    fn from(e: ParseIntError) -> Self {
        MyError::Parse(e)
    }
}

/// `return` and `?` in the body work as before; the check runs first.
#[rate_limit(rate = "3/min", key = tenant, deny = "error")]
async fn lookup(tenant: &str, raw: &str) -> Result<u64, MyError> {
    if raw.is_empty() {
        return Ok(0);
    }
    let n: u64 = raw.parse()?;
    Ok(n + tenant.len() as u64)
}

#[tokio::test]
async fn plain_fn_is_denied_with_err_after_n_calls() {
    setup();
    assert_eq!(lookup("acme", "1").await.ok(), Some(5));
    assert_eq!(lookup("acme", "").await.ok(), Some(0));
    assert!(
        matches!(lookup("acme", "x").await, Err(MyError::Parse(e)) if e.to_string().contains("invalid digit"))
    );
    match lookup("acme", "1").await {
        Err(MyError::Limited(wait)) => {
            assert!(
                wait > Duration::from_secs(15) && wait <= Duration::from_secs(20),
                "{wait:?}"
            )
        }
        other => panic!("expected a denial, got {other:?}"),
    }
    // Per key: another tenant is unaffected.
    assert_eq!(lookup("globex", "1").await.ok(), Some(7));
}

/// A global plain limit, returning a boxed error (`From<RateLimited>` via `Error`).
#[rate_limit(rate = "1/min", key = "global", deny = "error")]
async fn ping() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    Ok(())
}

#[tokio::test]
async fn plain_fn_with_global_key_and_boxed_error() {
    setup();
    assert!(ping().await.is_ok());
    let denied = ping().await.expect_err("second call denied");
    assert!(
        denied.to_string().contains("rate limit exceeded"),
        "{denied}"
    );
    assert!(denied.downcast_ref::<RateLimited>().is_some());
}

// ---------------------------------------------------------------- generics and &self

struct Client<T> {
    tenant: String,
    tag: T,
}

impl<T: Display + Sync> Client<T> {
    /// Keyed by a field of the receiver, generic in an argument.
    #[rate_limit(rate = "2/min", key = self.tenant, deny = "error")]
    async fn call<U>(&self, extra: U) -> Result<String, MyError>
    where
        U: Display + Send,
    {
        Ok(format!("{}:{}:{extra}", self.tenant, self.tag))
    }
}

#[tokio::test]
async fn generic_method_with_self_receiver() {
    setup();
    let acme = Client {
        tenant: "expansion-acme".to_owned(),
        tag: 7u8,
    };
    let globex = Client {
        tenant: "expansion-globex".to_owned(),
        tag: "g",
    };
    assert_eq!(
        acme.call(1).await.ok().as_deref(),
        Some("expansion-acme:7:1")
    );
    assert_eq!(
        acme.call("two").await.ok().as_deref(),
        Some("expansion-acme:7:two")
    );
    assert!(matches!(acme.call(3).await, Err(MyError::Limited(_))));
    assert!(globex.call(1.5).await.is_ok());
}
