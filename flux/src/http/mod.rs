//! HTTP: limits on axum handlers and tower services, and what clients see of them.
//!
//! - `flow`: the one request flow that `#[rate_limit]` handlers, [`FluxLayer`] and
//!   rate-limited plain functions all run (exempt, key, check, slot, body, header fields).
//! - `layer`: [`FluxLayer`], the flow over a whole router or any `http` service.
//! - `headers`: the RateLimit header fields ([`RATELIMIT`], [`RATELIMIT_POLICY`]) and
//!   `Retry-After`.
//! - `response`: the answers given instead of the handler's (429, 503, 400, 500).
//! - `client`: which client a request comes from ([`ClientIp`]) and which limiter serves it
//!   (the [`Flux`](crate::Flux) extractor), and the extractors the attribute injects.
//!
//! ```
//! use axum::{Router, routing::get};
//! use flux::http::ClientIp;
//!
//! async fn whoami(ip: ClientIp) -> String {
//!     format!("you are {}", ip.key().as_str())
//! }
//! let app: Router = Router::new().route("/whoami", get(whoami));
//! ```

pub(crate) mod client;
pub(crate) mod flow;
mod headers;
mod layer;
mod response;

pub use self::client::ClientIp;
pub use self::headers::{RATELIMIT, RATELIMIT_POLICY};
pub use self::layer::{FluxLayer, FluxService};
pub use crate::limiter::DenyResponse;
