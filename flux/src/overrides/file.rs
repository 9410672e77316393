//! The in-memory backend's overrides: a TOML file (`FLUX_OVERRIDES`,
//! [`Builder::overrides_file`](crate::Builder::overrides_file)), read at start and again
//! whenever its modification time changes (polled every second).
//!
//! ```toml
//! [[override]]
//! limit = "api"        # the limit's name
//! rate = "3/s"         # a rate, or "off"
//! burst = 3            # optional: default the rate's count
//! key = "alice"        # optional: this client key only
//! ```
//!
//! Each entry becomes the overrides' stored form (`NAME[@KEY]` and `RATE burst=N`), so
//! the file and Redis are validated by the same code. A malformed entry, or a file that
//! cannot be read or parsed, is reported once and leaves the rest in force.

use std::path::Path;
use std::sync::Weak;
use std::time::{Duration, SystemTime};

use super::{Overrides, Table, check_name, field};
use crate::model::key::Key;

/// How often the file's modification time is compared.
const POLL: Duration = Duration::from_secs(1);

/// Keeps `overrides` equal to the file's content while they are alive.
pub(crate) async fn watch(overrides: Weak<Overrides>) {
    let mut seen: Option<SystemTime> = None;
    let mut first = true;
    loop {
        let Some(o) = overrides.upgrade() else {
            return;
        };
        let Some(path) = o.file.as_deref() else {
            return;
        };
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        if first || modified != seen {
            first = false;
            seen = modified;
            o.replace(read(&o, path));
        }
        drop(o);
        tokio::time::sleep(POLL).await;
    }
}

/// The table the file holds now; an unreadable file holds none (reported once).
pub(crate) fn read(o: &Overrides, path: &Path) -> Table {
    let source = format!("FLUX_OVERRIDES file {}", path.display());
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            o.warn_once(&format!("{source}\n{e}"), || {
                format!("{source} cannot be read ({e}): no overrides in force")
            });
            return Table::default();
        }
    };
    let entries = match parse(&text) {
        Ok(entries) => entries,
        Err(e) => {
            o.warn_once(&format!("{source}\n{text}"), || {
                format!("{source} is not valid: {e}; no overrides in force")
            });
            return Table::default();
        }
    };
    o.load(
        &source,
        entries.iter().map(|(f, v)| (f.as_str(), v.as_str())),
    )
}

/// The `(field, value)` pairs of the file's `[[override]]` entries.
fn parse(text: &str) -> Result<Vec<(String, String)>, String> {
    let doc: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    if let Some(other) = doc.keys().find(|k| *k != "override") {
        return Err(format!("unknown table {other:?} (expected [[override]])"));
    }
    let Some(list) = doc.get("override") else {
        return Ok(Vec::new());
    };
    let list = list
        .as_array()
        .ok_or("`override` must be an array of tables ([[override]])")?;
    list.iter()
        .enumerate()
        .map(|(i, entry)| entry_of(entry).map_err(|e| format!("override #{}: {e}", i + 1)))
        .collect()
}

fn entry_of(entry: &toml::Value) -> Result<(String, String), String> {
    let table = entry.as_table().ok_or("not a table")?;
    if let Some(other) = table
        .keys()
        .find(|k| !["limit", "rate", "burst", "key"].contains(&k.as_str()))
    {
        return Err(format!(
            "unknown field {other:?} (expected limit, rate, burst, key)"
        ));
    }
    let text = |name: &str| match table.get(name) {
        None => Ok(None),
        Some(v) => v
            .as_str()
            .map(|s| Some(s.to_owned()))
            .ok_or(format!("`{name}` must be a string")),
    };
    let limit = text("limit")?.ok_or("`limit` is missing")?;
    check_name(&limit)?;
    let rate = text("rate")?.ok_or("`rate` is missing")?;
    let key = text("key")?.map(|k| Key::new(k).as_str().to_owned());
    let mut value = rate;
    if let Some(burst) = table.get("burst") {
        let burst = burst.as_integer().ok_or("`burst` must be a whole number")?;
        value = format!("{value} burst={burst}");
    }
    Ok((field(&limit, key.as_deref()), value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_become_the_stored_form() {
        let entries = parse(
            "[[override]]\nlimit = \"api\"\nrate = \"3/s\"\nburst = 3\n\n\
             [[override]]\nlimit = \"api\"\nkey = \"vip\"\nrate = \"off\"\n",
        )
        .expect("parses");
        assert_eq!(
            entries,
            [
                ("api".to_owned(), "3/s burst=3".to_owned()),
                ("api@vip".to_owned(), "off".to_owned())
            ]
        );
        assert!(parse("").expect("empty file").is_empty());
    }

    #[test]
    fn mistakes_are_named() {
        for (text, says) in [
            ("[[override]]\nrate = \"3/s\"", "`limit` is missing"),
            (
                "[[override]]\nlimit = \"a\"\nrate = \"3/s\"\nbrust = 3",
                "brust",
            ),
            ("[limits]\n", "unknown table"),
            // It would read back as the override of `a` for the client key `b`.
            ("[[override]]\nlimit = \"a@b\"\nrate = \"3/s\"", "'@'"),
            ("[[override]\n", "TOML"),
        ] {
            let e = parse(text).expect_err(text);
            assert!(e.contains(says) || says == "TOML", "{text:?}: {e}");
        }
    }
}
