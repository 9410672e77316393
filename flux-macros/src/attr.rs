//! Parsing one `#[rate_limit(...)]` or `#[concurrency_limit(...)]` attribute's arguments into
//! [`Args`]: the options they share (`key`, `name`, `on_error`, `mode`, `exempt`, `crate`)
//! are parsed by the same code.
//!
//! Each value is checked where it is parsed, with the error on the offending token: its
//! type, its grammar (a rate, with the runtime's parser; a header name; a path; a choice).
//! A limit's bounds (zero burst or cost included, with the runtime's `check_limit`) and
//! the checks that involve several stacked attributes belong to `valid`.

use proc_macro2::{Span, TokenStream, TokenTree};
use syn::parse::{ParseStream, Parser};
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, Lit, LitInt, LitStr};

use crate::diag::{Errors, list, unknown_option};
use flux_core::Rate;

/// The options `#[rate_limit]` accepts, in the order the docs list them.
const OPTIONS: [&str; 11] = [
    "rate", "burst", "limit", "cost", "key", "name", "on_error", "mode", "exempt", "deny", "crate",
];

/// The options `#[concurrency_limit]` accepts, in the order the docs list them.
const CONCURRENCY_OPTIONS: [&str; 8] = [
    "max", "lease", "key", "name", "on_error", "mode", "exempt", "crate",
];

/// Which attribute: they share their parser, checks and expansion.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub(crate) enum Kind {
    #[default]
    RateLimit,
    ConcurrencyLimit,
}

impl Kind {
    /// The attribute's name, as written.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::RateLimit => "rate_limit",
            Kind::ConcurrencyLimit => "concurrency_limit",
        }
    }

    fn options(self) -> &'static [&'static str] {
        match self {
            Kind::RateLimit => &OPTIONS,
            Kind::ConcurrencyLimit => &CONCURRENCY_OPTIONS,
        }
    }
}

/// A parsed option: where it was written (the value, for errors) and what it says.
pub(crate) type Slot<T> = Option<(Span, T)>;

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

/// `cost = ...`: tokens each request takes.
#[derive(Clone)]
pub(crate) enum Cost {
    /// An integer literal, checked against the burst at compile time (when the burst is
    /// known there).
    Literal(u32),
    /// Any expression over the fn's arguments yielding a primitive integer, evaluated
    /// (borrowed) before the body and checked per request.
    Expr(Box<Expr>),
}

/// `on_error = "..."`: `flux::FailurePolicy`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
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

/// `mode = "..."`: whether the check enforces its answer.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Mode {
    /// Deny what the limits deny, even when the limiter runs in shadow mode.
    Enforce,
    /// Decide, charge and count, but never deny.
    Shadow,
}

/// `deny = "..."`: which expansion applies.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Deny {
    /// An axum handler: a denial is a 429 response.
    Response,
    /// A plain async fn returning `Result`: a denial is `Err(From::from(RateLimited))`.
    Error,
}

/// The arguments of one attribute, as written.
#[derive(Default)]
pub(crate) struct Args {
    pub(crate) kind: Kind,
    pub(crate) rate: Slot<Rate>,
    pub(crate) burst: Slot<u32>,
    /// `limit = EXPR`: the `Limit` to apply, computed per request, instead of rate and burst.
    pub(crate) limit: Slot<Box<Expr>>,
    pub(crate) cost: Slot<Cost>,
    pub(crate) name: Slot<String>,
    pub(crate) key: Slot<KeySpec>,
    pub(crate) on_error: Slot<Policy>,
    pub(crate) mode: Slot<Mode>,
    /// `exempt = EXPR`: a `bool` over the fn's arguments; true skips the check.
    pub(crate) exempt: Slot<Box<Expr>>,
    pub(crate) deny: Slot<Deny>,
    /// `crate = "..."`: the path of the runtime crate.
    pub(crate) krate: Slot<syn::Path>,
    /// `max = N` of `#[concurrency_limit]`.
    pub(crate) max: Slot<u32>,
    /// `lease = "30s"` of `#[concurrency_limit]`, in milliseconds.
    pub(crate) lease: Slot<u64>,
    /// Options written, valid or not: a second one is a duplicate.
    seen: Vec<&'static str>,
    /// Options whose value was invalid (and reported), so their slot is empty.
    invalid: Vec<&'static str>,
    /// An unknown option or a syntax error was reported: any option may be missing.
    incomplete: bool,
}

impl Args {
    /// Whether `option`'s slot may be empty because of a mistake already reported (its value
    /// was invalid, or it was misspelt or lost to a syntax error) rather than because it was
    /// left out: the checks that combine values must not read a default into it.
    pub(crate) fn may_lack(&self, option: &str) -> bool {
        self.incomplete || self.invalid.contains(&option)
    }
}

/// Parses the arguments of one attribute of `kind`. Syntax errors end the parse; invalid
/// values are collected into `errors` and parsing goes on, so one build reports every mistake.
pub(crate) fn parse(kind: Kind, tokens: TokenStream, errors: &mut Errors) -> Args {
    let mut args = Args {
        kind,
        ..Args::default()
    };
    let options = kind.options();
    let parser = syn::meta::parser(|meta| {
        let Some(ident) = meta.path.get_ident() else {
            errors.push_at(
                meta.path.span(),
                format!("unknown option: expected one of {}", list(options)),
            );
            args.incomplete = true;
            return skip_value(meta.input);
        };
        let written = ident.to_string();
        let Some(&option) = options.iter().find(|o| **o == written) else {
            errors.push_at(ident.span(), unknown_option(&written, options));
            args.incomplete = true;
            return skip_value(meta.input);
        };
        if args.seen.contains(&option) {
            // The first value stands.
            errors.push_at(ident.span(), format!("duplicate option `{option}`"));
            return skip_value(meta.input);
        }
        args.seen.push(option);
        let value: Expr = meta.value()?.parse()?;
        let mut invalid = |e: syn::Error| {
            args.invalid.push(option);
            errors.push(e);
        };
        match option {
            "rate" => args.rate = parse_rate(&value).map_err(&mut invalid).ok(),
            "burst" => args.burst = parse_count(&value, "burst").map_err(&mut invalid).ok(),
            "max" => args.max = parse_count(&value, "max").map_err(&mut invalid).ok(),
            "lease" => args.lease = parse_lease(&value).map_err(&mut invalid).ok(),
            "cost" => args.cost = parse_cost(value).map_err(&mut invalid).ok(),
            "limit" => args.limit = parse_limit(value).map_err(&mut invalid).ok(),
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
            "mode" => {
                args.mode = parse_choice(
                    &value,
                    "mode",
                    &[("enforce", Mode::Enforce), ("shadow", Mode::Shadow)],
                )
                .map_err(&mut invalid)
                .ok()
            }
            "exempt" => args.exempt = Some((value.span(), Box::new(value))),
            "deny" => {
                args.deny = parse_choice(
                    &value,
                    "deny",
                    &[("response", Deny::Response), ("error", Deny::Error)],
                )
                .map_err(&mut invalid)
                .ok()
            }
            _ => args.krate = parse_crate(&value).map_err(&mut invalid).ok(),
        }
        Ok(())
    });
    if let Err(e) = parser.parse2(tokens) {
        args.incomplete = true;
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

/// `lease = "30s"`, with the runtime's grammar and bounds (`flux_core::parse_lease`).
fn parse_lease(value: &Expr) -> syn::Result<(Span, u64)> {
    let lit = lit_str(value, "lease", "\"30s\"")?;
    let lease = flux_core::parse_lease(&lit.value()).map_err(|e| syn::Error::new(lit.span(), e))?;
    Ok((lit.span(), lease.as_millis() as u64))
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
    // Zero is a limit's mistake, not a literal's: `valid` reports it with the runtime's words.
    let n = u32::try_from(n).map_err(|_| {
        syn::Error::new(
            lit.span(),
            format!("`{option}` must be at most {}", u32::MAX),
        )
    })?;
    Ok((lit.span(), n))
}

/// `cost = 3` (a literal, as `burst`) or `cost = <expression>`. A literal that is not a
/// positive integer (a string, `-1`, `1.5`) is an error here: only an expression is left to
/// the run time.
fn parse_cost(value: Expr) -> syn::Result<(Span, Cost)> {
    if is_literal(&value) {
        let (span, n) = parse_count(&value, "cost")?;
        return Ok((span, Cost::Literal(n)));
    }
    Ok((value.span(), Cost::Expr(Box::new(value))))
}

/// A literal, or a negated one.
fn is_literal(value: &Expr) -> bool {
    match value {
        Expr::Lit(_) => true,
        Expr::Unary(unary) => matches!(unary.op, syn::UnOp::Neg(_)) && is_literal(&unary.expr),
        _ => false,
    }
}

/// `limit = <expression>`: anything but a literal (a string here would be a rate, which
/// `rate` takes).
fn parse_limit(value: Expr) -> syn::Result<(Span, Box<Expr>)> {
    if is_literal(&value) {
        return Err(syn::Error::new(
            value.span(),
            "`limit` must be a Rust expression over the fn's arguments giving a \
             `flux::Limit` (or a reference to one), such as `limit = user.plan.limit()`; \
             a literal rate goes in `rate = \"100/s\"`",
        ));
    }
    Ok((value.span(), Box::new(value)))
}

fn parse_name(value: &Expr) -> syn::Result<(Span, String)> {
    let lit = lit_str(value, "name", "\"search\"")?;
    let name = lit.value();
    if name.trim().is_empty() {
        return Err(syn::Error::new(lit.span(), "`name` must not be empty"));
    }
    Ok((lit.span(), name))
}

/// `crate = "my_flux"`: a path such as `use` takes (no generic arguments).
fn parse_crate(value: &Expr) -> syn::Result<(Span, syn::Path)> {
    let lit = lit_str(value, "crate", "\"my_flux\"")?;
    let path = lit.parse_with(syn::Path::parse_mod_style).map_err(|_| {
        syn::Error::new(
            lit.span(),
            format!(
                "invalid crate path {:?}: expected the path of the flux runtime crate as this \
                 crate names it, such as \"my_flux\" or \"::my_flux\"",
                lit.value()
            ),
        )
    })?;
    Ok((lit.span(), path))
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

#[cfg(test)]
mod tests {
    use super::*;
    use quote::{ToTokens, quote};

    /// The arguments, which must be free of mistakes.
    fn parse_ok(tokens: TokenStream) -> Args {
        let mut errors = Errors::default();
        let args = parse(Kind::RateLimit, tokens, &mut errors);
        if let Err(e) = errors.finish() {
            panic!("{e}");
        }
        args
    }

    fn parse_err(tokens: TokenStream) -> Vec<String> {
        let mut errors = Errors::default();
        parse(Kind::RateLimit, tokens, &mut errors);
        match errors.finish() {
            Ok(()) => panic!("no error"),
            Err(e) => e.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn header_names_are_checked_and_lowercased() {
        let args = parse_ok(quote!(rate = "6000 per minute", key = "header:X-Api-Key"));
        assert!(matches!(&args.key, Some((_, KeySpec::Header(h))) if h == "x-api-key"));
        assert!(parse_err(quote!(rate = "1/s", key = "header:")).len() == 1);
        assert!(parse_err(quote!(rate = "1/s", key = "header:a b"))[0].contains("' '"));
    }

    #[test]
    fn crate_is_a_path() {
        for path in ["my_flux", "::my_flux", "crate::deps::flux", "r#async"] {
            let args = parse_ok(quote!(rate = "1/s", crate = #path));
            let parsed = args.krate.map(|(_, p)| p.to_token_stream().to_string());
            assert_eq!(parsed.map(|p| p.replace(' ', "")).as_deref(), Some(path));
        }
        for path in ["", "my flux", "my_flux::", "Vec<u8>", "1flux"] {
            let messages = parse_err(quote!(rate = "1/s", crate = #path));
            assert!(
                messages[0].starts_with("invalid crate path"),
                "{messages:?}"
            );
        }
        assert!(parse_err(quote!(crate = my_flux))[0].contains("string literal"));
    }

    #[test]
    fn concurrency_options_share_the_parser() {
        let mut errors = Errors::default();
        let args = parse(
            Kind::ConcurrencyLimit,
            quote!(max = 2, lease = "2s", key = "ip", on_error = "closed"),
            &mut errors,
        );
        assert!(errors.finish().is_ok());
        assert_eq!(args.max.map(|(_, m)| m), Some(2));
        assert_eq!(args.lease.map(|(_, l)| l), Some(2000));
        assert_eq!(args.on_error.map(|(_, p)| p), Some(Policy::Closed));
        let mut errors = Errors::default();
        parse(
            Kind::ConcurrencyLimit,
            quote!(max = 2, rate = "1/s", lease = "1ms"),
            &mut errors,
        );
        let messages: Vec<String> = match errors.finish() {
            Ok(()) => Vec::new(),
            Err(e) => e.into_iter().map(|e| e.to_string()).collect(),
        };
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert!(
            messages[0].contains("unknown option `rate`"),
            "{messages:?}"
        );
        assert!(messages[1].contains("lease"), "{messages:?}");
    }

    #[test]
    fn values_are_checked_where_parsed() {
        let messages = parse_err(quote!(
            rate = "1/x",
            burst = "2",
            deny = "panic",
            name = " ",
            rate = "1/s"
        ));
        assert_eq!(messages.len(), 5, "{messages:?}");
        assert!(
            messages[0].starts_with("unknown rate unit \"x\""),
            "{messages:?}"
        );
        assert!(messages[1].contains("integer literal"), "{messages:?}");
        assert!(
            messages[2].contains("\"response\", \"error\""),
            "{messages:?}"
        );
        assert!(
            messages[4].contains("duplicate option `rate`"),
            "{messages:?}"
        );
    }
}
