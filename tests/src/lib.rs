//! Integration tests of Flux live in tests/; see support/.

/// The README's Rust examples, compiled and run as doc tests, so the front door stays true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeExamples;
