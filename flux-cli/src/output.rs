//! What `flux` prints: stable, documented in the README ("Changing limits at runtime"),
//! tab-separated tables and `field: value` lines, so that scripts can read them.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use flux::decision::Source;
use flux::overrides::{Override, Setting};
use flux::{Decision, Key, Limit};

/// `flux limits`: a header, then one row per registered limit (`KEY` = `*`, with its
/// limit-wide override or `-`) followed by one row per per-key override of it; overrides
/// of limits nobody registered come last, with `?` for what is unknown.
pub(crate) fn limits(limits: &[Limit], overrides: &[Override]) -> String {
    let mut out = String::from("NAME\tKEY\tRATE\tBURST\tCOST\tOVERRIDE\n");
    let mut row = |name: &str, key: &str, declared: Option<&Limit>, o: Option<&Override>| {
        let (rate, burst, cost) = declared.map_or_else(
            || ("?".to_owned(), "?".to_owned(), "?".to_owned()),
            |l| {
                (
                    l.rate().to_string(),
                    l.burst().to_string(),
                    l.cost().to_string(),
                )
            },
        );
        let setting = o.map_or_else(|| "-".to_owned(), setting);
        // Writing to a String cannot fail.
        let _ = writeln!(out, "{name}\t{key}\t{rate}\t{burst}\t{cost}\t{setting}");
    };
    for limit in limits {
        let name = limit.name();
        let wide = overrides
            .iter()
            .find(|o| o.limit == name && o.key.is_none());
        row(name, "*", Some(limit), wide);
        for o in overrides.iter().filter(|o| o.limit == name) {
            if let Some(key) = &o.key {
                row(name, key, Some(limit), Some(o));
            }
        }
    }
    for o in overrides
        .iter()
        .filter(|o| !limits.iter().any(|l| l.name() == o.limit))
    {
        row(&o.limit, o.key.as_deref().unwrap_or("*"), None, Some(o));
    }
    out
}

/// An override's setting and remaining time: `3/s burst=3`, `off`, `... ttl=59s`.
fn setting(o: &Override) -> String {
    let mut text = o.setting.to_string();
    if let Some(at) = o.expires {
        let left = at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        let _ = write!(text, " ttl={}s", left.as_secs_f64().ceil() as u64);
    }
    text
}

/// `flux override set`: `set NAME KEY: SETTING` (`KEY` is `*` for every client).
pub(crate) fn set(o: &Override, ttl: Option<Duration>) -> String {
    let mut text = format!(
        "set {} {}: {}",
        o.limit,
        o.key.as_deref().unwrap_or("*"),
        o.setting
    );
    if let Some(ttl) = ttl {
        let _ = write!(text, " ttl={}s", ttl.as_secs());
    }
    text.push('\n');
    text
}

/// `flux override clear`: `cleared NAME KEY` or `no override of NAME KEY`.
pub(crate) fn cleared(name: &str, key: Option<&str>, removed: bool) -> String {
    let key = key.map_or_else(|| "*".to_owned(), |k| Key::new(k).as_str().to_owned());
    if removed {
        format!("cleared {name} {key}\n")
    } else {
        format!("no override of {name} {key}\n")
    }
}

/// `flux inspect`: `field: value` lines; `tokens` and `full_in_ms` are what a request of
/// cost 1 would find now.
pub(crate) fn inspect(
    declared: &Limit,
    key: &Key,
    decision: &Decision,
    in_force: Option<&Override>,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "limit: {}", declared.name());
    let _ = writeln!(out, "key: {}", key.as_str());
    let _ = writeln!(
        out,
        "declared: {} burst={} cost={}",
        declared.rate(),
        declared.burst(),
        declared.cost()
    );
    let _ = writeln!(
        out,
        "override: {}",
        in_force.map_or_else(|| "-".to_owned(), setting)
    );
    if in_force.is_some_and(|o| o.setting == Setting::Off) || decision.source == Source::Exempt {
        out.push_str("tokens: unlimited\nfull_in_ms: 0\n");
        return out;
    }
    // The decision is that of one more request of cost 1: an admitted one took a token.
    let interval = decision
        .window
        .checked_div(decision.capacity.max(1))
        .unwrap_or_default();
    let (tokens, full_in) = if decision.allowed {
        (
            decision.remaining + 1,
            decision.reset_after.saturating_sub(interval),
        )
    } else {
        (decision.remaining, decision.reset_after)
    };
    let _ = writeln!(out, "capacity: {}", decision.capacity);
    let _ = writeln!(out, "tokens: {tokens}");
    let _ = writeln!(out, "full_in_ms: {}", full_in.as_millis());
    out
}
