//! Test kit, behind the `testing` feature: a limiter on tokio's clock (and, on [`Flux`],
//! checks and charges at explicit times: `Flux::try_check_at`, `Flux::try_charge_at`). Not
//! for production code.
//!
//! Prove a handler's limit in a unit test, without ports, Redis or sleeps: serve the router
//! with [`memory`]'s limiter in an `Extension` (handlers use the limiter their request
//! carries), call it with `tower::ServiceExt::oneshot`, and move time with
//! `tokio::time::advance` under `#[tokio::test(start_paused = true)]`:
//!
//! ```
//! use std::net::SocketAddr;
//! use std::time::Duration;
//!
//! use axum::{Extension, Router, body::Body, extract::connect_info::MockConnectInfo};
//! use axum::{http::Request, routing::get};
//! use flux::rate_limit;
//! use tower::ServiceExt;
//!
//! #[rate_limit(rate = "1/s", burst = 2, key = "ip")]
//! async fn search() -> &'static str {
//!     "results"
//! }
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! // In a test: #[tokio::test(start_paused = true)] async fn search_is_limited() { ... }
//! let app = Router::new()
//!     .route("/search", get(search))
//!     .layer(Extension(flux::testing::memory()))
//!     .layer(MockConnectInfo(SocketAddr::from(([192, 0, 2, 1], 4000))));
//! let status = |app: Router| async move {
//!     let request = Request::get("/search").body(Body::empty()).unwrap();
//!     app.oneshot(request).await.unwrap().status().as_u16()
//! };
//! assert_eq!(status(app.clone()).await, 200);
//! assert_eq!(status(app.clone()).await, 200);
//! assert_eq!(status(app.clone()).await, 429); // burst 2
//! tokio::time::advance(Duration::from_secs(1)).await;
//! assert_eq!(status(app.clone()).await, 200); // one token a second
//! # }
//! ```

use crate::Flux;
use crate::model::clock::Clock;

/// The in-memory backend's clock for tests: tokio's clock, so `tokio::time::pause()` stops
/// it and `tokio::time::advance()` moves it (for buckets and the `Local` fallback alike).
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// use flux::clock::Clock;
/// use flux::testing::TokioClock;
///
/// let clock = TokioClock::default();
/// let before = clock.now_micros();
/// tokio::time::advance(std::time::Duration::from_millis(1500)).await;
/// assert_eq!(clock.now_micros() - before, 1_500_000);
/// # }
/// ```
#[derive(Clone, Copy, Debug)]
pub struct TokioClock {
    origin: tokio::time::Instant,
}

impl Default for TokioClock {
    fn default() -> Self {
        TokioClock {
            origin: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now_micros(&self) -> u64 {
        // An offset keeps `now` well above zero, like real time.
        1_000_000_000 + self.origin.elapsed().as_micros() as u64
    }
}

/// A fresh in-memory limiter on [`TokioClock`]: for unit tests of handlers and layers.
pub fn memory() -> Flux {
    match Flux::builder()
        .memory()
        .clock(TokioClock::default())
        .build()
    {
        Ok(flux) => flux,
        Err(e) => unreachable!("the in-memory test limiter is valid: {e}"),
    }
}
