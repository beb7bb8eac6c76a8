//! Code generation for `#[pin_tracked]`.
//!
//! A tracked function keeps its signature and attributes; its body becomes
//!
//! ```text
//! {
//!     static __PINOWNER_SITE: ::pinowner::__private::Site = Site::new(name, module_path!(), file!(), line!(), subsystem);
//!     let __pinowner_guard = ::pinowner::__private::enter(&__PINOWNER_SITE);
//!     { original body }
//! }
//! ```
//!
//! and for an `async fn`
//!
//! ```text
//! {
//!     static __PINOWNER_SITE: ... ;
//!     ::pinowner::__private::Tracked::new(&__PINOWNER_SITE, async move {
//!         let __pinowner_ret: ReturnType = { original body };
//!         __pinowner_ret
//!     }).await
//! }
//! ```
//!
//! so the site is entered on each poll of the body, never held across an
//! `.await`. Every path is absolute (`::pinowner::__private::…`, `::core::…`,
//! or the `crate = path` argument), and the generated locals have mixed-site
//! hygiene, so user names cannot collide with them.

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::{quote, quote_spanned, ToTokens};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{Item, ItemFn, ReturnType, TraitItemFn, Type};

use crate::attr::Args;

/// Expands `#[pin_tracked(args)]` on `item`, or explains why it cannot.
pub(crate) fn expand(args: Args, item: TokenStream) -> syn::Result<TokenStream> {
    let func = match syn::parse2::<Item>(item.clone())? {
        Item::Fn(func) => func,
        other => return Err(not_a_function(other, item)),
    };
    if let Some(const_token) = &func.sig.constness {
        return Err(syn::Error::new(
            const_token.span,
            "#[pin_tracked] cannot be applied to a `const fn`: entering a site at run time is not const",
        ));
    }
    Ok(expand_fn(&args, func))
}

fn expand_fn(args: &Args, func: ItemFn) -> TokenStream {
    let ItemFn { attrs, vis, sig, block } = func;
    let krate = match &args.krate {
        Some(path) => path.to_token_stream(),
        None => quote!(::pinowner),
    };
    let ident = &sig.ident;
    let name = match &args.name {
        Some(lit) => lit.to_token_stream(),
        None => {
            let fn_name = ident.unraw().to_string();
            quote!(::core::concat!(::core::module_path!(), "::", #fn_name))
        }
    };
    let subsystem = match &args.subsystem {
        Some(lit) => quote!(::core::option::Option::Some(#lit)),
        None => quote!(::core::option::Option::None),
    };
    // `line!()` names the function's own line, not the attribute's.
    let line = quote_spanned!(ident.span()=> ::core::line!());
    let site = quote! {
        static __PINOWNER_SITE: #krate::__private::Site = #krate::__private::Site::new(
            #name,
            ::core::module_path!(),
            ::core::file!(),
            #line,
            #subsystem,
        );
    };

    let mixed = Span::mixed_site();
    let body = if sig.asyncness.is_some() {
        let ret = syn::Ident::new("__pinowner_ret", mixed);
        let typed = match &sig.output {
            ReturnType::Type(_, ty) if !mentions_impl(ty) => quote_spanned! {mixed=>
                let #ret: #ty = #block;
                #ret
            },
            _ => quote!(#block),
        };
        quote! {
            #site
            #krate::__private::Tracked::new(&__PINOWNER_SITE, async move { #typed }).await
        }
    } else {
        let guard = syn::Ident::new("__pinowner_guard", mixed);
        quote! {
            #site
            let #guard = #krate::__private::enter(&__PINOWNER_SITE);
            #block
        }
    };

    quote! {
        #(#attrs)*
        #vis #sig {
            #body
        }
    }
}

/// True when a type contains `impl Trait`, which a `let` cannot name.
fn mentions_impl(ty: &Type) -> bool {
    fn walk(tokens: TokenStream) -> bool {
        tokens.into_iter().any(|t| match t {
            TokenTree::Ident(i) => i == "impl",
            TokenTree::Group(g) => walk(g.stream()),
            _ => false,
        })
    }
    walk(ty.to_token_stream())
}

/// The error for an item that is not a function with a body, on its keyword.
fn not_a_function(item: Item, tokens: TokenStream) -> syn::Error {
    const MSG: &str = "#[pin_tracked] can only be applied to functions";
    let span = match &item {
        Item::Const(i) => i.const_token.span,
        Item::Enum(i) => i.enum_token.span,
        Item::ExternCrate(i) => i.extern_token.span,
        Item::ForeignMod(i) => i.abi.extern_token.span,
        Item::Impl(i) => i.impl_token.span,
        Item::Macro(i) => i.mac.path.span(),
        Item::Mod(i) => i.mod_token.span,
        Item::Static(i) => i.static_token.span,
        Item::Struct(i) => i.struct_token.span,
        Item::Trait(i) => i.trait_token.span,
        Item::TraitAlias(i) => i.trait_token.span,
        Item::Type(i) => i.type_token.span,
        Item::Union(i) => i.union_token.span,
        Item::Use(i) => i.use_token.span,
        _ => {
            // A function declared without a body (in a trait or an extern
            // block) parses as verbatim tokens.
            if let Ok(decl) = syn::parse2::<TraitItemFn>(tokens.clone()) {
                if decl.default.is_none() {
                    let span = decl.semi_token.map_or_else(|| decl.sig.ident.span(), |s| s.span);
                    return syn::Error::new(
                        span,
                        "#[pin_tracked] needs a function body: put it on the implementations of this method",
                    );
                }
            }
            return syn::Error::new_spanned(tokens, MSG);
        }
    };
    syn::Error::new(span, MSG)
}
