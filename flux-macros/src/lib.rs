//! The `#[rate_limit]` attribute. Use it through the `flux` crate.

use proc_macro::TokenStream;

/// Placeholder (being written).
#[proc_macro_attribute]
pub fn rate_limit(_args: TokenStream, item: TokenStream) -> TokenStream {
    item
}
