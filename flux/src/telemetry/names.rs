//! The cap on distinct limit names built at run time (`Limit::named(String)`): the first
//! [`MAX_LIMIT_NAMES`] of them are shown by their names, in the `limit` label of the metrics,
//! in the registry of declared limits (`<prefix>:limits`) and in the throttled log lines;
//! every later one is still enforced (its buckets are its own) but is shown as
//! [`OTHER`] and never registered. Names known when the program was compiled (`'static`,
//! as `#[rate_limit]` and `Limit::new` give) are bounded by the program and always shown.
//!
//! One set per process, as the metrics recorder is one per process.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, PoisonError, RwLock};

/// Distinct limit names built at run time that a process shows by name: in the `limit`
/// label of `flux_decisions_total` and `flux_concurrency_in_flight`, in the registry of
/// declared limits that `flux limits` lists, and in log lines. Past it, a new name is
/// still enforced as any other, but reported under the label value `_other` and not
/// registered (one WARN says so, once per process).
///
/// Names known at compile time (`#[rate_limit]`, [`Limit::new`](crate::Limit::new),
/// `Limit::named` of a `&'static str`) do not count: the program bounds them.
///
/// ```
/// use flux::{Limit, Rate};
///
/// assert_eq!(flux::limit::MAX_LIMIT_NAMES, 1_000);
/// // Counts against the cap: a name made at run time.
/// let tenant = Limit::named(format!("export-{}", 42), Rate::per_minute::<10>());
/// // Does not: a name written in the code.
/// static SEARCH: Limit = Limit::new("search", Rate::per_second::<100>());
/// # let _ = (tenant, &SEARCH);
/// ```
pub const MAX_LIMIT_NAMES: usize = 1_000;

/// What a runtime name past [`MAX_LIMIT_NAMES`] is shown as.
pub(crate) const OTHER: &str = "_other";

/// A bounded set of names: those admitted, first come first served.
pub(crate) struct Names {
    max: usize,
    admitted: RwLock<HashSet<Box<str>>>,
    /// Whether the first refusal was logged.
    warned: AtomicBool,
}

impl Names {
    pub(crate) fn new(max: usize) -> Names {
        Names {
            max,
            admitted: RwLock::new(HashSet::new()),
            warned: AtomicBool::new(false),
        }
    }

    /// Whether `name` is shown by its name: a `'static` one always, a runtime one if it is
    /// among the first `max`. False at most `max` times, never again, for each new name.
    /// The first refusal is logged.
    #[allow(clippy::ptr_arg)] // the Cow tells a 'static name from a runtime one
    pub(crate) fn admits(&self, name: &Cow<'static, str>) -> bool {
        let Cow::Owned(name) = name else {
            return true;
        };
        if self
            .admitted
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(name.as_str())
        {
            return true;
        }
        let mut admitted = self
            .admitted
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if admitted.len() < self.max {
            admitted.insert(name.as_str().into());
            return true;
        }
        if admitted.contains(name.as_str()) {
            return true;
        }
        drop(admitted);
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                target: "flux",
                cap = self.max,
                "more than {} distinct limit names built at run time: the next ones are still \
                 enforced, but reported as limit=\"{OTHER}\" and not registered in Redis",
                self.max
            );
        }
        false
    }
}

/// The process' set of runtime limit names shown by name.
static NAMES: LazyLock<Names> = LazyLock::new(|| Names::new(MAX_LIMIT_NAMES));

/// Whether the limit named `name` is shown by its name (see [`MAX_LIMIT_NAMES`]).
#[allow(clippy::ptr_arg)] // as `Names::admits`
pub(crate) fn admitted(name: &Cow<'static, str>) -> bool {
    NAMES.admits(name)
}

/// The name the limit named `name` is shown as: its own, or [`OTHER`].
#[allow(clippy::ptr_arg)] // the Cow tells a 'static name from a runtime one
pub(crate) fn shown<'a>(name: &'a Cow<'static, str>) -> &'a str {
    if admitted(name) { name } else { OTHER }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_names_past_the_cap_are_refused_and_static_ones_never() {
        let names = Names::new(3);
        let owned = |n: usize| Cow::Owned(format!("tenant-{n}"));
        for n in 0..3 {
            assert!(names.admits(&owned(n)));
        }
        for n in 3..100 {
            assert!(!names.admits(&owned(n)), "{n}");
        }
        // Those admitted stay admitted; compile-time names are not counted.
        assert!(names.admits(&owned(1)));
        assert!(names.admits(&Cow::Borrowed("search")));
        assert_eq!(names.admitted.read().expect("not poisoned").len(), 3);
    }
}
