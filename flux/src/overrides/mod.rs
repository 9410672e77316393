//! Fleet-wide overrides of named limits, changed while the fleet runs.
//!
//! An [`Override`] replaces the rate and burst of one named limit (or turns it off), for
//! every client or for one client key, until it is cleared or expires. Set one with
//! [`Flux::set_override`](crate::Flux::set_override) or the `flux` command-line tool.
//!
//! Everything about overrides lives in this module: the stored form and the table in force
//! (here), their two sources (`redis`: the hash `<prefix>:overrides` and its channel, kept
//! current by a background task; `file`: the in-memory backend's `FLUX_OVERRIDES` TOML
//! file), and the registry of declared limits that operators list (`registry`). The limiter
//! asks the table on every check and hears of changes through the callback it gives
//! `start`; this module never reaches into the limiter.
//!
//! Every instance keeps the overrides in force in memory, in one immutable `Table`
//! swapped whole when they change: a check reads it without a lock, and when no override
//! exists at all (the usual case) pays one atomic load of a flag. What wins for a
//! client: an override for its key, else one for the whole limit, else the code's limit.
//!
//! The stored form, shared by the Redis hash, the registry of declared limits and the
//! command-line tool: the field is the limit's name, or `NAME@KEY` for one client key
//! (split at the first `@`, so a limit whose name has `@` cannot be overridden: its field
//! would read back as another limit's per-key override); the value is `off` or a rate,
//! optionally followed by `burst=N` and `until=UNIX_MS` (the expiry, in milliseconds since
//! the Unix epoch, at most [`MAX_TTL`] after it was set), e.g. `3/s burst=3
//! until=1767225600000`. Any other `word=` in a value makes it malformed.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use flux_core::Rate;

mod file;
pub(crate) mod redis;
pub(crate) mod registry;

use crate::error::{ConfigOption, Error};
use crate::store::Store;

use crate::model::key::{Key, ToKey};
use crate::model::limit::Limit;

/// The longest an override may last when it expires: 365 days.
/// [`Flux::set_override`](crate::Flux::set_override) refuses an expiry further away (the
/// `flux` tool a longer `--ttl`), so no arithmetic ever turns a TTL into "for good".
///
/// ```
/// use flux::overrides::{MAX_TTL, Override, Setting};
/// use std::time::Duration;
///
/// assert_eq!(MAX_TTL, Duration::from_secs(365 * 86_400));
/// // Past the maximum, still an expiry (which `set_override` refuses), never none.
/// let o = Override::new("api", Setting::Off).expires_in(Duration::MAX);
/// assert!(o.expires.is_some());
/// ```
pub const MAX_TTL: Duration = Duration::from_secs(365 * 86_400);

/// What an [`Override`] puts in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Setting {
    /// This rate and bucket capacity instead of the code's (the cost stays the code's).
    // Not `Limit`: a second item of that name would make rustc spell `flux::Limit` in full
    // in users' error messages.
    Limited {
        /// The sustained rate.
        rate: Rate,
        /// The bucket's capacity in tokens.
        burst: u32,
    },
    /// No limit: checks skip this limit entirely (no backend call for it).
    Off,
}

impl Setting {
    /// `rate` with a burst of its count, as [`Limit::new`] gives.
    pub fn rate(rate: Rate) -> Setting {
        Setting::Limited {
            rate,
            burst: rate.count(),
        }
    }
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Setting::Limited { rate, burst } => write!(f, "{rate} burst={burst}"),
            Setting::Off => f.write_str("off"),
        }
    }
}

/// A runtime change of one named limit, for every client or for one client key, until it
/// is cleared or expires. Set with [`Flux::set_override`](crate::Flux::set_override) (or
/// the `flux` command-line tool).
///
/// ```
/// use flux::Rate;
/// use flux::overrides::{Override, Setting};
/// use std::time::Duration;
///
/// let raise = Override::new("api", Setting::Limited { rate: "100/s".parse()?, burst: 200 })
///     .for_key("customer-42")
///     .expires_in(Duration::from_secs(3600));
/// assert_eq!(raise.key.as_deref(), Some("customer-42"));
/// let off = Override::new("export", Setting::Off);
/// assert_eq!(off.setting.to_string(), "off");
/// # Ok::<(), flux::limit::RateError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Override {
    /// The name of the limit it changes.
    pub limit: String,
    /// The client key it applies to (encoded as [`Key`] encodes it), or `None` for all.
    pub key: Option<String>,
    /// What is in force while it lasts.
    pub setting: Setting,
    /// When it ends by itself, if ever.
    pub expires: Option<SystemTime>,
}

impl Override {
    /// An override of the limit named `limit`, for every client, without expiry.
    ///
    /// A name containing `@` cannot be overridden (the stored field `NAME@KEY` is split at
    /// its first `@`): [`Flux::set_override`](crate::Flux::set_override) refuses it.
    pub fn new(limit: impl Into<String>, setting: Setting) -> Override {
        Override {
            limit: limit.into(),
            key: None,
            setting,
            expires: None,
        }
    }

    /// This override for one client key only (what the limit's `key =` yields).
    pub fn for_key(mut self, key: impl ToKey) -> Override {
        self.key = Some(key.to_key().as_str().to_owned());
        self
    }

    /// This override, ending `ttl` from now (on this machine's clock).
    /// [`Flux::set_override`](crate::Flux::set_override) refuses a `ttl` longer than
    /// [`MAX_TTL`].
    pub fn expires_in(mut self, ttl: Duration) -> Override {
        let now = SystemTime::now();
        // Past the maximum, still an expiry (one that `check` refuses), never none: an
        // override without expiry lasts for good.
        let ttl = ttl.min(MAX_TTL.saturating_mul(2));
        self.expires = Some(now.checked_add(ttl).unwrap_or(now));
        self
    }

    /// Whether this override can be stored as it is, at `now`: a limit name without `@`,
    /// a non-empty key, an expiry at most [`MAX_TTL`] away.
    pub(crate) fn check(&self, now: SystemTime) -> Result<(), Error> {
        let refuse = |reason: String| Error::config(ConfigOption::Override, reason);
        check_name(&self.limit).map_err(refuse)?;
        if self.key.as_deref() == Some("") {
            return Err(refuse(format!(
                "limit {:?}: the client key is empty",
                self.limit
            )));
        }
        if let Some(at) = self.expires
            && at.duration_since(now).is_ok_and(|ttl| ttl > MAX_TTL)
        {
            return Err(refuse(format!(
                "limit {:?}: the override expires more than {} days from now (the most \
                 an override may last; without an expiry it lasts until cleared)",
                self.limit,
                MAX_TTL.as_secs() / 86_400
            )));
        }
        Ok(())
    }

    /// The stored field: `NAME`, or `NAME@KEY`.
    pub(crate) fn field(&self) -> String {
        field(&self.limit, self.key.as_deref())
    }

    /// The stored value: the setting, then `until=UNIX_MS` if it expires.
    pub(crate) fn value(&self) -> String {
        match self.expires {
            Some(at) => format!("{} until={}", self.setting, unix_millis(at)),
            None => self.setting.to_string(),
        }
    }

    /// Reads a stored field and value; the error says what is wrong with them.
    pub(crate) fn parse(field: &str, value: &str) -> Result<Override, String> {
        let (limit, key) = match field.split_once('@') {
            Some((limit, key)) => (limit, Some(key)),
            None => (field, None),
        };
        if limit.is_empty() || key.is_some_and(str::is_empty) {
            return Err(format!("field {field:?} is not NAME or NAME@KEY"));
        }
        let stored = Stored::parse(value)?;
        if stored.cost.is_some() {
            return Err(format!("{value:?}: an override has no cost="));
        }
        Ok(Override {
            limit: limit.to_owned(),
            key: key.map(str::to_owned),
            setting: stored.setting,
            expires: stored.until,
        })
    }
}

/// Whether `limit` names a limit an override can be stored for: not empty, no `@` (the
/// field `NAME@KEY` is split at the first `@`, so `a@b` would read back as the override
/// of the limit `a` for the client key `b`).
pub(crate) fn check_name(limit: &str) -> Result<(), String> {
    if limit.is_empty() {
        return Err("the limit name is empty".to_owned());
    }
    if limit.contains('@') {
        return Err(format!(
            "limit {limit:?}: a limit whose name contains '@' cannot be overridden (overrides \
             are stored as NAME@KEY, split at the first '@')"
        ));
    }
    Ok(())
}

/// The stored field of an override of `limit` (for `key` only, if given).
pub(crate) fn field(limit: &str, key: Option<&str>) -> String {
    match key {
        Some(key) => format!("{limit}@{key}"),
        None => limit.to_owned(),
    }
}

/// Milliseconds since the Unix epoch (0 before it).
fn unix_millis(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A stored value: a setting and the optional `burst=`, `cost=` and `until=` words. The
/// registry of declared limits stores `RATE burst=N cost=N`; overrides never carry a cost.
pub(crate) struct Stored {
    pub(crate) setting: Setting,
    pub(crate) cost: Option<u32>,
    pub(crate) until: Option<SystemTime>,
}

impl Stored {
    pub(crate) fn parse(value: &str) -> Result<Stored, String> {
        let mut rate = Vec::new();
        let (mut burst, mut cost, mut until) = (None, None, None);
        for word in value.split_whitespace() {
            // No rate has a `=`: every `word=` is an option.
            let Some((name, v)) = word.split_once('=') else {
                rate.push(word);
                continue;
            };
            let slot = match name {
                "burst" => &mut burst,
                "cost" => &mut cost,
                "until" => &mut until,
                _ => {
                    return Err(format!(
                        "{value:?}: unknown option {name:?} (expected burst=, cost= or until=)"
                    ));
                }
            };
            if slot.is_some() {
                return Err(format!("{value:?}: {name}= is given twice"));
            }
            let n = v
                .parse::<u64>()
                .map_err(|_| format!("{value:?}: {name}={v:?} is not a whole number"))?;
            *slot = Some(n);
        }
        let until = until
            .map(|ms| {
                UNIX_EPOCH
                    .checked_add(Duration::from_millis(ms))
                    .ok_or_else(|| format!("{value:?}: until={ms} is out of range"))
            })
            .transpose()?;
        let rate = rate.join(" ");
        let too_big = |n: u64| {
            u32::try_from(n).map_err(|_| format!("{value:?}: {n} is more than {}", u32::MAX))
        };
        let cost = cost.map(too_big).transpose()?;
        let setting = if rate.eq_ignore_ascii_case("off") {
            if burst.is_some() {
                return Err(format!("{value:?}: `off` takes no burst"));
            }
            Setting::Off
        } else {
            let rate: Rate = rate
                .parse()
                .map_err(|e| format!("{value:?}: bad rate {rate:?}: {e}"))?;
            let burst = burst.map_or(Ok(rate.count()), too_big)?;
            flux_core::check_limit(rate, burst, cost.unwrap_or(1))
                .map_err(|e| format!("{value:?}: {e}"))?;
            Setting::Limited { rate, burst }
        };
        Ok(Stored {
            setting,
            cost,
            until,
        })
    }
}

/// The overrides in force, by limit name: immutable, replaced whole on every change.
#[derive(Default, PartialEq)]
pub(crate) struct Table {
    limits: HashMap<Box<str>, Entry>,
}

#[derive(Default, PartialEq)]
struct Entry {
    all: Option<Setting>,
    keys: HashMap<Box<str>, Setting>,
}

impl Table {
    /// The table of `overrides` still in force at `now`.
    pub(crate) fn new(overrides: impl IntoIterator<Item = Override>, now: SystemTime) -> Table {
        let mut limits: HashMap<Box<str>, Entry> = HashMap::new();
        for o in overrides {
            if o.expires.is_some_and(|at| at <= now) {
                continue;
            }
            let entry = limits.entry(o.limit.into()).or_default();
            match o.key {
                Some(key) => {
                    entry.keys.insert(key.into(), o.setting);
                }
                None => entry.all = Some(o.setting),
            }
        }
        Table { limits }
    }

    /// What is in force for `key` under the limit `name`: its own override, else the
    /// limit's, else none.
    fn setting(&self, name: &str, key: &Key) -> Option<Setting> {
        let entry = self.limits.get(name)?;
        entry.keys.get(key.as_str()).copied().or(entry.all)
    }
}

/// The limits of a check as overrides changed them.
pub(crate) struct Applied {
    /// The limits in force, without those turned off.
    pub(crate) limits: Vec<Limit>,
    /// For each of `limits`, its index among the limits checked.
    index: Vec<usize>,
}

impl Applied {
    /// The index among the checked limits of `limits[i]`.
    pub(crate) fn original(&self, i: usize) -> usize {
        self.index.get(i).copied().unwrap_or(i)
    }
}

/// One limiter's overrides: the table in force, what was reported about malformed ones,
/// whether the task that keeps them current runs, and the limits it registers.
pub(crate) struct Overrides {
    table: ArcSwap<Table>,
    /// Whether `table` holds no override: the check path's one load when none exists
    /// (cheaper than loading the table itself).
    empty: AtomicBool,
    /// Malformed entries already logged, so each distinct one is logged once.
    warned: Mutex<HashSet<String>>,
    started: AtomicBool,
    /// The TOML file of the in-memory backend (`FLUX_OVERRIDES`).
    pub(crate) file: Option<std::path::PathBuf>,
    /// The limits this limiter declared, to write to Redis.
    pub(crate) registry: registry::Registry,
}

impl Overrides {
    pub(crate) fn new(file: Option<std::path::PathBuf>) -> Overrides {
        Overrides {
            table: ArcSwap::from_pointee(Table::default()),
            empty: AtomicBool::new(true),
            warned: Mutex::new(HashSet::new()),
            started: AtomicBool::new(false),
            file,
            registry: registry::Registry::new(),
        }
    }

    /// Puts `table` in force; returns whether that changed anything.
    pub(crate) fn replace(&self, table: Table) -> bool {
        if **self.table.load() == table {
            return false;
        }
        let empty = table.limits.is_empty();
        self.table.store(Arc::new(table));
        self.empty.store(empty, Ordering::Release);
        true
    }

    /// Whether no override is in force.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.table.load().limits.is_empty()
    }

    /// Claims the start of the task that keeps the table current: true once.
    #[inline]
    pub(crate) fn claim_start(&self) -> bool {
        !self.started.load(Ordering::Relaxed) && !self.started.swap(true, Ordering::AcqRel)
    }

    /// Forgets a claimed start that could not happen (no runtime yet).
    pub(crate) fn unclaim_start(&self) {
        self.started.store(false, Ordering::Release);
    }

    /// Logs `message` as a warning, once per distinct `what`.
    pub(crate) fn warn_once(&self, what: &str, message: impl FnOnce() -> String) {
        let mut warned = self.warned.lock().unwrap_or_else(PoisonError::into_inner);
        if warned.len() < 1024 && warned.insert(what.to_owned()) {
            tracing::warn!(target: "flux", "{}", message());
        }
    }

    /// The limits in force for `key`, or `None` when no override touches `limits`.
    #[inline]
    pub(crate) fn apply(&self, key: &Key, limits: &[Limit]) -> Option<Applied> {
        if self.empty.load(Ordering::Acquire) {
            return None;
        }
        self.apply_table(key, limits)
    }

    fn apply_table(&self, key: &Key, limits: &[Limit]) -> Option<Applied> {
        let table = self.table.load();
        // Overrides of other limits cost lookups only, no allocation.
        if limits
            .iter()
            .all(|l| table.setting(l.name(), key).is_none())
        {
            return None;
        }
        let mut applied = Applied {
            limits: Vec::with_capacity(limits.len()),
            index: Vec::with_capacity(limits.len()),
        };
        for (i, limit) in limits.iter().enumerate() {
            let in_force = match table.setting(limit.name(), key) {
                None => limit.clone(),
                Some(Setting::Off) => continue,
                Some(Setting::Limited { rate, burst }) => self.overridden(limit, rate, burst),
            };
            applied.limits.push(in_force);
            applied.index.push(i);
        }
        Some(applied)
    }

    /// `limit` at `rate` and `burst`, keeping its name, cost and lease; the code's limit when
    /// the cost exceeds the new burst (reported once).
    fn overridden(&self, limit: &Limit, rate: Rate, burst: u32) -> Limit {
        let name: Cow<'static, str> = limit.name_cow().clone();
        match Limit::named(name, rate)
            .with_burst(burst)
            .and_then(|l| l.with_cost(limit.cost()))
            .map(|l| l.with_lease(limit.lease()))
        {
            Ok(in_force) => in_force,
            Err(e) => {
                self.warn_once(&format!("{}\n{rate}\n{burst}", limit.name()), || {
                    format!(
                        "override of limit {:?} ({rate} burst={burst}) ignored: {e}",
                        limit.name()
                    )
                });
                limit.clone()
            }
        }
    }

    /// Builds the table from stored `(field, value)` pairs, reporting each malformed one
    /// once (by `source`, e.g. the Redis key or the file) and leaving it out.
    pub(crate) fn load<'a>(
        &self,
        source: &str,
        entries: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Table {
        let parsed = entries.into_iter().filter_map(|(field, value)| {
            Override::parse(field, value)
                .map_err(|e| {
                    self.warn_once(&format!("{source}\n{field}\n{value}"), || {
                        format!("malformed override {field:?} in {source} ignored: {e}")
                    });
                })
                .ok()
        });
        Table::new(parsed.collect::<Vec<_>>(), SystemTime::now())
    }
}

/// Starts the background task that keeps `overrides` current, on the current runtime (false
/// without one: the caller tries again later; true when there is nothing to keep current): on Redis, the watcher of the overrides hash,
/// which also writes the registered limits; on the in-memory backend, the poller of the
/// `FLUX_OVERRIDES` file, if there is one. `changed` runs whenever the table in force
/// changed. The task ends with the limiter: when `store` or `overrides` is dropped.
pub(crate) fn start(
    overrides: &Arc<Overrides>,
    store: &Arc<Store>,
    prefix: &str,
    changed: impl Fn() + Send + Sync + 'static,
) -> bool {
    let redis = store.redis().is_some();
    if !redis && overrides.file.is_none() {
        // Nothing to keep current: checks never ask again.
        return true;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return false;
    };
    if redis {
        runtime.spawn(redis::watch(
            Arc::downgrade(store),
            prefix.to_owned(),
            Arc::downgrade(overrides),
            changed,
        ));
    } else {
        runtime.spawn(file::watch(Arc::downgrade(overrides)));
    }
    true
}

/// The table the overrides file holds now (`None`: no file).
pub(crate) fn read_file(overrides: &Overrides) -> Option<Table> {
    let path = overrides.file.as_deref()?;
    Some(file::read(overrides, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    static API: Limit = Limit::new("api", Rate::per_second::<10>());
    static OTHER: Limit = Limit::new("other", Rate::per_second::<5>());

    fn overrides(entries: &[(&str, &str)]) -> Overrides {
        let o = Overrides::new(None);
        let table = o.load("test", entries.iter().copied());
        o.replace(table);
        o
    }

    #[test]
    fn the_stored_form_reads_back() {
        let o = Override::new(
            "api",
            Setting::Limited {
                rate: Rate::per_second::<3>(),
                burst: 5,
            },
        )
        .for_key("alice");
        assert_eq!(
            (o.field().as_str(), o.value().as_str()),
            ("api@alice", "3/s burst=5")
        );
        assert_eq!(Override::parse(&o.field(), &o.value()), Ok(o));
        let timed = Override::new("api", Setting::Off).expires_in(Duration::from_secs(60));
        let back = Override::parse(&timed.field(), &timed.value()).expect("parses");
        assert_eq!(back.setting, Setting::Off);
        assert!(back.expires.is_some());
    }

    #[test]
    fn malformed_values_are_refused_with_the_reason() {
        for (value, says) in [
            ("fast", "bad rate"),
            ("3/s burst=x", "burst"),
            ("3/s burst=0", "burst"),
            ("off burst=3", "off"),
            ("3/s cost=1", "cost"),
            ("", "bad rate"),
            ("3/s brust=5", "unknown option \"brust\""),
            ("3/s burst=5 Until=1", "unknown option \"Until\""),
            ("3/s =5", "unknown option \"\""),
            ("3/s burst=2 burst=3", "burst= is given twice"),
            ("off until=1 until=2", "until= is given twice"),
        ] {
            let e = Override::parse("api", value).expect_err(value);
            assert!(e.contains(says), "{value:?}: {e}");
        }
        assert!(Override::parse("@k", "3/s").is_err());
    }

    #[test]
    fn overrides_that_would_read_back_otherwise_are_refused() {
        let now = SystemTime::now();
        let refused = |o: Override, says: &str| {
            let e = o.check(now).expect_err(says).to_string();
            assert!(e.contains(says), "{e}");
        };
        // `a@b` would be read back as the override of `a` for the client key `b`.
        refused(Override::new("a@b", Setting::Off), "'@'");
        refused(Override::new("a@b", Setting::Off).for_key("k"), "'@'");
        refused(Override::new("", Setting::Off), "empty");
        // A TTL past the maximum (or past what a clock holds) is refused, never "for good".
        for ttl in [MAX_TTL + Duration::from_secs(1), Duration::MAX] {
            let o = Override::new("api", Setting::Off).expires_in(ttl);
            assert!(o.expires.is_some());
            refused(o, "365 days");
        }
        let longest = Override::new("api", Setting::Off).expires_in(MAX_TTL);
        assert!(longest.check(SystemTime::now()).is_ok());
        assert!(!longest.value().contains(&u64::MAX.to_string()));
        assert!(Override::new("api", Setting::Off).check(now).is_ok());
    }

    #[test]
    fn a_key_override_wins_over_the_limit_wide_one() {
        let o = overrides(&[("api", "3/s"), ("api@vip", "off"), ("bad", "nonsense")]);
        let plain = o.apply(&Key::new("bob"), std::slice::from_ref(&API));
        let plain = plain.expect("limit-wide override");
        assert_eq!(
            (plain.limits[0].burst(), plain.limits[0].rate()),
            (3, Rate::per_second::<3>())
        );
        let vip = o
            .apply(&Key::new("vip"), &[API.clone(), OTHER.clone()])
            .expect("applies");
        assert_eq!(vip.limits.len(), 1);
        assert_eq!((vip.limits[0].name(), vip.original(0)), ("other", 1));
        assert!(
            o.apply(&Key::new("bob"), std::slice::from_ref(&OTHER))
                .is_none()
        );
    }

    #[test]
    fn an_override_keeps_the_cost_and_the_lease_of_the_code() {
        static HOT: Limit = Limit::new("hot", Rate::per_second::<1000>()).with_lease(50);
        let hot = HOT.clone().with_cost(2).expect("cost within the burst");
        let o = overrides(&[("hot", "300/s burst=100")]);
        let applied = o.apply(&Key::new("k"), &[hot]).expect("applies");
        let in_force = &applied.limits[0];
        assert_eq!((in_force.burst(), in_force.cost()), (100, 2));
        assert_eq!(in_force.lease(), 50);
    }

    #[test]
    fn expired_overrides_are_not_in_force() {
        let o = overrides(&[("api", "3/s until=1000")]);
        assert!(o.is_empty());
    }

    /// A valid override: a name without `@`, any client key as [`Key`] encodes it, a rate
    /// with a burst it admits, an expiry in whole milliseconds (what the stored form holds).
    fn valid_override() -> impl proptest::strategy::Strategy<Value = Override> {
        use proptest::prelude::*;
        let setting = prop_oneof![
            Just(Setting::Off),
            (1u32..=1_000_000, 1u64..=365 * 86_400_000, 1u32..=u32::MAX).prop_filter_map(
                "a valid rate and burst",
                |(count, period_ms, burst)| {
                    let rate = Rate::from_parts(count, period_ms * 1_000)?;
                    flux_core::check_limit(rate, burst, 1).ok()?;
                    Some(Setting::Limited { rate, burst })
                }
            ),
        ];
        let name = "[^@]{1,40}";
        let key = proptest::option::of(proptest::collection::vec(any::<u8>(), 0..80));
        let expires = proptest::option::of(0u64..=4_102_444_800_000);
        (name, key, setting, expires).prop_map(|(name, key, setting, expires)| {
            let mut o = Override::new(name, setting);
            if let Some(key) = key {
                o = o.for_key(Key::new(key));
            }
            o.expires = expires.map(|ms| UNIX_EPOCH + Duration::from_millis(ms));
            o
        })
    }

    proptest::proptest! {
        #[test]
        fn any_stored_field_and_value_is_read_without_panic(
            field in "\\PC{0,40}",
            value in "\\PC{0,60}",
        ) {
            let _ = Override::parse(&field, &value);
        }

        #[test]
        fn words_like_the_stored_form_are_read_without_panic(
            words in proptest::collection::vec(
                "(off|[0-9]{1,12}/[0-9]{0,4}(ms|s|min|h|day|x)?|per|(burst|cost|until|brust)=[0-9]{0,22}|=|@)",
                0..6,
            ),
        ) {
            let value = words.join(" ");
            let _ = Override::parse("api", &value);
            let _ = Stored::parse(&value);
        }

        #[test]
        fn a_valid_override_reads_back_as_it_was_stored(o in valid_override()) {
            let back = Override::parse(&o.field(), &o.value());
            proptest::prop_assert_eq!(back, Ok(o));
        }
    }
}
