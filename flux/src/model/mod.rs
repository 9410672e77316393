//! The model: what a limit is, who a client is, what a check answers, and the GCRA math.
//! The bottom layer of the crate: it uses nothing above it (only the metric handles a limit
//! carries and the error type), so it can be read, and tested, first.
//!
//! - `limit`: [`Limit`](crate::Limit), a named token bucket (rate, burst, cost, lease).
//! - `key`: [`Key`](crate::Key), a client key, and how it becomes a storage key.
//! - `client`: which address is the client (trusted proxies, exempt sets).
//! - `decision`: [`Decision`](crate::Decision), [`Source`](crate::decision::Source) and
//!   [`RateLimited`](crate::RateLimited), and one decision from per-bucket outcomes.
//! - `gcra`: the token bucket stored as one time per bucket, with a worked example.
//! - `cost`: limits and costs computed per request, and costs no bucket can admit.
//! - `clock`: where the in-memory backend reads the time.

pub(crate) mod client;
pub(crate) mod clock;
pub(crate) mod cost;
pub(crate) mod decision;
pub(crate) mod gcra;
pub(crate) mod key;
pub(crate) mod limit;
