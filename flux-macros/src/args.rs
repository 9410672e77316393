//! Parsing and validation of `#[rate_limit(...)]` arguments.
//!
//! Every value is checked where it is parsed, with the error on the offending token; the
//! checks that involve several values (cost > burst, bucket too long) and several stacked
//! attributes (shared key, distinct names) run afterwards, still pointing at one argument.

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::ToTokens;
use syn::parse::{ParseStream, Parser};
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, Lit, LitInt, LitStr};

use crate::rate::Rate;

/// The options `#[rate_limit]` accepts, in the order the docs list them.
const OPTIONS: [&str; 7] = ["rate", "burst", "key", "cost", "name", "on_error", "deny"];

use crate::rate::MAX_TOLERANCE_US;

/// A parsed option: where it was written (the value, for errors) and what it says.
type Slot<T> = Option<(Span, T)>;

/// Errors collected while parsing, reported together.
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
}

/// Which client a limit counts.
#[derive(Clone)]
pub(crate) enum KeySpec {
    /// `"ip"`: the peer address (or the forwarded one behind trusted proxies).
    Ip,
    /// `"global"`: one bucket for everybody.
    Global,
    /// `"header:NAME"`, the name lowercased and validated.
    Header(String),
    /// Any expression over the fn's arguments, evaluated (borrowed) before the body.
    Expr(Box<Expr>),
}

impl KeySpec {
    /// Equal as written (expressions compared token by token).
    fn same_as(&self, other: &KeySpec) -> bool {
        match (self, other) {
            (KeySpec::Ip, KeySpec::Ip) | (KeySpec::Global, KeySpec::Global) => true,
            (KeySpec::Header(a), KeySpec::Header(b)) => a == b,
            (KeySpec::Expr(a), KeySpec::Expr(b)) => {
                a.to_token_stream().to_string() == b.to_token_stream().to_string()
            }
            _ => false,
        }
    }
}

/// `on_error = "..."`: `flux::FailurePolicy`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Policy {
    Open,
    Closed,
    Local,
}

impl Policy {
    pub(crate) fn variant(self) -> &'static str {
        match self {
            Policy::Open => "Open",
            Policy::Closed => "Closed",
            Policy::Local => "Local",
        }
    }
}

/// `deny = "..."`: which expansion applies.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Deny {
    /// An axum handler: a denial is a 429 response.
    Response,
    /// A plain async fn returning `Result`: a denial is `Err(From::from(RateLimited))`.
    Error,
}

/// The arguments of one `#[rate_limit(...)]`, as written.
#[derive(Default)]
pub(crate) struct Args {
    rate: Slot<Rate>,
    burst: Slot<u32>,
    cost: Slot<u32>,
    name: Slot<String>,
    key: Slot<KeySpec>,
    on_error: Slot<Policy>,
    deny: Slot<Deny>,
    /// Options written, valid or not: a second one is a duplicate.
    seen: Vec<String>,
    /// Some value was invalid (and reported): skip the checks that combine values.
    invalid: bool,
}

/// One limit, validated: what `Limit::__from_macro` receives.
pub(crate) struct LimitSpec {
    /// The explicit `name`, if any.
    pub(crate) name: Option<String>,
    pub(crate) count: u32,
    pub(crate) period_us: u64,
    pub(crate) burst: u32,
    pub(crate) cost: u32,
    /// The `rate` literal, where the generated `Limit` is spanned.
    pub(crate) span: Span,
}

/// A whole stack of `#[rate_limit]` attributes on one fn, validated: one check.
pub(crate) struct Stack {
    pub(crate) limits: Vec<LimitSpec>,
    pub(crate) key: Option<(Span, KeySpec)>,
    pub(crate) on_error: Option<Policy>,
    pub(crate) deny: Deny,
    /// The `deny` literal, if written.
    pub(crate) deny_span: Option<Span>,
}

/// Parses the arguments of one attribute. Syntax errors end the parse; invalid values are
/// collected into `errors` and parsing goes on, so one build reports every mistake.
pub(crate) fn parse(tokens: TokenStream, errors: &mut Errors) -> Args {
    let mut args = Args::default();
    let parser = syn::meta::parser(|meta| {
        let Some(ident) = meta.path.get_ident() else {
            errors.push_at(
                meta.path.span(),
                format!("unknown option: expected one of {}", list(&OPTIONS)),
            );
            args.invalid = true;
            return skip_value(meta.input);
        };
        let option = ident.to_string();
        if !OPTIONS.contains(&option.as_str()) {
            errors.push_at(ident.span(), unknown_option(&option));
            args.invalid = true;
            return skip_value(meta.input);
        }
        if args.seen.contains(&option) {
            errors.push_at(ident.span(), format!("duplicate option `{option}`"));
            args.invalid = true;
            return skip_value(meta.input);
        }
        args.seen.push(option.clone());
        let value: Expr = meta.value()?.parse()?;
        let mut invalid = |e: syn::Error| {
            args.invalid = true;
            errors.push(e);
        };
        match option.as_str() {
            "rate" => args.rate = parse_rate(&value).map_err(&mut invalid).ok(),
            "burst" => args.burst = parse_count(&value, "burst").map_err(&mut invalid).ok(),
            "cost" => args.cost = parse_count(&value, "cost").map_err(&mut invalid).ok(),
            "name" => args.name = parse_name(&value).map_err(&mut invalid).ok(),
            "key" => args.key = parse_key(value).map_err(&mut invalid).ok(),
            "on_error" => {
                args.on_error = parse_choice(
                    &value,
                    "on_error",
                    &[
                        ("open", Policy::Open),
                        ("closed", Policy::Closed),
                        ("local", Policy::Local),
                    ],
                )
                .map_err(&mut invalid)
                .ok()
            }
            _ => {
                args.deny = parse_choice(
                    &value,
                    "deny",
                    &[("response", Deny::Response), ("error", Deny::Error)],
                )
                .map_err(&mut invalid)
                .ok()
            }
        }
        Ok(())
    });
    if let Err(e) = parser.parse2(tokens) {
        args.invalid = true;
        errors.push(e);
    }
    args
}

/// Consumes the rest of an option (`= value`, `(...)`, anything) up to the next top-level
/// comma, after an error has been recorded for it.
fn skip_value(input: ParseStream<'_>) -> syn::Result<()> {
    input.step(|cursor| {
        let mut rest = *cursor;
        while let Some((tree, next)) = rest.token_tree() {
            if matches!(&tree, TokenTree::Punct(p) if p.as_char() == ',') {
                break;
            }
            rest = next;
        }
        Ok(((), rest))
    })
}

fn list(options: &[&str]) -> String {
    options
        .iter()
        .map(|o| format!("`{o}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn unknown_option(option: &str) -> String {
    let closest = OPTIONS
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
        list(&OPTIONS)
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

/// The string literal of option `option`, or an error on the value.
fn lit_str<'a>(value: &'a Expr, option: &str, example: &str) -> syn::Result<&'a LitStr> {
    match value {
        Expr::Lit(ExprLit {
            lit: Lit::Str(lit), ..
        }) => Ok(lit),
        _ => Err(syn::Error::new(
            value.span(),
            format!("`{option}` must be a string literal, such as `{option} = {example}`"),
        )),
    }
}

fn parse_rate(value: &Expr) -> syn::Result<(Span, Rate)> {
    let lit = lit_str(value, "rate", "\"100/s\"")?;
    let rate = lit
        .value()
        .parse::<Rate>()
        .map_err(|e| syn::Error::new(lit.span(), e))?;
    Ok((lit.span(), rate))
}

fn parse_count(value: &Expr, option: &str) -> syn::Result<(Span, u32)> {
    let wrong = || {
        syn::Error::new(
            value.span(),
            format!("`{option}` must be a positive integer literal, such as `{option} = 10`"),
        )
    };
    let lit: &LitInt = match value {
        Expr::Lit(ExprLit {
            lit: Lit::Int(lit), ..
        }) => lit,
        _ => return Err(wrong()),
    };
    let n = lit.base10_parse::<u64>().map_err(|_| wrong())?;
    let n = u32::try_from(n).map_err(|_| {
        syn::Error::new(
            lit.span(),
            format!("`{option}` must be at most {}", u32::MAX),
        )
    })?;
    if n == 0 {
        return Err(syn::Error::new(
            lit.span(),
            format!("`{option}` must be at least 1"),
        ));
    }
    Ok((lit.span(), n))
}

fn parse_name(value: &Expr) -> syn::Result<(Span, String)> {
    let lit = lit_str(value, "name", "\"search\"")?;
    let name = lit.value();
    if name.trim().is_empty() {
        return Err(syn::Error::new(lit.span(), "`name` must not be empty"));
    }
    Ok((lit.span(), name))
}

fn parse_choice<T: Copy>(
    value: &Expr,
    option: &str,
    choices: &[(&str, T)],
) -> syn::Result<(Span, T)> {
    let names: Vec<String> = choices.iter().map(|(n, _)| format!("\"{n}\"")).collect();
    let expected = names.join(", ");
    let lit = match value {
        Expr::Lit(ExprLit {
            lit: Lit::Str(lit), ..
        }) => lit,
        _ => {
            return Err(syn::Error::new(
                value.span(),
                format!("`{option}` must be a string literal: one of {expected}"),
            ));
        }
    };
    let text = lit.value();
    choices
        .iter()
        .find(|(n, _)| *n == text)
        .map(|(_, v)| (lit.span(), *v))
        .ok_or_else(|| {
            syn::Error::new(
                lit.span(),
                format!("unknown {option} {text:?}: expected one of {expected}"),
            )
        })
}

fn parse_key(value: Expr) -> syn::Result<(Span, KeySpec)> {
    let span = value.span();
    let lit = match &value {
        Expr::Lit(ExprLit {
            lit: Lit::Str(lit), ..
        }) => lit,
        _ => return Ok((span, KeySpec::Expr(Box::new(value)))),
    };
    let text = lit.value();
    let spec = match text.as_str() {
        "ip" => KeySpec::Ip,
        "global" => KeySpec::Global,
        _ => match text.strip_prefix("header:") {
            Some(name) => KeySpec::Header(header_name(name.trim(), lit)?),
            None => {
                return Err(syn::Error::new(
                    lit.span(),
                    format!(
                        "unknown key {text:?}: expected \"ip\", \"global\", \"header:NAME\", \
                         or a Rust expression over the fn's arguments (without quotes), \
                         such as `key = user.id`"
                    ),
                ));
            }
        },
    };
    Ok((span, spec))
}

/// A valid HTTP field name (RFC 9110 `token`), lowercased as `http::HeaderName` stores it.
fn header_name(name: &str, lit: &LitStr) -> syn::Result<String> {
    let is_tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() {
        return Err(syn::Error::new(
            lit.span(),
            "missing header name: expected \"header:NAME\", such as \"header:x-api-key\"",
        ));
    }
    if let Some(bad) = name.chars().find(|c| !is_tchar(*c)) {
        return Err(syn::Error::new(
            lit.span(),
            format!(
                "invalid header name {name:?}: {bad:?} is not allowed in an HTTP field name \
                 (letters, digits and !#$%&'*+-.^_`|~ only)"
            ),
        ));
    }
    Ok(name.to_ascii_lowercase())
}

/// Checks one attribute's values against each other. `attr_span` is where a missing `rate`
/// is reported.
fn limit(args: &Args, attr_span: Span, errors: &mut Errors) -> Option<LimitSpec> {
    if args.invalid {
        return None; // already reported; the defaults would make up new mistakes
    }
    let Some((rate_span, rate)) = args.rate else {
        errors.push_at(
            attr_span,
            "missing `rate`: add the sustained rate, such as `rate = \"100/s\"`",
        );
        return None;
    };
    let (burst_span, burst) = args.burst.unwrap_or((rate_span, rate.count()));
    let (cost_span, cost) = args.cost.unwrap_or((rate_span, 1));
    if cost > burst {
        errors.push_at(
            cost_span,
            format!(
                "cost {cost} is larger than burst {burst}: such a request could never be admitted"
            ),
        );
        return None;
    }
    let tolerance = u64::from(burst).checked_mul(rate.emission_interval_micros());
    if tolerance.is_none_or(|t| t > MAX_TOLERANCE_US) {
        errors.push_at(
            burst_span,
            format!(
                "burst {burst} at this rate takes more than 10 years to refill \
                 (burst x period / count): lower the burst or raise the rate"
            ),
        );
        return None;
    }
    Some(LimitSpec {
        name: args.name.as_ref().map(|(_, n)| n.clone()),
        count: rate.count(),
        period_us: rate.period_micros(),
        burst,
        cost,
        span: rate_span,
    })
}

/// Validates a stack of attributes: `first` is the outermost, the one being expanded, and
/// `rest` the others, in order; each comes with the span where a missing `rate` is reported.
///
/// `key`, `on_error` and `deny` describe the one check and are set on the first attribute;
/// a later one may repeat the same value (copy-pasted attributes compile) but not change it.
pub(crate) fn stack(first: &(Span, Args), rest: &[(Span, Args)], errors: &mut Errors) -> Stack {
    let mut limits = Vec::new();
    let mut names: Vec<&(Span, String)> = Vec::new();
    for (attr_span, args) in std::iter::once(first).chain(rest) {
        if let Some(spec) = limit(args, *attr_span, errors) {
            limits.push(spec);
        }
        if let Some(named) = &args.name {
            if names.iter().any(|(_, n)| *n == named.1) {
                errors.push_at(
                    named.0,
                    format!(
                        "two stacked limits are named {:?}: they would be one bucket, charged twice",
                        named.1
                    ),
                );
            }
            names.push(named);
        }
    }
    let first = &first.1;
    for (_, args) in rest {
        shared(&first.key, &args.key, "key", KeySpec::same_as, errors);
        shared(
            &first.on_error,
            &args.on_error,
            "on_error",
            PartialEq::eq,
            errors,
        );
        shared(&first.deny, &args.deny, "deny", PartialEq::eq, errors);
    }

    let deny = first.deny.as_ref().map_or(Deny::Response, |(_, d)| *d);
    let deny_span = first.deny.as_ref().map(|(s, _)| *s);
    if deny == Deny::Error {
        match &first.key {
            None => errors.push_at(
                deny_span.unwrap_or_else(Span::call_site),
                "`deny = \"error\"` needs an explicit `key`: an expression over the fn's \
                 arguments (such as `key = tenant`) or \"global\"",
            ),
            Some((span, KeySpec::Ip | KeySpec::Header(_))) => errors.push_at(
                *span,
                "this key needs an HTTP request, but `deny = \"error\"` limits a plain async fn: \
                 use an expression over the fn's arguments (such as `key = tenant`) or \"global\", \
                 or drop `deny = \"error\"` for an axum handler",
            ),
            Some(_) => {}
        }
    }
    Stack {
        limits,
        key: first.key.clone(),
        on_error: first.on_error.map(|(_, p)| p),
        deny,
        deny_span,
    }
}

/// A later attribute's `option` must be absent or equal to the first attribute's.
fn shared<T>(
    first: &Slot<T>,
    later: &Slot<T>,
    option: &str,
    same: impl Fn(&T, &T) -> bool,
    errors: &mut Errors,
) {
    match (first, later) {
        (_, None) => {}
        (None, Some((span, _))) => errors.push_at(
            *span,
            format!(
                "`{option}` applies to all stacked #[rate_limit] attributes of this fn (one check): \
                 set it on the first one"
            ),
        ),
        (Some((_, a)), Some((span, b))) => {
            if !same(a, b) {
                errors.push_at(
                    *span,
                    format!(
                        "stacked #[rate_limit] attributes share one `{option}` (one check): \
                         this differs from the first attribute's; drop it here or make it equal"
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn parse_ok(tokens: TokenStream) -> Args {
        let mut errors = Errors::default();
        let args = parse(tokens, &mut errors);
        if let Err(e) = errors.finish() {
            panic!("{e}");
        }
        args
    }

    fn stack_of(attrs: Vec<TokenStream>) -> syn::Result<Stack> {
        let mut errors = Errors::default();
        let mut parsed: Vec<(Span, Args)> = attrs
            .into_iter()
            .map(|t| (Span::call_site(), parse(t, &mut errors)))
            .collect();
        let first = parsed.remove(0);
        let stack = stack(&first, &parsed, &mut errors);
        errors.finish().map(|()| stack)
    }

    #[test]
    fn suggests_the_closest_option() {
        assert!(unknown_option("brust").contains("did you mean `burst`"));
        assert!(unknown_option("on_eror").contains("`on_error`"));
        assert!(unknown_option("Rate").contains("did you mean `rate`"));
        assert!(!unknown_option("zzzzzzzz").contains("did you mean"));
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "key"), 3);
    }

    #[test]
    fn defaults_and_header_names() {
        let args = parse_ok(quote!(rate = "6000 per minute", key = "header:X-Api-Key"));
        assert!(matches!(&args.key, Some((_, KeySpec::Header(h))) if h == "x-api-key"));
        let stack = stack_of(vec![quote!(rate = "6000 per minute")]).expect("valid");
        let limit = &stack.limits[0];
        assert_eq!((limit.count, limit.period_us), (6000, 60_000_000));
        assert_eq!((limit.burst, limit.cost), (6000, 1));
        assert_eq!(stack.deny, Deny::Response);
        assert!(stack.key.is_none() && stack.on_error.is_none());
    }

    #[test]
    fn stacked_attributes_share_key_policy_and_deny() {
        // Repeating the first attribute's values is fine.
        let ok = stack_of(vec![
            quote!(rate = "5/s", key = user.id, on_error = "local"),
            quote!(rate = "100/h", key = user.id, on_error = "local"),
            quote!(rate = "1000/day"),
        ])
        .expect("valid");
        assert_eq!(ok.limits.len(), 3);
        assert!(ok.on_error == Some(Policy::Local));
        for later in [
            quote!(rate = "100/h", key = user.name),
            quote!(rate = "100/h", deny = "response"),
            quote!(rate = "100/h", on_error = "open"),
        ] {
            let first = quote!(rate = "5/s", key = user.id, on_error = "local");
            assert!(stack_of(vec![first, later]).is_err());
        }
    }

    #[test]
    fn every_mistake_is_reported() {
        let err = stack_of(vec![quote!(rate = "1/x", burst = 0, cost = "2", nme = "a")])
            .err()
            .expect("invalid");
        let messages: Vec<String> = err.into_iter().map(|e| e.to_string()).collect();
        assert_eq!(messages.len(), 4, "{messages:?}");
        assert!(messages[3].contains("did you mean `name`"), "{messages:?}");
    }
}
