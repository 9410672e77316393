//! Checks that combine values: one attribute's numbers against each other (the bounds of a
//! limit, by `flux_core::check_limit`: zero burst or cost, cost vs burst, the bucket's
//! length), and the attributes of a stack against each other (one key, one failure policy,
//! one `deny`, one `crate`, distinct names; `deny = "error"`'s key). Each error still
//! points at one argument.

use flux_core::{LimitError, Rate, check_limit};
use proc_macro2::Span;
use quote::ToTokens;

use crate::attr::{Args, Cost, Deny, KeySpec, Kind, Mode, Policy, Slot};
use crate::diag::Errors;

/// One limit, validated.
pub(crate) struct LimitSpec {
    /// The explicit `name`, if any.
    pub(crate) name: Option<String>,
    /// Its rate and burst, or the expression that gives it per request.
    pub(crate) source: LimitSource,
    /// The cost, if written: a literal, checked here against a literal burst (else per
    /// request), or an expression. Without one, 1 (or the computed limit's own cost).
    pub(crate) cost: Option<Cost>,
    /// `lease = N`: checks taken from Redis at once; 0 when not written.
    pub(crate) lease: u32,
    /// The `rate` literal or the `limit` expression, where the generated `Limit` is spanned.
    pub(crate) span: Span,
}

/// Where a limit's rate and burst come from.
pub(crate) enum LimitSource {
    /// `rate` and `burst` literals: what `__private::limit` receives (with the literal
    /// cost, or 1 when the cost is computed).
    Fixed {
        count: u32,
        period_us: u64,
        burst: u32,
    },
    /// `limit = EXPR`.
    Expr(Box<syn::Expr>),
}

impl LimitSpec {
    /// Whether the limit or its cost is known only per request.
    pub(crate) fn per_request(&self) -> bool {
        matches!(self.source, LimitSource::Expr(_)) || matches!(self.cost, Some(Cost::Expr(_)))
    }
}

/// A concurrency limit, validated: what `__private::concurrency` receives.
pub(crate) struct ConcurrencySpec {
    /// The explicit `name`, if any.
    pub(crate) name: Option<String>,
    pub(crate) max: u32,
    pub(crate) lease_ms: u64,
    /// The `max` literal, where the generated limit is spanned.
    pub(crate) span: Span,
}

/// A whole stack of `#[rate_limit]` (and at most one `#[concurrency_limit]`) attributes on
/// one fn, validated: one check.
pub(crate) struct Stack {
    pub(crate) limits: Vec<LimitSpec>,
    pub(crate) concurrency: Option<ConcurrencySpec>,
    pub(crate) key: Option<(Span, KeySpec)>,
    pub(crate) on_error: Option<Policy>,
    pub(crate) mode: Option<Mode>,
    /// `exempt = EXPR`, with the expression's span.
    pub(crate) exempt: Option<(Span, Box<syn::Expr>)>,
    pub(crate) deny: Deny,
    /// The `deny` literal, if written.
    pub(crate) deny_span: Option<Span>,
    /// `crate = "..."`, if written: the path of the runtime crate (else `::flux`).
    pub(crate) krate: Option<syn::Path>,
}

/// A rate that no bound rejects with any burst: one token per microsecond.
const FASTEST: Rate = Rate::per_second::<1_000_000>();

/// Checks one attribute's numbers against each other with [`check_limit`], the rule the
/// runtime applies, and reports its error, in its words, on the argument at fault (`cost`
/// for a zero cost or one above the burst, `burst` for a zero burst or a bucket too long);
/// a defaulted argument's errors are reported at the rate literal. `attr_span` is where a
/// missing `rate` is reported.
///
/// A number whose option was invalid or may have been lost (an error already reported) is
/// replaced by one that fails no check on its own (the fastest rate, the largest burst, a
/// cost of 1) and the errors it would cause are not reported: the other numbers are still
/// checked, and no mistake is made up.
fn limit(args: &Args, attr_span: Span, errors: &mut Errors) -> Option<LimitSpec> {
    if let Some((span, expr)) = &args.limit {
        return computed_limit(args, *span, expr, errors);
    }
    if args.rate.is_none() && !args.may_lack("rate") && !args.may_lack("limit") {
        errors.push_at(
            attr_span,
            "missing `rate`: add the sustained rate, such as `rate = \"100/s\"` (or \
             `limit = EXPR` for a limit computed per request)",
        );
    }
    // Each number with the span of its errors, `None` for those not to report.
    let (rate_at, rate) = match args.rate {
        Some((span, rate)) => (Some(span), rate),
        None => (None, FASTEST),
    };
    let (burst_at, burst) = match args.burst {
        Some((span, burst)) => (Some(span), burst),
        None if rate_at.is_none() || args.may_lack("burst") => (None, u32::MAX),
        None => (rate_at, rate.count()),
    };
    // A computed cost is checked per request: here the limit must admit a cost of 1.
    let (cost_at, literal) = match &args.cost {
        Some((span, Cost::Literal(cost))) => (Some(*span), *cost),
        Some((_, Cost::Expr(_))) | None => (rate_at, 1),
    };
    if let Err(error) = check_limit(rate, burst, literal) {
        let at = match error {
            LimitError::ZeroCost | LimitError::CostAboveBurst { .. } => cost_at,
            LimitError::ZeroBurst | LimitError::BucketTooLong { .. } => burst_at,
            _ => rate_at,
        };
        if let Some(span) = at {
            errors.push_at(span, error);
        }
        return None;
    }
    let lease = match args.token_lease {
        Some((span, n)) if n < 2 => {
            errors.push_at(
                span,
                "`lease` must be at least 2: the checks taken from Redis at once (leave it out for no leasing)",
            );
            return None;
        }
        Some((_, n)) => n,
        None => 0,
    };
    Some(LimitSpec {
        name: args.name.as_ref().map(|(_, n)| n.clone()),
        source: LimitSource::Fixed {
            count: rate.count(),
            period_us: rate.period_micros(),
            burst,
        },
        cost: args.cost.as_ref().map(|(_, cost)| cost.clone()),
        lease,
        span: rate_at?,
    })
}

/// `limit = EXPR`: the expression's `Limit` has its own rate, burst, name and lease, so those
/// options are errors at their arguments; a literal `cost` is checked per request (the burst
/// is not known before).
fn computed_limit(
    args: &Args,
    span: Span,
    expr: &syn::Expr,
    errors: &mut Errors,
) -> Option<LimitSpec> {
    let mut ok = true;
    for (option, at) in [
        ("rate", args.rate.as_ref().map(|(s, _)| *s)),
        ("burst", args.burst.as_ref().map(|(s, _)| *s)),
        ("name", args.name.as_ref().map(|(s, _)| *s)),
        ("lease", args.token_lease.as_ref().map(|(s, _)| *s)),
    ] {
        if let Some(at) = at {
            ok = false;
            errors.push_at(
                at,
                format!(
                    "`{option}` conflicts with `limit = ...`: the expression's `Limit` has its \
                     own rate, burst, name and lease; drop `{option}` or `limit`"
                ),
            );
        }
    }
    if let Some((at, Cost::Literal(0))) = &args.cost {
        errors.push_at(*at, LimitError::ZeroCost);
        return None;
    }
    ok.then(|| LimitSpec {
        name: None,
        source: LimitSource::Expr(Box::new(expr.clone())),
        cost: args.cost.as_ref().map(|(_, cost)| cost.clone()),
        lease: 0,
        span,
    })
}

/// Checks one `#[concurrency_limit]`'s numbers with the runtime's rule
/// ([`check_concurrency`](flux_core::check_concurrency)), reported at `max`.
fn concurrency(args: &Args, attr_span: Span, errors: &mut Errors) -> Option<ConcurrencySpec> {
    let Some((span, max)) = args.max else {
        if !args.may_lack("max") {
            errors.push_at(
                attr_span,
                "missing `max`: add the most requests in flight per client, such as `max = 10`",
            );
        }
        return None;
    };
    let lease_ms = args
        .lease
        .map_or(flux_core::DEFAULT_LEASE.as_millis() as u64, |(_, l)| l);
    let lease = std::time::Duration::from_millis(lease_ms);
    if let Err(error) = flux_core::check_concurrency(max, lease) {
        errors.push_at(span, error);
        return None;
    }
    Some(ConcurrencySpec {
        name: args.name.as_ref().map(|(_, n)| n.clone()),
        max,
        lease_ms,
        span,
    })
}

/// Validates a stack of attributes: `first` is the outermost, the one being expanded, and
/// `rest` the others, in order; each comes with the span where a missing `rate` is reported.
///
/// `key`, `on_error`, `mode`, `exempt`, `deny` and `crate` describe the one check and are set on
/// the first attribute;
/// a later one may repeat the same value (copy-pasted attributes compile) but not change it.
pub(crate) fn stack(first: &(Span, Args), rest: &[(Span, Args)], errors: &mut Errors) -> Stack {
    let mut limits = Vec::new();
    let mut slots: Option<ConcurrencySpec> = None;
    let mut names: Vec<&(Span, String)> = Vec::new();
    for (attr_span, args) in std::iter::once(first).chain(rest) {
        if args.kind == Kind::ConcurrencyLimit {
            if slots.is_some() {
                errors.push_at(
                    *attr_span,
                    "one #[concurrency_limit] per fn: a request takes one slot",
                );
            } else {
                slots = concurrency(args, *attr_span, errors);
            }
            continue;
        }
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
    let attrs = if std::iter::once(first)
        .chain(rest.iter().map(|(_, a)| a))
        .any(|a| a.kind == Kind::ConcurrencyLimit)
    {
        "#[rate_limit] and #[concurrency_limit]"
    } else {
        "#[rate_limit]"
    };
    for (_, args) in rest {
        let mut shared = Shared { attrs, errors };
        shared.check(&first.key, &args.key, "key", same_key);
        shared.check(&first.on_error, &args.on_error, "on_error", PartialEq::eq);
        shared.check(&first.mode, &args.mode, "mode", PartialEq::eq);
        shared.check(&first.exempt, &args.exempt, "exempt", same_tokens);
        shared.check(&first.deny, &args.deny, "deny", PartialEq::eq);
        shared.check(&first.krate, &args.krate, "crate", same_tokens);
    }

    let deny = first.deny.as_ref().map_or(Deny::Response, |(_, d)| *d);
    let deny_span = first.deny.as_ref().map(|(s, _)| *s);
    if deny == Deny::Error {
        deny_error_key(&first.key, deny_span, errors);
        if let Some(slots) = &slots {
            errors.push_at(
                slots.span,
                "#[concurrency_limit] limits axum handlers: a plain async fn holds a slot \
                 with `flux::Flux::acquire`, whose guard releases it when dropped",
            );
        }
    }
    Stack {
        limits,
        concurrency: slots,
        key: first.key.clone(),
        on_error: first.on_error.map(|(_, p)| p),
        mode: first.mode.map(|(_, m)| m),
        exempt: first.exempt.clone(),
        deny,
        deny_span,
        krate: first.krate.as_ref().map(|(_, path)| path.clone()),
    }
}

/// Equal as written (expressions compared token by token).
fn same_key(a: &KeySpec, b: &KeySpec) -> bool {
    match (a, b) {
        (KeySpec::Ip, KeySpec::Ip) | (KeySpec::Global, KeySpec::Global) => true,
        (KeySpec::Header(a), KeySpec::Header(b)) => a == b,
        (KeySpec::Expr(a), KeySpec::Expr(b)) => same_tokens(a, b),
        _ => false,
    }
}

/// Equal as written, token by token.
fn same_tokens<T: ToTokens>(a: &T, b: &T) -> bool {
    a.to_token_stream().to_string() == b.to_token_stream().to_string()
}

/// `deny = "error"` limits a plain async fn: its key must be explicit and must not need a
/// request.
fn deny_error_key(key: &Slot<KeySpec>, deny_span: Option<Span>, errors: &mut Errors) {
    match key {
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

/// The check of the options a stack shares, naming the stack's attributes (`attrs`).
struct Shared<'a> {
    attrs: &'a str,
    errors: &'a mut Errors,
}

impl Shared<'_> {
    /// A later attribute's `option` must be absent or equal to the first attribute's.
    fn check<T>(
        &mut self,
        first: &Slot<T>,
        later: &Slot<T>,
        option: &str,
        same: impl Fn(&T, &T) -> bool,
    ) {
        let Shared { attrs, errors } = self;
        shared(first, later, option, same, attrs, errors);
    }
}

/// A later attribute's `option` must be absent or equal to the first attribute's.
fn shared<T>(
    first: &Slot<T>,
    later: &Slot<T>,
    option: &str,
    same: impl Fn(&T, &T) -> bool,
    attrs: &str,
    errors: &mut Errors,
) {
    match (first, later) {
        (_, None) => {}
        (None, Some((span, _))) => errors.push_at(
            *span,
            format!(
                "`{option}` applies to all stacked {attrs} attributes of this fn (one check): \
                 set it on the first one"
            ),
        ),
        (Some((_, a)), Some((span, b))) => {
            if !same(a, b) {
                errors.push_at(
                    *span,
                    format!(
                        "stacked {attrs} attributes share one `{option}` (one check): \
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
    use crate::attr::parse;
    use proc_macro2::TokenStream;
    use quote::quote;

    fn stack_of(attrs: Vec<TokenStream>) -> syn::Result<Stack> {
        let mut errors = Errors::default();
        let mut parsed: Vec<(Span, Args)> = attrs
            .into_iter()
            .map(|t| (Span::call_site(), parse(Kind::RateLimit, t, &mut errors)))
            .collect();
        let first = parsed.remove(0);
        let stack = stack(&first, &parsed, &mut errors);
        errors.finish().map(|()| stack)
    }

    #[test]
    fn a_lease_is_two_checks_or_more() {
        let stack = stack_of(vec![quote!(rate = "10/s", lease = 20)]).expect("valid");
        assert_eq!(stack.limits[0].lease, 20);
        let stack = stack_of(vec![quote!(rate = "10/s")]).expect("valid");
        assert_eq!(stack.limits[0].lease, 0, "no leasing unless asked");
        for n in [quote!(0), quote!(1)] {
            let error = stack_of(vec![quote!(rate = "10/s", lease = #n)])
                .err()
                .expect("refused");
            assert!(
                error.to_string().contains("`lease` must be at least 2"),
                "{error}"
            );
        }
        let error = stack_of(vec![quote!(rate = "10/s", lease = "1s")])
            .err()
            .expect("a duration is the concurrency limit's lease");
        assert!(error.to_string().contains("positive integer"), "{error}");
    }

    #[test]
    fn defaults() {
        let stack = stack_of(vec![quote!(rate = "6000 per minute")]).expect("valid");
        let limit = &stack.limits[0];
        let LimitSource::Fixed {
            count,
            period_us,
            burst,
        } = limit.source
        else {
            panic!("a fixed limit");
        };
        assert_eq!((count, period_us, burst), (6000, 60_000_000, 6000));
        assert!(limit.cost.is_none());
        assert_eq!(stack.deny, Deny::Response);
        assert!(stack.key.is_none() && stack.on_error.is_none());
    }

    #[test]
    fn stacked_attributes_share_key_policy_and_deny() {
        // Repeating the first attribute's values is fine.
        let ok = stack_of(vec![
            quote!(
                rate = "5/s",
                key = user.id,
                on_error = "local",
                crate = "my_flux"
            ),
            quote!(
                rate = "100/h",
                key = user.id,
                on_error = "local",
                crate = "my_flux"
            ),
            quote!(rate = "1000/day"),
        ])
        .expect("valid");
        assert_eq!(ok.limits.len(), 3);
        assert!(ok.on_error == Some(Policy::Local));
        assert!(ok.krate.is_some_and(|path| path.is_ident("my_flux")));
        for later in [
            quote!(rate = "100/h", key = user.name),
            quote!(rate = "100/h", deny = "response"),
            quote!(rate = "100/h", on_error = "open"),
            quote!(rate = "100/h", crate = "flux"),
        ] {
            let first = quote!(
                rate = "5/s",
                key = user.id,
                on_error = "local",
                crate = "my_flux"
            );
            assert!(stack_of(vec![first, later]).is_err());
        }
    }

    fn messages(result: syn::Result<Stack>) -> Vec<String> {
        match result {
            Ok(_) => Vec::new(),
            Err(e) => e.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn every_mistake_is_reported() {
        let messages = messages(stack_of(vec![quote!(
            rate = "1/x",
            burst = 0,
            cost = "2",
            nme = "a"
        )]));
        assert_eq!(messages.len(), 4, "{messages:?}");
        assert!(messages[2].contains("did you mean `name`"), "{messages:?}");
        // Zero is wrong whatever the rate: reported although the rate is invalid.
        assert_eq!(messages[3], LimitError::ZeroBurst.to_string());
    }

    #[test]
    fn bounds_are_the_runtimes_with_its_messages() {
        for (attr, error) in [
            (quote!(rate = "10/s", burst = 0), LimitError::ZeroBurst),
            (quote!(rate = "10/s", cost = 0), LimitError::ZeroCost),
            (
                quote!(rate = "10/s", burst = 2, cost = 3),
                LimitError::CostAboveBurst { cost: 3, burst: 2 },
            ),
            (
                quote!(rate = "10/s", cost = 11),
                LimitError::CostAboveBurst {
                    cost: 11,
                    burst: 10,
                },
            ),
            (
                quote!(rate = "1/365day", burst = 11),
                LimitError::BucketTooLong { burst: 11 },
            ),
        ] {
            assert_eq!(messages(stack_of(vec![attr])), [error.to_string()]);
        }
        assert!(stack_of(vec![quote!(rate = "1/365day", burst = 10, cost = 10)]).is_ok());
    }

    #[test]
    fn a_reported_mistake_makes_up_no_other() {
        for attr in [
            // `brust` may be the burst: the default (10) is not held against the cost.
            quote!(rate = "10/s", brust = 20, cost = 11),
            // An invalid burst is not assumed to be anything.
            quote!(rate = "1/365day", burst = "11"),
            // Nor is the default burst of an invalid rate.
            quote!(rate = "1/x", cost = 5),
            // A syntax error may hide any option, `rate` too.
            quote!(cost = 5 burst = 2),
        ] {
            let messages = messages(stack_of(vec![attr]));
            assert_eq!(messages.len(), 1, "{messages:?}");
        }
        let messages = messages(stack_of(vec![quote!(burst = 0)]));
        assert!(messages[0].starts_with("missing `rate`"), "{messages:?}");
        assert_eq!(messages[1..], [LimitError::ZeroBurst.to_string()]);
    }

    #[test]
    fn a_computed_limit_excludes_rate_burst_and_name() {
        let stack =
            stack_of(vec![quote!(limit = user.plan.limit(), key = user.id)]).expect("valid");
        assert!(matches!(stack.limits[0].source, LimitSource::Expr(_)));
        assert!(stack.limits[0].per_request() && stack.limits[0].cost.is_none());
        let conflicts = messages(stack_of(vec![quote!(
            limit = &FREE,
            rate = "1/s",
            burst = 2,
            name = "x"
        )]));
        assert_eq!(conflicts.len(), 3, "{conflicts:?}");
        assert!(
            conflicts
                .iter()
                .all(|m| m.contains("conflicts with `limit = ...`"))
        );
        assert_eq!(
            messages(stack_of(vec![quote!(limit = &FREE, cost = 0)])),
            [LimitError::ZeroCost.to_string()]
        );
    }

    #[test]
    fn a_computed_cost_is_left_to_the_run_time_a_literal_is_not() {
        let stack = stack_of(vec![quote!(rate = "10/s", cost = body.items.len())]).expect("valid");
        assert!(matches!(stack.limits[0].cost, Some(Cost::Expr(_))));
        assert!(stack.limits[0].per_request());
        let fixed = stack_of(vec![quote!(rate = "10/s", cost = 2)]).expect("valid");
        assert!(!fixed.limits[0].per_request());
        for attr in [
            quote!(rate = "10/s", cost = -1),
            quote!(rate = "10/s", cost = 1.5),
            quote!(rate = "10/s", cost = 11),
            quote!(limit = "10/s"),
        ] {
            assert_eq!(messages(stack_of(vec![attr])).len(), 1);
        }
    }
}
