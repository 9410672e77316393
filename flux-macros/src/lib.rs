//! The `#[rate_limit]` and `#[concurrency_limit]` attributes of [Flux](https://docs.rs/flux-ratelimit). Use it through
//! the runtime crate (`flux-ratelimit`, imported as `flux`): `flux::rate_limit`, where the
//! runtime provides everything the expansion refers to.
//!
//! ```no_run
//! use std::net::SocketAddr;
//!
//! use axum::{Router, routing::get};
//! use flux::rate_limit;
//!
//! /// 20 requests at once per client address, then 10 per second.
//! #[rate_limit(rate = "10/s", burst = 20)]
//! async fn hello() -> &'static str {
//!     "hello"
//! }
//!
//! #[tokio::main]
//! async fn main() -> std::io::Result<()> {
//!     let app = Router::new().route("/", get(hello));
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//!     // The default key, "ip", reads the client's address: serve with `ConnectInfo`.
//!     let app = app.into_make_service_with_connect_info::<SocketAddr>();
//!     axum::serve(listener, app).await
//! }
//! ```

// Doc examples define handlers they do not call.
#![doc(test(attr(deny(warnings), allow(dead_code))))]

use proc_macro::TokenStream;

mod attr;
mod diag;
mod expand;
mod valid;

/// Rate-limits an async fn: an axum handler (denied with `429 Too Many Requests`) or, with
/// `deny = "error"`, any async fn returning `Result` (denied with `Err`).
///
/// ```
/// # use axum::Json;
/// # use axum::extract::Query;
/// # use axum::http::StatusCode;
/// # use axum::response::{IntoResponse, Response};
/// # use flux::RateLimited;
/// use flux::rate_limit;
///
/// # #[derive(serde::Deserialize)]
/// # struct Params { q: String }
/// /// 5 requests at once per client address, then 1 per second.
/// #[rate_limit(rate = "1/s", burst = 5)]
/// async fn search(Query(params): Query<Params>) -> impl IntoResponse {
///     format!("results for {}", params.q)
/// }
///
/// # struct User { id: u64 }
/// # #[derive(serde::Serialize)]
/// # struct Report { user: u64 }
/// # impl Report {
/// #     async fn build(user: u64) -> Result<Report, AppError> { Ok(Report { user }) }
/// # }
/// # struct AppError;
/// # impl IntoResponse for AppError {
/// #     fn into_response(self) -> Response { StatusCode::INTERNAL_SERVER_ERROR.into_response() }
/// # }
/// /// 3 reports a minute per user, and 100 an hour per user: one atomic check.
/// #[rate_limit(rate = "3/min", key = user.id)]
/// #[rate_limit(rate = "100/hour")]
/// async fn report(user: User) -> Result<Json<Report>, AppError> {
///     Ok(Json(Report::build(user.id).await?))
/// }
///
/// # struct Invoice;
/// # enum PartnerError { RateLimited(RateLimited) }
/// # impl From<RateLimited> for PartnerError {
/// #     fn from(denied: RateLimited) -> Self { PartnerError::RateLimited(denied) }
/// # }
/// # mod partner_api {
/// #     pub async fn invoice(_: &str, _: u32) -> Result<super::Invoice, super::PartnerError> {
/// #         Ok(super::Invoice)
/// #     }
/// # }
/// /// Outbound calls, 5 per second per tenant; a denial is `Err(PartnerError::from(RateLimited))`.
/// #[rate_limit(rate = "5/s", key = tenant, deny = "error")]
/// async fn fetch_invoice(tenant: &str, id: u32) -> Result<Invoice, PartnerError> {
///     partner_api::invoice(tenant, id).await
/// }
/// # fn main() {}
/// ```
///
/// # Options
///
/// | option | value | default |
/// |---|---|---|
/// | `rate` | string: `"COUNT/PERIOD"` or `"COUNT per PERIOD"`, as `flux::Rate` parses it (`"100/s"`, `"5/10s"`, `"6000/min"`, `"10 per hour"`) | required |
/// | `burst` | integer: bucket capacity, requests admitted at once | the rate's count |
/// | `limit` | a Rust expression over the fn's arguments giving the `flux::Limit` to apply (anything `Borrow<Limit>`: `&'static Limit` per plan, `Limit`, `Arc<Limit>`), instead of `rate` and `burst`; excludes `rate`, `burst` and `name` | none |
/// | `cost` | integer literal: tokens each call takes (at most `burst`, checked at compile time); or a Rust expression over the fn's arguments giving any primitive integer, checked per request | `1` (with `limit`: the limit's own) |
/// | `key` | `"ip"`, `"global"`, `"header:NAME"`, or a Rust expression | `"ip"` (handlers) |
/// | `name` | string: the bucket's name; limits with equal names share buckets | `module_path!()::fn_name` |
/// | `on_error` | `"open"`, `"closed"` or `"local"`: `flux::FailurePolicy` when Redis is unavailable | the limiter's policy |
/// | `mode` | `"shadow"` (decide, charge and count, never deny, no header fields) or `"enforce"` (deny even when the limiter runs in shadow mode) | the limiter's (`FLUX_SHADOW`) |
/// | `exempt` | a `bool` expression over the fn's arguments, evaluated before the body: `true` skips the check (no backend call, counted `exempt`) | never |
/// | `deny` | `"response"` or `"error"`: which expansion applies (below) | `"response"` |
/// | `crate` | string: the path of the runtime crate, for a renamed dependency (`crate = "my_flux"`), as `#[serde(crate = "...")]` | `"::flux"` |
///
/// The default name does not include a method's type: give `name` to two limited methods
/// of the same name in one module, or they share their buckets. The last `::` segment of
/// the name is the policy name clients see in the `RateLimit` header fields.
///
/// `limit` and a computed `cost` are evaluated before the body, the arguments borrowed, as
/// `key` is. A computed cost that no bucket can ever admit (zero, negative, above the
/// limit's burst, however large its integer type) is refused without asking any backend: a
/// `429` whose body gives the reason (handlers), or `Err` whose `RateLimited::reason()` does
/// (plain fns), never a wrap-around, a panic or an admission.
///
/// Every mistake is a compile error on the argument at fault: an invalid rate, `burst = 0`,
/// `cost = 0`, `cost` above `burst`, a bucket taking more than 10 years to refill
/// (`burst` x period / count), an unknown or duplicate option, a value of the wrong type.
/// A rate and a limit's bounds are checked by the runtime's own code (`flux::Rate`'s
/// parser, `flux::Limit`'s bounds), so the attribute accepts exactly what the runtime
/// accepts and rejects the rest with the runtime's message.
///
/// # Keys
///
/// - `key = "ip"`: the client's address (an IPv6 client by its /64), or the address trusted
///   proxies forwarded. Needs `into_make_service_with_connect_info::<SocketAddr>()`; without
///   it requests are answered `500` (and an error is logged once).
/// - `key = "global"`: one bucket shared by every caller.
/// - `key = "header:x-api-key"`: the value of that request header (name checked and
///   lowercased at compile time); a request without it is answered `400`.
/// - `key = user.id`, `key = tenant`, ...: any expression over the fn's arguments whose type
///   implements `flux::key::ToKey`. It is evaluated before the body, by reference
///   (`&(EXPR)`), so the arguments are borrowed, never moved. A string literal is always
///   read as one of the forms above, never as a constant key.
///
/// A handler gets an extra first parameter (after `self`, if any): an extractor of the
/// limiter serving the request (a `flux::Flux` in the request's extensions, else the
/// process-wide one) and, for `"ip"` or when the limiter exempts addresses, the client's
/// address. `"header:..."` adds a second one, which reads only the named header.
///
/// # Which expansion: `deny`
///
/// The expansion is chosen by `deny` alone, never guessed from the fn's types.
///
/// **`deny = "response"`** (the default): the fn is an axum handler. Its declared return
/// type `R` (any `IntoResponse`, often `impl IntoResponse`) becomes
/// `axum::response::Response`; routers never notice. The limit is checked before the body
/// runs; when admitted, the body runs unchanged (as `async move`, its output still typed
/// `R` so `?` infers as before) and its response gets the `RateLimit` and
/// `RateLimit-Policy` header fields; when denied, the body does not run and the answer is
/// `429 Too Many Requests` with `Retry-After` (or `503` under `on_error = "closed"` when the
/// store is unavailable, or the limiter's `deny_response`).
///
/// **`deny = "error"`**: the fn is a plain async fn returning `Result<T, E>` with
/// `E: From<flux::RateLimited>`. The signature is unchanged; the check runs first and a
/// denial returns `Err(E::from(rate_limited))` without running the body. `key` is required
/// and must be `"global"` or an expression (`"ip"` and `"header:..."` need a request).
///
/// # Stacked attributes
///
/// Several `#[rate_limit]` (or `#[flux::rate_limit]`) attributes on one fn are one check
/// of all their limits, atomic: the request is admitted only if every limit admits it, and
/// a denial charges none of them. The first (outermost) attribute collects the others.
///
/// - `rate`, `burst`, `cost` and `name` are per limit. Unnamed limits of a stack are named
///   `module_path!()::fn_name#1`, `#2`, ... in order, so each has its own bucket; two
///   explicit equal names in one stack are an error.
/// - `key`, `on_error`, `mode`, `exempt`, `deny` and `crate` are per check: set them on the
///   first attribute.
///   A later attribute may repeat the first's value exactly (copy-pasted attributes
///   compile) but may not set a different one, nor one the first attribute leaves at its
///   default.
/// - Only attributes spelled `rate_limit` or `flux::rate_limit` are collected, and with
///   `crate = "a::b"` also `b::rate_limit` and `a::b::rate_limit`: one imported under
///   another name expands as a separate check.
///
/// # The runtime crate: `crate`
///
/// The generated code refers only to `::flux::__private` and `::core`, so the runtime must
/// be a direct dependency named `flux`. Under another name (`my_flux = { package =
/// "flux-ratelimit", ... }` in Cargo.toml), or re-exported by another crate, say where it
/// is with `crate = "my_flux"` (or `"::my_flux"`, `"my_deps::flux"`): every path the
/// expansion emits then starts from there.
#[proc_macro_attribute]
pub fn rate_limit(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::expand(attr::Kind::RateLimit, args.into(), item.into()).into()
}

/// Limits an axum handler to at most `max` requests in flight per client, across every
/// instance that shares the Redis (or per process on the in-memory backend).
///
/// ```
/// use flux::{concurrency_limit, rate_limit};
///
/// /// At most 2 exports running per client address; a third gets `429` with `Retry-After: 1`.
/// #[concurrency_limit(max = 2, key = "ip")]
/// async fn export() -> &'static str {
///     "done"
/// }
///
/// /// Both: 10 a minute per API key, and at most 3 running at once per API key.
/// #[rate_limit(rate = "10/min", key = "header:x-api-key")]
/// #[concurrency_limit(max = 3, lease = "10s")]
/// async fn report() -> &'static str {
///     "report"
/// }
/// # fn main() {}
/// ```
///
/// A request takes a slot before the body runs and releases it when the response has been
/// produced, or when the handler panics, or when the client disconnects and the request's
/// future is dropped (the slot is a guard, `flux::concurrency::Slot`, released on drop). Over the limit
/// the body does not run and the answer is `429 Too Many Requests` with `Retry-After: 1`
/// and a body saying it is a concurrency limit.
///
/// # Options
///
/// | option | value | default |
/// |---|---|---|
/// | `max` | integer: requests in flight at most, per client (at least 1) | required |
/// | `lease` | string: how long a crashed instance's slots stay taken, `"300ms"` to `"1day"`; live holders renew it every third of it | `"30s"` |
/// | `key` | as `#[rate_limit]`: `"ip"`, `"global"`, `"header:NAME"`, or a Rust expression | `"ip"` |
/// | `name` | string: the slot set's name; handlers with equal names share slots | `module_path!()::fn_name` |
/// | `on_error` | `"open"` (admit without a slot), `"closed"` (503) or `"local"` (slots of this process) when Redis is unavailable | the limiter's policy |
/// | `mode` | `"shadow"` (take a slot when one is free, never deny) or `"enforce"` | the limiter's |
/// | `exempt` | a `bool` expression over the fn's arguments: `true` skips every limit | never |
/// | `crate` | the path of the runtime crate, as `#[rate_limit]`'s | `"::flux"` |
///
/// # Stacked with `#[rate_limit]`
///
/// With `#[rate_limit]` attributes on the same fn, whichever comes first collects the others
/// into one expansion: the rate limits are checked first (one atomic check), then the slot
/// is taken. A request refused by the concurrency limit has been charged by the rate limits;
/// one refused by a rate limit never takes a slot. `key`, `on_error`, `mode`, `exempt` and
/// `crate` are shared by the whole stack: set them on the first attribute. One
/// `#[concurrency_limit]` per fn; `deny = "error"` (plain fns) does not combine with it:
/// plain code holds a slot with `flux::Flux::acquire`.
#[proc_macro_attribute]
pub fn concurrency_limit(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::expand(attr::Kind::ConcurrencyLimit, args.into(), item.into()).into()
}
