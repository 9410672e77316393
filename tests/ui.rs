//! Compile-time behaviour of `#[rate_limit]`, with trybuild: every misuse in `ui/fail/` must
//! fail with the error (and span) recorded in its `.stderr` file, and every case in `ui/pass/`
//! must compile.
//!
//! The `.stderr` files were generated with rustc 1.95.0 (stable). Compiler output changes
//! between releases, so on another toolchain they may differ in wording or layout. To
//! regenerate them, run
//!
//! ```text
//! TRYBUILD=overwrite cargo test -p flux-tests --test ui
//! ```
//!
//! then review the diff: each error must still point at the faulty argument.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("ui/fail/*.rs");
    cases.pass("ui/pass/*.rs");
}
