//! Flux's benchmark harness.
//!
//! Two entry points share the workloads of this library:
//!
//! * `cargo run --release -p flux-bench -- [--quick]`: the load-test binary. It starts its
//!   own `redis-server`, measures everything side by side in one run (Redis decisions
//!   against `PING` and `redis-benchmark`'s `EVALSHA`, end-to-end HTTP against an unlimited
//!   handler, a hot-key flood, an outage, memory per key, in-process ns/op) and prints one
//!   table of figures, ratios and targets. See `BENCHMARKS.md`.
//! * `cargo bench -p flux-bench`: the criterion suite (`benches/micro.rs`) of the in-process
//!   parts, over the [`micro`] workloads.

pub mod micro;
