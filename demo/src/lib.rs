//! Flux's demo and pictures (not published).
//!
//! * The binary `flux-demo` drives `scripts/demo`: a bounded, paced load through a load
//!   balancer to several instances of the quickstart on this machine's loopback, with Redis
//!   paused for a while, then a table of what each instance admitted and a picture of it.
//! * The library's [`plot`] module draws every picture of the project: the demo's and the
//!   benchmark harness' (`flux-bench` depends on it), so the look lives in one place.

pub mod plot;
