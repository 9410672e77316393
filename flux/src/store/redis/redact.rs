//! Redis URLs without their secrets, for `describe()`, `Health` and error messages.
//!
//! The redis crate reads a password from two places: the user info of a TCP URL
//! (`redis://user:secret@host`, also `rediss`, `valkey`, `valkeys`) and the `pass` query
//! parameter of a Unix socket URL (`redis+unix:///run/redis.sock?pass=secret`, also `unix`
//! and `valkey+unix`). An operator may also write a password where the crate ignores it
//! (`?password=`, a user name without its colon), or leave in it a `/`, `?`, `#` or `&` that
//! the URL parser takes for the end of the user info or of the parameter, which scatters the
//! password over the host, port, path, query and fragment. So the URL is read with the
//! parser the redis crate uses (`url`) and rebuilt from the parts known to hold no secret,
//! everything else replaced by `***`:
//!
//! - not a URL at all: only its scheme is kept (`redis://***`);
//! - an `@` after the host (in the path, the query before any `pass`, or the fragment): the
//!   user info ended before its `@`, at an unencoded `/`, `?` or `#` of the password, and
//!   any part may hold a piece of it, so only the scheme is kept;
//! - otherwise the user name stays when a password follows it (`user:***@`), a user name
//!   alone is hidden (`***@`: it may be a password without its colon), host, port and path
//!   stay, the query keeps `db`, `protocol` and `user` before any `pass` or `password`
//!   (whose values are hidden, and so is everything after them: an unencoded `&` or `#`
//!   in the password would have split it there), and the fragment stays only when it is
//!   `insecure` (the one the redis crate knows).

use url::form_urlencoded::byte_serialize;
use url::{Position, Url};

/// What stands for a hidden part.
const HIDDEN: &str = "***";

/// `url` with every part that may hold a secret replaced by `***` (see the module docs).
///
/// `redis://user:secret@host/` -> `redis://user:***@host/`,
/// `redis+unix:///sock?pass=secret` -> `redis+unix:///sock?pass=***`.
pub(crate) fn redact(url: &str) -> String {
    let Ok(parsed) = Url::parse(url) else {
        return scheme_only(url);
    };
    let scheme = parsed.scheme();
    if parsed.cannot_be_a_base() {
        // `scheme:anything`: nothing a Redis URL would be.
        return format!("{scheme}:{HIDDEN}");
    }
    // The user info ended before its `@`, at a `/`, `?` or `#` of the password: pieces of
    // it may be anywhere.
    let scattered = format!("{scheme}://{HIDDEN}");
    let authority = &parsed[Position::BeforeUsername..Position::AfterPort];
    let after = &parsed[Position::AfterPort..];
    if after.contains('@') && (!authority.is_empty() || parsed.path().contains('@')) {
        return scattered;
    }
    let mut out = format!("{scheme}://");
    match (parsed.username(), parsed.password()) {
        ("", None) => {}
        (user, Some(_)) => out.push_str(&format!("{user}:{HIDDEN}@")),
        (_, None) => out.push_str(&format!("{HIDDEN}@")),
    }
    out.push_str(parsed.host_str().unwrap_or(""));
    if let Some(port) = parsed.port() {
        out.push_str(&format!(":{port}"));
    }
    out.push_str(parsed.path());
    // Whether a `pass` or `password` parameter came: everything after it is hidden.
    let mut secret_seen = false;
    if parsed.query().is_some() {
        let mut shown = Vec::new();
        for (name, value) in parsed.query_pairs() {
            if secret_seen {
                shown.push(HIDDEN.to_owned());
                continue;
            }
            if name.contains('@') || value.contains('@') {
                // Where a password starting with `?` put its `@`.
                return scattered;
            }
            shown.push(match &*name {
                "db" | "protocol" | "user" => format!("{name}={}", encode(&value)),
                "pass" | "password" => {
                    secret_seen = true;
                    format!("{name}={HIDDEN}")
                }
                _ => HIDDEN.to_owned(),
            });
        }
        out.push('?');
        out.push_str(&shown.join("&"));
    }
    match parsed.fragment() {
        None => {}
        Some("insecure") if !secret_seen => out.push_str("#insecure"),
        Some(fragment) if !secret_seen && fragment.contains('@') => return scattered,
        Some(_) => out.push_str(&format!("#{HIDDEN}")),
    }
    out
}

/// A query value as it would be written in a URL.
fn encode(value: &str) -> String {
    byte_serialize(value.as_bytes()).collect()
}

/// `scheme://***` for a text that is not a URL (`***` without a plausible scheme).
fn scheme_only(text: &str) -> String {
    let text = text.trim();
    match text.split_once("://") {
        Some((scheme, _))
            if scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')) =>
        {
            format!("{scheme}://{HIDDEN}")
        }
        _ => HIDDEN.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn urls_without_secrets_are_shown_whole() {
        for url in [
            "redis://127.0.0.1:6379",
            "redis://127.0.0.1:6379/0",
            "rediss://cache.internal:6380/2?protocol=resp3#insecure",
            "valkey://[::1]:6379/1",
            "redis+unix:///run/redis.sock?db=1&protocol=3",
            "unix:///run/redis.sock",
        ] {
            assert_eq!(redact(url), url);
        }
    }

    #[test]
    fn every_form_of_password_is_hidden() {
        // (URL, secret, what must remain for the operator to tell the target)
        for (url, secret, shown) in [
            (
                "redis://:hunter2@10.0.0.1:6379/0",
                "hunter2",
                "redis://:***@10.0.0.1:6379/0",
            ),
            ("rediss://app:p@ss@host/", "p@ss", "rediss://app:***@host/"),
            (
                "redis://app:p%40ss%2Fw0rd@host:6379",
                "ss%2Fw0rd",
                "redis://app:***@host:6379",
            ),
            // The user name alone may be a password that lost its colon.
            (
                "redis://hunter2@host:6379",
                "hunter2",
                "redis://***@host:6379",
            ),
            (
                "redis+unix:///run/redis.sock?pass=hunter2&db=2",
                "hunter2",
                "redis+unix:///run/redis.sock?pass=***&***",
            ),
            (
                "unix:///run/redis.sock?user=app&pass=hunter2",
                "hunter2",
                "unix:///run/redis.sock?user=app&pass=***",
            ),
            (
                "valkey+unix:///run/valkey.sock?db=1&p%61ss=hunter2",
                "hunter2",
                "valkey+unix:///run/valkey.sock?db=1&pass=***",
            ),
            // Ignored by the redis crate, hidden all the same.
            (
                "redis://host/?password=hunter2",
                "hunter2",
                "redis://host/?password=***",
            ),
            ("redis://host/?PASS=hunter2", "hunter2", "redis://host/?***"),
            // An unencoded `&` or `#` in a query password.
            (
                "redis+unix:///s.sock?pass=hun&ter2#insecure",
                "ter2",
                "redis+unix:///s.sock?pass=***&***#***",
            ),
            // An unencoded `/`, `?` or `#` in a user-info password: the parser cut it
            // into a port and a path (or query, or fragment), or into a host.
            ("redis://app:12/34secret@host/0", "34secret", "redis://***"),
            ("redis://app:12/34secret@host/0", "12", "redis://***"),
            ("redis://app:12?34secret@host", "34secret", "redis://***"),
            ("redis://:hun@ter#2secret@host", "hun", "redis://***"),
            ("redis://:hun@ter#2secret@host", "ter", "redis://***"),
            // Not URLs: nothing but the scheme.
            ("redis://:hun/ter2@host", "ter2", "redis://***"),
            ("redis://:hun#ter2@host", "hun", "redis://***"),
            ("redis://:hunter2@", "hunter2", "redis://***"),
            ("redis//:hunter2@host", "hunter2", "***"),
            ("localhost:hunter2@host", "hunter2", "localhost:***"),
        ] {
            let redacted = redact(url);
            assert!(!redacted.contains(secret), "{url} -> {redacted}");
            assert_eq!(redacted, shown, "{url}");
        }
    }

    /// URL forms with a password in each place the redis crate reads one or an operator
    /// may put one: `{}` is the password, as written (not percent-encoded).
    const FORMS: [&str; 8] = [
        "redis://:{}@cache.internal:6379/0",
        "rediss://app:{}@cache.internal:6380/1#insecure",
        "valkey://{}@cache.internal",
        "redis+unix:///run/redis.sock?pass={}&db=2",
        "unix:///run/redis.sock?db=2&user=app&pass={}",
        "valkey+unix:///run/valkey.sock?pass={}#insecure",
        "redis://cache.internal/?protocol=3&password={}",
        "redis://:{}@a.internal:7000,redis://:{}@b.internal:7001",
    ];

    /// What the store shows for `text`: one URL, or a list of nodes as `FLUX_REDIS_CLUSTER`
    /// gives them (split at commas, each redacted on its own).
    fn shown(text: &str, cluster: bool) -> String {
        if !cluster {
            return redact(text);
        }
        text.split(',')
            .map(|u| redact(u.trim()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn no_password_survives_in_any_form(
            form in 0..FORMS.len(),
            password in prop_oneof![
                "[ -~]{4,24}",
                "[a-z0-9/?#@&=:%+]{4,16}",
                "\\PC{4,12}",
            ],
        ) {
            if FORMS[form].contains("//{}@") && password.contains(':') {
                // `user:password` in place of a user name alone: the user name is shown.
                return Ok(());
            }
            let url = FORMS[form].replace("{}", &password);
            let cluster = form == FORMS.len() - 1;
            // Passwords that the rest of the URL spells (`cache`, `6379`) prove nothing.
            let benign = shown(&FORMS[form].replace("{}", "x"), cluster);
            prop_assume!(!benign.contains(&password));
            let redacted = shown(&url, cluster);
            prop_assert!(!redacted.contains(&password), "{url} -> {redacted}");
        }

        #[test]
        fn no_piece_of_a_password_cut_by_a_reserved_character_survives(
            form in 0..FORMS.len(),
            head in "[a-z0-9]{4,8}",
            cut in "[/?#@&=:,+% ]",
            tail in "[a-z0-9]{4,8}",
        ) {
            let url = FORMS[form].replace("{}", &format!("{head}{cut}{tail}"));
            let cluster = form == FORMS.len() - 1;
            let benign = shown(&FORMS[form].replace("{}", "x"), cluster);
            prop_assume!(!benign.contains(&head) && !benign.contains(&tail));
            if FORMS[form].contains("//{}@") && cut == ":" {
                // `user:password` in place of a user name alone: the user name is shown.
                return Ok(());
            }
            let redacted = shown(&url, cluster);
            prop_assert!(
                !redacted.contains(&head) && !redacted.contains(&tail),
                "{url} -> {redacted}"
            );
        }

        #[test]
        fn any_text_is_redacted_without_panic(text in "\\PC*") {
            let _ = redact(&text);
        }

        #[test]
        fn any_url_like_text_is_redacted_without_panic(
            scheme in "(redis|rediss|unix|redis\\+unix|valkey|x)",
            rest in "[ -~]{0,40}",
        ) {
            let _ = redact(&format!("{scheme}://{rest}"));
        }
    }
}
