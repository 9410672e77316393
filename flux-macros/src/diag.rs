//! Diagnostics shared by every stage: the [`Errors`] collector, so that one build reports
//! every mistake, and the wording helpers for lists of valid options.

use proc_macro2::{Span, TokenStream};

/// Errors collected while parsing and checking, reported together.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    pub(crate) fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(first) => first.combine(error),
            None => self.0 = Some(error),
        }
    }

    pub(crate) fn push_at(&mut self, span: Span, message: impl std::fmt::Display) {
        self.push(syn::Error::new(span, message));
    }

    pub(crate) fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }

    /// `item` followed by one `compile_error!` per collected error (nothing when there is
    /// none), so that one mistake reports once and the rest of the crate, and the IDE,
    /// still see the item.
    pub(crate) fn after(self, mut item: TokenStream) -> TokenStream {
        if let Some(errors) = self.0 {
            item.extend(errors.into_compile_error());
        }
        item
    }
}

/// `` `a`, `b`, `c` ``.
pub(crate) fn list(options: &[&str]) -> String {
    options
        .iter()
        .map(|o| format!("`{o}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The message for an unknown option, with the closest valid one when it is close enough
/// to be a typo.
pub(crate) fn unknown_option(option: &str, valid: &[&str]) -> String {
    let closest = valid
        .iter()
        .map(|candidate| (edit_distance(option, candidate), *candidate))
        .min();
    let hint = match closest {
        Some((distance, candidate)) if distance <= (candidate.len() / 3).max(2) => {
            format!("; did you mean `{candidate}`?")
        }
        _ => String::new(),
    };
    format!(
        "unknown option `{option}`{hint} (valid options: {})",
        list(valid)
    )
}

/// Levenshtein distance (insertions, deletions, substitutions), case-insensitive.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != cb);
            current[j + 1] = substitute.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTIONS: [&str; 3] = ["rate", "burst", "on_error"];

    #[test]
    fn suggests_the_closest_option() {
        assert!(unknown_option("brust", &OPTIONS).contains("did you mean `burst`"));
        assert!(unknown_option("on_eror", &OPTIONS).contains("`on_error`"));
        assert!(unknown_option("Rate", &OPTIONS).contains("did you mean `rate`"));
        assert!(!unknown_option("zzzzzzzz", &OPTIONS).contains("did you mean"));
        assert!(
            unknown_option("x", &OPTIONS).ends_with("(valid options: `rate`, `burst`, `on_error`)")
        );
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "key"), 3);
    }
}
