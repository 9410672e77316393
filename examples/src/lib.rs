//! Runnable examples of Flux: `cargo run --example NAME`.
