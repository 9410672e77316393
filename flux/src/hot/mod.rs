//! Hot keys: what spares a remote store the calls of a client that floods, or of a key
//! every request shares. Both sit between the limiter and the store, and neither can make a
//! check admit what the store would deny.
//!
//! - `deny_cache`: Redis' recent denials, answered by this instance until their
//!   `retry_after`.
//! - `lease`: tokens taken from the shared bucket in one call and spent by this instance
//!   (opt-in per limit).

pub(crate) mod deny_cache;
pub(crate) mod lease;
