//! Integration tests of Flux live in tests/; see support/.
