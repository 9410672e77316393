//! Flux benchmark harness (being written).
fn main() {}
