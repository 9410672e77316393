//! Code generation: from a parsed, validated stack of `#[rate_limit]` and
//! `#[concurrency_limit]` attributes and the user's `async fn` to the rewritten fn.
//!
//! Generated code names nothing but `::flux::__private::...` (or, with `crate = "path"`,
//! `path::__private::...`) and `::core::...`. Its locals are `__flux_*` idents with
//! `Span::mixed_site()` hygiene (but one, see `plain`), and its items (the limits' static,
//! the declared bounds' fn), which hygiene does not hide, sit in blocks of their own: user
//! code can neither see nor shadow any of them. The user's attributes, visibility,
//! signature and body are re-emitted with their own spans.

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{
    AttrStyle, Attribute, FnArg, GenericArgument, Ident, ItemFn, Meta, Path, PathArguments,
    ReturnType, TraitBound, TraitBoundModifier, Type, TypeImplTrait, TypeParamBound, parse_quote,
};

use crate::attr::{self, Cost, Deny, KeySpec, Kind, Mode};
use crate::diag::Errors;
use crate::valid::{self, ConcurrencySpec, LimitSource, LimitSpec, Stack};

/// The attribute `kind`: `args` are the outermost invocation's arguments, `item` the fn
/// (with any further `#[rate_limit]` or `#[concurrency_limit]` attributes still on it, which
/// this expansion collects: whichever expands first handles the whole stack).
pub(crate) fn expand(kind: Kind, args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let first = (Span::call_site(), attr::parse(kind, args, &mut errors));
    let name = kind.name();
    let mut func: ItemFn = match syn::parse2(item.clone()) {
        Ok(func) => func,
        Err(not_a_fn) => {
            let message = match kind {
                Kind::RateLimit => {
                    "#[rate_limit] applies to an `async fn` with a body: an axum \
                                    handler, or a plain async fn with `deny = \"error\"`"
                }
                Kind::ConcurrencyLimit => {
                    "#[concurrency_limit] applies to an `async fn` with a body: an axum handler"
                }
            };
            errors.push_at(not_a_fn.span(), message);
            return errors.after(item);
        }
    };

    let mut rest = Vec::new();
    let attrs = std::mem::take(&mut func.attrs);
    let krate = first.1.krate.as_ref().map(|(_, path)| path);
    for attr in attrs {
        if let Some(kind) = flux_attr(&attr, krate) {
            // `[...]`: the whole attribute but `#` (`attr.span()` is only `#` on stable).
            rest.push((
                attr.bracket_token.span.join(),
                attr::parse(kind, stacked_args(&attr, kind, &mut errors), &mut errors),
            ));
        } else {
            func.attrs.push(attr);
        }
    }
    if func.sig.asyncness.is_none() {
        errors.push_at(
            func.sig.fn_token.span,
            format!("#[{name}] needs an `async fn`: the check awaits the limiter (add `async`)"),
        );
    }
    let stack = valid::stack(&first, &rest, &mut errors);
    if stack.deny == Deny::Error && matches!(func.sig.output, ReturnType::Default) {
        errors.push_at(
            stack.deny_span.unwrap_or_else(Span::call_site),
            "`deny = \"error\"` returns a denial as `Err(From::from(flux::RateLimited))`: \
             the fn must return a `Result` whose error type implements `From<flux::RateLimited>`",
        );
    }

    match errors.finish() {
        Ok(()) => match stack.deny {
            Deny::Response => handler(func, &stack),
            Deny::Error => plain(func, &stack),
        },
        // The item without its (already reported) sibling attributes, so that they do not
        // expand on their own and report the same mistakes again.
        Err(error) => {
            let mut out = func.into_token_stream();
            out.extend(error.into_compile_error());
            out
        }
    }
}

/// Which of Flux's attributes `attr` is: `#[rate_limit(...)]` or `#[flux::rate_limit(...)]`
/// (also `::flux::`); with `crate = "a::b"` on the first attribute, also
/// `#[b::rate_limit(...)]` and `#[a::b::rate_limit(...)]`; the same for `concurrency_limit`.
fn flux_attr(attr: &Attribute, krate: Option<&Path>) -> Option<Kind> {
    let path = attr.path();
    let segments: Vec<&Ident> = path.segments.iter().map(|s| &s.ident).collect();
    let (name, prefix) = segments.split_last()?;
    let krate: Vec<&Ident> = krate
        .into_iter()
        .flat_map(|krate| &krate.segments)
        .map(|s| &s.ident)
        .collect();
    let kind = [Kind::RateLimit, Kind::ConcurrencyLimit]
        .into_iter()
        .find(|kind| *name == kind.name())?;
    match prefix {
        [] => path.leading_colon.is_none(),
        [one] if *one == "flux" || krate.last() == Some(one) => true,
        _ => prefix == krate.as_slice(),
    }
    .then_some(kind)
}

/// The argument tokens of a stacked attribute.
fn stacked_args(attr: &Attribute, kind: Kind, errors: &mut Errors) -> TokenStream {
    match &attr.meta {
        Meta::List(list) => list.tokens.clone(),
        // `#[rate_limit]`: reported as a missing `rate` (or `max`).
        Meta::Path(_) => TokenStream::new(),
        Meta::NameValue(nv) => {
            let example = match kind {
                Kind::RateLimit => "expected `#[rate_limit(rate = \"...\", ...)]`",
                Kind::ConcurrencyLimit => "expected `#[concurrency_limit(max = N, ...)]`",
            };
            errors.push_at(nv.eq_token.span, example);
            TokenStream::new()
        }
    }
}

/// The runtime's support module: `::flux::__private`, or `<crate>::__private` with
/// `crate = "..."`, spanned at `span` (the path included, so that a generated call is
/// spanned as a whole where its errors belong).
fn private(krate: Option<&Path>, span: Span) -> TokenStream {
    match krate {
        None => quote_spanned!(span=> ::flux::__private),
        Some(path) => {
            let path: TokenStream = path
                .to_token_stream()
                .into_iter()
                .map(|mut tree| {
                    tree.set_span(span);
                    tree
                })
                .collect();
            quote_spanned!(span=> #path::__private)
        }
    }
}

// Input:  #[rate_limit(rate = "10/s", burst = 5)] #[rate_limit(rate = "100/h", name = "hourly")]
//         on `async fn search`
// Output: let __flux_limits: ::flux::__private::Limits = ::flux::__private::fixed({
//             static __FLUX_LIMITS: [::flux::__private::Limit; 2] = [
//                 ::flux::__private::limit(
//                     ::core::concat!(::core::module_path!(), "::", "search#1"),
//                     10u32, 1000000u64, 5u32, 1u32),
//                 ::flux::__private::limit(
//                     "hourly", 100u32, 3600000000u64, 100u32, 1u32),
//             ];
//             &__FLUX_LIMITS
//         });
// The static is an item, which hygiene does not hide: inside its own block, it is out of
// the body's scope (a body's own `__FLUX_LIMITS` neither clashes with it nor is shadowed).
//
// With a limit or a cost computed per request (`per_request`), the limits are copied for
// the request, each expression evaluated before the body (the arguments only borrowed):
// Input:  #[rate_limit(limit = user.plan.limit(), cost = body.items.len())]
//         #[rate_limit(rate = "100/h", cost = body.items.len())]
// Output: let __flux_limits: ::flux::__private::Limits = ::flux::__private::per_request([
//             ::flux::__private::with_cost(
//                 ::flux::__private::limit_of(&(user.plan.limit())), body.items.len()),
//             ::flux::__private::with_cost(
//                 { static __FLUX_LIMIT: ::flux::__private::Limit = /* limit(..), cost 1 */;
//                   ::flux::__private::limit_of(&__FLUX_LIMIT) },
//                 body.items.len()),
//         ]);
// A literal cost with `limit = ...` goes through `with_cost` too (the burst is known only
// then); with a fixed rate it stays in the static, checked at compile time.
fn limits_let(func: &ItemFn, stack: &Stack) -> TokenStream {
    let limits = &stack.limits;
    let krate = stack.krate.as_ref();
    let fn_name = func.sig.ident.unraw().to_string();
    let stacked = limits.len() > 1;
    // `__private::limit(...)` of a fixed limit, spanned at its rate.
    let from_macro = |i: usize, limit: &LimitSpec, count: u32, period_us: u64, burst: u32| {
        let name = match &limit.name {
            Some(name) => quote!(#name),
            None => {
                let tail = if stacked {
                    format!("{fn_name}#{}", i + 1)
                } else {
                    fn_name.clone()
                };
                quote!(::core::concat!(::core::module_path!(), "::", #tail))
            }
        };
        let cost = match limit.cost {
            Some(Cost::Literal(cost)) => cost,
            Some(Cost::Expr(_)) | None => 1,
        };
        let span = limit.span;
        let private = private(krate, span);
        // `lease = N` (a const method, so the limit stays a `static`).
        let lease = limit.lease;
        let lease = (lease > 0).then(|| quote_spanned!(span=> .with_lease(#lease)));
        quote_spanned! {span=>
            #private::limit(#name, #count, #period_us, #burst, #cost) #lease
        }
    };
    let p = private(krate, Span::call_site());
    let ident = limits_ident();
    if !limits.iter().any(LimitSpec::per_request) {
        let items = limits
            .iter()
            .enumerate()
            .map(|(i, limit)| match limit.source {
                LimitSource::Fixed {
                    count,
                    period_us,
                    burst,
                } => from_macro(i, limit, count, period_us, burst),
                // A computed limit makes the stack `per_request`.
                LimitSource::Expr(_) => TokenStream::new(),
            });
        let len = limits.len();
        return quote! {
            let #ident: #p::Limits = #p::fixed({
                static __FLUX_LIMITS: [#p::Limit; #len] = [#(#items),*];
                &__FLUX_LIMITS
            });
        };
    }
    let items = limits.iter().enumerate().map(|(i, limit)| {
        let span = limit.span;
        let at_limit = private(krate, span);
        let (base, cost) = match &limit.source {
            LimitSource::Fixed {
                count,
                period_us,
                burst,
            } => {
                let init = from_macro(i, limit, *count, *period_us, *burst);
                let base = quote_spanned! {span=>
                    {
                        static __FLUX_LIMIT: #p::Limit = #init;
                        #at_limit::limit_of(&__FLUX_LIMIT)
                    }
                };
                // A literal cost is in the static already.
                let cost = match &limit.cost {
                    Some(Cost::Expr(expr)) => Some((expr.span(), quote!(#expr))),
                    Some(Cost::Literal(_)) | None => None,
                };
                (base, cost)
            }
            LimitSource::Expr(expr) => {
                let base = quote_spanned!(span=> #at_limit::limit_of(&(#expr)));
                let cost = match &limit.cost {
                    Some(Cost::Expr(expr)) => Some((expr.span(), quote!(#expr))),
                    Some(Cost::Literal(cost)) => Some((span, quote!(#cost))),
                    None => None,
                };
                (base, cost)
            }
        };
        match cost {
            Some((at, cost)) => {
                let private = private(krate, at);
                quote_spanned!(at=> #private::with_cost(#base, #cost))
            }
            None => quote!(::core::result::Result::Ok(#base)),
        }
    });
    quote! {
        let #ident: #p::Limits = #p::per_request([#(#items),*]);
    }
}

// Input:  #[concurrency_limit(max = 2, lease = "10s")] on `async fn export`
// Output: let __flux_concurrency: ::core::option::Option<&'static ::flux::__private::ConcurrencyLimit> =
//             ::core::option::Option::Some({
//                 static __FLUX_CONCURRENCY: ::flux::__private::ConcurrencyLimit =
//                     ::flux::__private::concurrency(
//                         ::core::concat!(::core::module_path!(), "::", "export"), 2u32, 10000u64);
//                 &__FLUX_CONCURRENCY
//             });
// `None` without a concurrency limit. The static sits in a block of its own, as the limits'.
fn concurrency_let(func: &ItemFn, stack: &Stack) -> TokenStream {
    let krate = stack.krate.as_ref();
    let p = private(krate, Span::call_site());
    let ident = Ident::new("__flux_concurrency", Span::mixed_site());
    let ty = quote!(::core::option::Option<&'static #p::ConcurrencyLimit>);
    let Some(ConcurrencySpec {
        name,
        max,
        lease_ms,
        span,
    }) = &stack.concurrency
    else {
        return quote!(let #ident: #ty = ::core::option::Option::None;);
    };
    let name = match name {
        Some(name) => quote!(#name),
        None => {
            let fn_name = func.sig.ident.unraw().to_string();
            quote!(::core::concat!(::core::module_path!(), "::", #fn_name))
        }
    };
    let private = private(krate, *span);
    let init = quote_spanned! {*span=>
        #private::concurrency(#name, #max, #lease_ms)
    };
    quote! {
        let #ident: #ty = ::core::option::Option::Some({
            static __FLUX_CONCURRENCY: #p::ConcurrencyLimit = #init;
            &__FLUX_CONCURRENCY
        });
    }
}

/// `__flux_limits`, the check's `&'static [Limit]`.
fn limits_ident() -> Ident {
    Ident::new("__flux_limits", Span::mixed_site())
}

// Input:  on_error = "closed", mode = "shadow", exempt = is_internal(&headers)
// Output: (in `let`) let __flux_exempt: bool = is_internal(&headers);
//         (in `value`) ::flux::__private::Options {
//             on_error: ::core::option::Option::Some(::flux::__private::FailurePolicy::Closed),
//             shadow: ::core::option::Option::Some(true),
//             exempt: __flux_exempt,
//         }
// Absent options are `None`, `None` and `false` (and no `let`). The exemption is evaluated
// before the body (and the key), so the arguments are only borrowed; its type error, if any,
// points at the expression.
struct OptionsTokens {
    let_exempt: TokenStream,
    value: TokenStream,
}

fn options(stack: &Stack) -> OptionsTokens {
    let p = private(stack.krate.as_ref(), Span::call_site());
    let on_error = match stack.on_error {
        Some(policy) => {
            let variant = format_ident!("{}", policy.variant());
            quote!(::core::option::Option::Some(#p::FailurePolicy::#variant))
        }
        None => quote!(::core::option::Option::None),
    };
    let shadow = match stack.mode {
        Some(Mode::Shadow) => quote!(::core::option::Option::Some(true)),
        Some(Mode::Enforce) => quote!(::core::option::Option::Some(false)),
        None => quote!(::core::option::Option::None),
    };
    let (let_exempt, exempt) = match &stack.exempt {
        Some((span, expr)) => {
            let ident = Ident::new("__flux_exempt", Span::mixed_site());
            (
                quote_spanned!(*span=> let #ident: bool = #expr;),
                quote!(#ident),
            )
        }
        None => (TokenStream::new(), quote!(false)),
    };
    OptionsTokens {
        let_exempt,
        value: quote! {
            #p::Options { on_error: #on_error, shadow: #shadow, exempt: #exempt }
        },
    }
}

/// The fn's outer attributes and its body's inner attributes (`#![...]`), apart.
fn split_attrs(attrs: &[Attribute]) -> (Vec<&Attribute>, Vec<&Attribute>) {
    attrs
        .iter()
        .partition(|attr| matches!(attr.style, AttrStyle::Outer))
}

// Input:
//     /// Docs.
//     #[rate_limit(rate = "10/s", key = "ip")]
//     pub async fn search(Query(q): Query<Params>) -> Result<Json<Hits>, AppError> { BODY }
// Output:
//     /// Docs.
//     pub async fn search(
//         __flux_scope: ::flux::__private::Scope<true>,
//         Query(q): Query<Params>,
//     ) -> ::flux::__private::Response {
//         let __flux_limits: ::flux::__private::Limits = /* limits_let */;
//         let __flux_concurrency = /* concurrency_let */;
//         /* declared_bounds, when the declared type has `impl Trait` */
//         /* let __flux_exempt: bool = EXPR;, with `exempt = EXPR` (see `options`) */
//         let __flux_key = ::flux::__private::key_ip(&__flux_scope);
//         ::flux::__private::http(
//             __flux_scope,
//             __flux_limits,
//             __flux_concurrency, /* concurrency_let */
//             __flux_key,
//             ::flux::__private::Options { /* see `options` */ },
//             ::flux::__private::typed::<Result<Json<Hits>, AppError>, _>(async move { BODY }),
//         )
//         .await
//     }
// Every handler gets `__flux_scope: Scope<IP>` as its first parameter after any receiver:
// the limiter serving the request (the one in its extensions, else the global one) and,
// with IP (`key = "ip"`, the default) or exempt addresses, the client's address.
// Keys: "ip" reads the scope; "header:NAME" injects `__flux_headers: HeaderKey<A, B>` after
// the scope, with the name packed into A and B (or, for names over 32 bytes,
// `RequestHeaders`);
// "global" is `Ok(key_global())`; an expression is `Ok(key_of(&(EXPR)))`, evaluated before
// the body so that the arguments are only borrowed.
// `typed::<R, _>` pins the body's output to the declared `R` so that `?` infers; `impl Trait`
// inside `R` becomes `_`, a bare `impl Trait` is not pinned, no return type pins `()`.
fn handler(mut func: ItemFn, stack: &Stack) -> TokenStream {
    let krate = stack.krate.as_ref();
    let p = private(krate, Span::call_site());
    let key_ident = Ident::new("__flux_key", Span::mixed_site());
    let scope = Ident::new("__flux_scope", Span::mixed_site());
    let by_ip = matches!(&stack.key, None | Some((_, KeySpec::Ip)));
    let (param, key): (Option<FnArg>, TokenStream) = match &stack.key {
        None | Some((_, KeySpec::Ip)) => (None, quote!(#p::key_ip(&#scope))),
        Some((_, KeySpec::Header(name))) if name.len() <= 32 => {
            // The name travels in the extractor's type, packed into two u128 (little-endian,
            // zero-padded), so only that header is read: no copy of the request's headers.
            let headers = Ident::new("__flux_headers", Span::mixed_site());
            let mut bytes = [0u8; 32];
            bytes[..name.len()].copy_from_slice(name.as_bytes());
            let mut halves = [0u128; 2];
            for (half, chunk) in halves.iter_mut().zip(bytes.chunks_exact(16)) {
                let mut le = [0u8; 16];
                le.copy_from_slice(chunk);
                *half = u128::from_le_bytes(le);
            }
            let (a, b) = (
                proc_macro2::Literal::u128_suffixed(halves[0]),
                proc_macro2::Literal::u128_suffixed(halves[1]),
            );
            (
                Some(parse_quote!(#headers: #p::HeaderKey<#a, #b>)),
                quote!(#p::key_header_packed(#headers)),
            )
        }
        Some((_, KeySpec::Header(name))) => {
            let headers = Ident::new("__flux_headers", Span::mixed_site());
            (
                Some(parse_quote!(#headers: #p::RequestHeaders)),
                quote!(#p::key_header(&#headers, #name)),
            )
        }
        Some((_, KeySpec::Global)) => (None, quote!(::core::result::Result::Ok(#p::key_global()))),
        Some((span, KeySpec::Expr(expr))) => {
            let private = private(krate, *span);
            (
                None,
                quote_spanned! {*span=>
                    ::core::result::Result::Ok(#private::key_of(&(#expr)))
                },
            )
        }
    };
    let at = usize::from(matches!(func.sig.inputs.first(), Some(FnArg::Receiver(_))));
    if let Some(param) = param {
        func.sig.inputs.insert(at, param);
    }
    func.sig
        .inputs
        .insert(at, parse_quote!(#scope: #p::Scope<#by_ip>));

    let block = &func.block;
    let block_span = block.brace_token.span.join();
    let typed = private(krate, block_span);
    let mut bounds = TokenStream::new();
    let (body, ret_span) = match &func.sig.output {
        ReturnType::Default => (
            quote_spanned!(block_span=> #typed::typed::<(), _>(async move #block)),
            func.sig.paren_token.span.join(),
        ),
        ReturnType::Type(_, ty) => {
            let (pinned, erased) = inferable(ty);
            bounds = declared_bounds(&erased);
            match pinned {
                Some(pinned) => (
                    quote_spanned!(block_span=> #typed::typed::<#pinned, _>(async move #block)),
                    ty.span(),
                ),
                None => (quote_spanned!(block_span=> async move #block), ty.span()),
            }
        }
    };
    let limits = limits_let(&func, stack);
    let limits_ident = limits_ident();
    let concurrency = concurrency_let(&func, stack);
    let concurrency_ident = Ident::new("__flux_concurrency", Span::mixed_site());
    let OptionsTokens {
        let_exempt,
        value: options,
    } = options(stack);

    // Spanned at the declared return type, parentheses included (a call's span runs from
    // its path to its closing parenthesis): "`X` is not `IntoResponse`" points there.
    let http = private(krate, ret_span);
    let call = quote_spanned! {ret_span=>
        #http::http(#scope, #limits_ident, #concurrency_ident, #key_ident, #options, #body).await
    };
    let (outer, inner) = split_attrs(&func.attrs);
    let vis = &func.vis;
    let mut sig = func.sig.clone();
    let arrow = match &sig.output {
        ReturnType::Type(arrow, _) => *arrow,
        ReturnType::Default => Default::default(),
    };
    sig.output = ReturnType::Type(arrow, Box::new(parse_quote!(#p::Response)));
    quote! {
        #(#outer)*
        #vis #sig {
            #(#inner)*
            #limits
            #concurrency
            #bounds
            #let_exempt
            let #key_ident = #key;
            #call
        }
    }
}

// Input:
//     #[rate_limit(rate = "5/s", key = tenant, deny = "error")]
//     async fn fetch(tenant: &str) -> Result<String, PartnerError> { STMTS }
// Output:
//     async fn fetch(tenant: &str) -> Result<String, PartnerError> {
//         let __flux_limits: ::flux::__private::Limits = /* limits_let */;
//         let __flux_key: ::flux::__private::Key = ::flux::__private::key_of(&(tenant));
//         if let ::core::result::Result::Err(__flux_err) =
//             ::flux::__private::plain(__flux_limits, __flux_key, ::flux::__private::Options { .. })
//                 .await
//         {
//             return ::core::result::Result::Err(::core::convert::From::from(__flux_err));
//         }
//         STMTS
//     }
// The signature is untouched and the statements follow the check in the same block, so
// `return` and `?` behave as before (and may declare items of any name: the limits' static
// is in a block of its own). Only "global" and expression keys reach here.
// `__flux_err` is spanned at the return type, where a missing `From<RateLimited>` is
// reported; its scope is the generated `return` alone.
fn plain(func: ItemFn, stack: &Stack) -> TokenStream {
    let krate = stack.krate.as_ref();
    let p = private(krate, Span::call_site());
    let key_ident = Ident::new("__flux_key", Span::mixed_site());
    let key = match &stack.key {
        Some((span, KeySpec::Expr(expr))) => {
            let private = private(krate, *span);
            quote_spanned!(*span=> #private::key_of(&(#expr)))
        }
        _ => quote!(#p::key_global()),
    };
    let ret_span = match &func.sig.output {
        ReturnType::Type(_, ty) => ty.span(),
        ReturnType::Default => func.sig.ident.span(),
    };
    // Spanned at the return type: "`From<RateLimited>` is not implemented" points there
    // (the argument too: rustc reports an unmet bound of a call at its argument).
    let err = Ident::new("__flux_err", ret_span);
    let deny = quote_spanned! {ret_span=>
        return ::core::result::Result::Err(::core::convert::From::from(#err));
    };
    let limits = limits_let(&func, stack);
    let limits_ident = limits_ident();
    let OptionsTokens {
        let_exempt,
        value: options,
    } = options(stack);
    let (outer, inner) = split_attrs(&func.attrs);
    let vis = &func.vis;
    let sig = &func.sig;
    let stmts = &func.block.stmts;
    quote! {
        #(#outer)*
        #vis #sig {
            #(#inner)*
            #limits
            #let_exempt
            let #key_ident: #p::Key = #key;
            if let ::core::result::Result::Err(#err) =
                #p::plain(#limits_ident, #key_ident, #options).await
            {
                #deny
            }
            #(#stmts)*
        }
    }
}

/// The declared return type with every `impl Trait` in it replaced by `_`, to pin the body's
/// output type (`typed::<T, _>`), and the `impl Trait` types so erased. The type is `None`
/// when nothing would be left to pin (it is `impl Trait` itself) or when an `impl` sits
/// where `_` is not allowed.
fn inferable(ty: &Type) -> (Option<Type>, Vec<TypeImplTrait>) {
    let mut erased = Vec::new();
    if let Type::ImplTrait(it) = ty {
        erased.push(it.clone());
        return (None, erased);
    }
    let mut ty = ty.clone();
    let pinned = erase_impl(&mut ty, &mut erased).then_some(ty);
    (pinned, erased)
}

fn erase_impl(ty: &mut Type, erased: &mut Vec<TypeImplTrait>) -> bool {
    match ty {
        Type::ImplTrait(it) => {
            erased.push(it.clone());
            *ty = parse_quote!(_);
            true
        }
        Type::Path(path) => {
            if let Some(qself) = &mut path.qself
                && !erase_impl(&mut qself.ty, erased)
            {
                return false;
            }
            path.path
                .segments
                .iter_mut()
                .all(|segment| match &mut segment.arguments {
                    PathArguments::None => true,
                    PathArguments::AngleBracketed(generics) => {
                        generics.args.iter_mut().all(|arg| match arg {
                            GenericArgument::Type(ty) => erase_impl(ty, erased),
                            other => !contains_impl(other.to_token_stream()),
                        })
                    }
                    PathArguments::Parenthesized(args) => !contains_impl(args.to_token_stream()),
                })
        }
        Type::Tuple(tuple) => tuple.elems.iter_mut().all(|ty| erase_impl(ty, erased)),
        Type::Array(array) => erase_impl(&mut array.elem, erased),
        Type::Slice(slice) => erase_impl(&mut slice.elem, erased),
        Type::Reference(reference) => erase_impl(&mut reference.elem, erased),
        Type::Ptr(ptr) => erase_impl(&mut ptr.elem, erased),
        Type::Paren(paren) => erase_impl(&mut paren.elem, erased),
        Type::Group(group) => erase_impl(&mut group.elem, erased),
        other => !contains_impl(other.to_token_stream()),
    }
}

fn contains_impl(tokens: TokenStream) -> bool {
    tokens.into_iter().any(|tree| match tree {
        TokenTree::Ident(ident) => ident == "impl",
        TokenTree::Group(group) => contains_impl(group.stream()),
        _ => false,
    })
}

// Input:  -> Result<impl IntoResponse + Send + 'static, AppError>   (erased by `inferable`)
// Output: const _: () = {
//             #[allow(dead_code)]
//             fn __flux_declared_bounds<__FluxR: IntoResponse + Send>() {}
//         };
// The declared `impl Trait` leaves the signature, so its trait paths would no longer be
// resolved: a misspelt trait would compile and its `use` would warn as unused. This keeps
// them named. Only bounds that are plain paths (no generic arguments, `Self`, lifetimes or
// modifiers) are kept: a nested fn cannot see the outer fn's (or impl's) generics. The fn
// sits in a `const _` block of its own, so the body neither sees nor clashes with it.
fn declared_bounds(erased: &[TypeImplTrait]) -> TokenStream {
    let plain: Vec<&syn::Path> = erased
        .iter()
        .flat_map(|it| &it.bounds)
        .filter_map(|bound| match bound {
            TypeParamBound::Trait(TraitBound {
                paren_token: None,
                modifier: TraitBoundModifier::None,
                lifetimes: None,
                path,
            }) if path
                .segments
                .iter()
                .all(|s| matches!(s.arguments, PathArguments::None) && s.ident != "Self") =>
            {
                Some(path)
            }
            _ => None,
        })
        .collect();
    if plain.is_empty() {
        return TokenStream::new();
    }
    quote! {
        const _: () = {
            #[allow(dead_code)]
            fn __flux_declared_bounds<__FluxR: #(#plain)+*>() {}
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every ident in `tokens`, groups included.
    fn idents(tokens: TokenStream) -> Vec<String> {
        tokens
            .into_iter()
            .flat_map(|tree| match tree {
                TokenTree::Ident(ident) => vec![ident.to_string()],
                TokenTree::Group(group) => idents(group.stream()),
                _ => Vec::new(),
            })
            .collect()
    }

    #[test]
    fn a_renamed_crate_replaces_every_flux_path() {
        let cases = [
            (
                quote!(rate = "1/s", crate = "renamed"),
                quote! {
                    #[renamed::rate_limit(rate = "100/h")]
                    async fn by_ip() -> Result<impl IntoResponse, E> { Ok("ok") }
                },
            ),
            (
                quote!(
                    rate = "1/s",
                    key = "header:x-api-key",
                    on_error = "closed",
                    crate = "renamed"
                ),
                quote!(
                    async fn short_header() {}
                ),
            ),
            (
                quote!(
                    rate = "1/s",
                    key = "header:x-a-header-name-longer-than-32-bytes",
                    crate = "renamed"
                ),
                quote!(
                    async fn long_header() -> &'static str {
                        "ok"
                    }
                ),
            ),
            (
                quote!(rate = "1/s", key = user.id, crate = "::deps::renamed"),
                quote! {
                    #[deps::renamed::rate_limit(rate = "100/h", crate = "::deps::renamed")]
                    #[rate_limit(rate = "1000/day", key = user.id)]
                    async fn by_expr(user: User) -> String { user.name }
                },
            ),
            (
                quote!(
                    rate = "1/s",
                    key = "global",
                    deny = "error",
                    crate = "renamed"
                ),
                quote!(
                    async fn plain_global() -> Result<(), E> {
                        Ok(())
                    }
                ),
            ),
            (
                quote!(
                    rate = "1/s",
                    key = tenant,
                    deny = "error",
                    crate = "renamed"
                ),
                quote!(
                    async fn plain_expr(tenant: &str) -> Result<(), E> {
                        Ok(())
                    }
                ),
            ),
        ];
        for (args, item) in cases {
            let idents = idents(expand(Kind::RateLimit, args, item));
            let text = idents.join(" ");
            assert!(!idents.iter().any(|i| i == "compile_error"), "{text}");
            assert!(!idents.iter().any(|i| i == "flux"), "{text}");
            assert!(idents.iter().any(|i| i == "renamed"), "{text}");
            // The stacked attributes were collected, not left to expand on their own.
            assert!(!idents.iter().any(|i| i == "rate_limit"), "{text}");
        }
    }

    #[test]
    fn flux_is_the_default_crate() {
        let idents = idents(expand(
            Kind::RateLimit,
            quote!(rate = "1/s"),
            quote!(
                async fn handler() {}
            ),
        ));
        assert!(idents.iter().any(|i| i == "flux"));
    }
}
