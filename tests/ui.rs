//! Compile-time behaviour of `#[rate_limit]`, with trybuild: every case in `ui/pass/` must
//! compile, and every misuse in `ui/fail/` must fail with the error (and span) recorded in
//! its `.stderr` file.
//!
//! Compiler output changes between releases, so the `.stderr` files hold for the compiler
//! that wrote them, whose version is recorded in `ui/TOOLCHAIN` (`1.95.0`: the second word
//! of `rustc --version`). On any other compiler (`$RUSTC`, else `rustc`) the `ui/fail/`
//! cases are skipped, with a note on stderr saying so, rather than failing the build; the
//! `ui/pass/` cases run on every compiler. To regenerate the files with the compiler at
//! hand, run
//!
//! ```text
//! TRYBUILD=overwrite cargo test -p flux-tests --test ui
//! ```
//!
//! which also records that compiler's version in `ui/TOOLCHAIN`; then review the diff:
//! each error must still point at the faulty argument.

use std::io::Write;
use std::process::Command;

/// Where the version of the compiler that wrote the `.stderr` files is recorded.
const TOOLCHAIN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/ui/TOOLCHAIN");

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("ui/pass/*.rs");

    let current = rustc_version();
    if std::env::var_os("TRYBUILD").is_some_and(|mode| mode == "overwrite") {
        cases.compile_fail("ui/fail/*.rs");
        let version = current.unwrap_or_else(|| panic!("cannot tell the version of rustc"));
        std::fs::write(TOOLCHAIN, format!("{version}\n"))
            .unwrap_or_else(|e| panic!("cannot write {TOOLCHAIN}: {e}"));
        return;
    }
    let recorded = std::fs::read_to_string(TOOLCHAIN)
        .unwrap_or_else(|e| panic!("cannot read {TOOLCHAIN}: {e}"));
    let recorded = recorded.trim();
    if current.as_deref() == Some(recorded) {
        cases.compile_fail("ui/fail/*.rs");
    } else {
        skip_fail_cases(recorded, current.as_deref().unwrap_or("unknown"));
    }
}

/// The version of the compiler trybuild builds with (`1.95.0`, `1.97.0-nightly`), from
/// `$RUSTC --version` or `rustc --version`.
fn rustc_version() -> Option<String> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let output = Command::new(rustc).arg("--version").output().ok()?;
    // "rustc 1.95.0 (59807616e 2026-04-14)"
    let text = String::from_utf8(output.stdout).ok()?;
    text.split_whitespace().nth(1).map(str::to_owned)
}

/// Says which cases are skipped and how to check them with this compiler. Written to the
/// process' stderr itself, which the test harness does not capture, so that it shows.
fn skip_fail_cases(recorded: &str, current: &str) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/ui/fail");
    let mut cases: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|entry| Some(entry.ok()?.file_name().to_string_lossy().into_owned()))
                .filter(|name| name.ends_with(".rs"))
                .collect()
        })
        .unwrap_or_default();
    cases.sort();
    let note = format!(
        "\nnote: skipped the {} compile_fail cases of ui/fail/ ({}): their .stderr files \
         were written by rustc {recorded} (tests/ui/TOOLCHAIN) and this is rustc {current}, \
         whose messages may differ. The ui/pass/ cases run as usual. To check the errors \
         with this compiler, regenerate the files and review the diff:\n\n    \
         TRYBUILD=overwrite cargo test -p flux-tests --test ui\n",
        cases.len(),
        cases.join(", "),
    );
    // Nothing to do if stderr is gone.
    let _ = std::io::stderr().write_all(note.as_bytes());
}
