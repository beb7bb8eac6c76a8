//! Code generation for `#[pin_tracked]`.
//!
//! A tracked function keeps its signature and attributes (inner attributes
//! such as `#![allow(..)]` stay at the start of its body). The site is a
//! `static` declared inside a block expression, so no name the macro
//! generates is visible to the body:
//!
//! ```text
//! SITE = { static __PINOWNER_SITE: ::pinowner::__private::Site = Site::new(name, module_path!(), file!(), line!(), subsystem); &__PINOWNER_SITE }
//! ```
//!
//! A plain function's body becomes
//!
//! ```text
//! {
//!     match ::pinowner::__private::enter(SITE) {
//!         _ => { original body }
//!     }
//! }
//! ```
//!
//! (the guard is the `match`'s scrutinee, alive until the `match` ends, on
//! return and unwind alike), an `async fn`'s
//!
//! ```text
//! {
//!     ::pinowner::__private::Tracked::new(SITE, async move {
//!         ::core::convert::identity::<ReturnType>({ original body })
//!     }).await
//! }
//! ```
//!
//! so the site is entered on each poll of the body, never held across an
//! `.await`; and a function that returns a future (`-> impl Future<..>` or
//! `-> Pin<Box<dyn Future<..>>>`, which is also what `#[async_trait]` makes
//! of an `async fn`) runs its body under the site and wraps the future it
//! returns, whichever `return` it comes from:
//!
//! ```text
//! {
//!     match ::pinowner::__private::enter(SITE) {
//!         _ => ::pinowner::__private::Tracked::new(
//!             ::pinowner::site::current().unwrap(), // SITE, just entered
//!             (move || -> ReturnType { original body })(),
//!         )
//!         // or, for `Pin<Box<dyn Future>>`: Box::pin(Tracked::new(..))
//!     }
//! }
//! ```
//!
//! Every path is absolute (`::pinowner::__private::…`, `::core::…`, or the
//! `crate = path` argument), and the expansion binds no name the body could
//! see or collide with: no `let` (a binding, hygienic or not, clashes with a
//! user's `static`, `const` or unit struct of the same name) and no item
//! outside the site's own block.

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::{quote, quote_spanned, ToTokens};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{AttrStyle, Expr, ForeignItemFn, Item, ItemFn, ReturnType, Stmt, Type, TypeParamBound, Visibility};

use crate::attr::Args;

/// Expands `#[pin_tracked(args)]` on `item`, or explains why it cannot.
pub(crate) fn expand(args: Args, item: TokenStream) -> syn::Result<TokenStream> {
    let func = match syn::parse2::<Item>(item.clone()) {
        Ok(Item::Fn(func)) => func,
        Ok(other) => return Err(not_a_function(other, item)),
        Err(err) => return Err(not_an_item(err, item)),
    };
    if let Some(const_token) = &func.sig.constness {
        return Err(syn::Error::new(
            const_token.span,
            "#[pin_tracked] cannot be applied to a `const fn`: entering a site at run time is not const",
        ));
    }
    if args.krate.is_none() {
        if let Some(name) = crate::manifest::renamed_pinowner() {
            return Err(syn::Error::new(
                Span::call_site(),
                format_args!(
                    "this crate depends on `pinowner` under the name `{name}` (see Cargo.toml), \
                     so `::pinowner` does not resolve: add `crate = ::{name}` to #[pin_tracked]"
                ),
            ));
        }
    }
    Ok(expand_fn(&args, func))
}

/// What a function gives back, as far as tracking it is concerned.
enum Returns {
    /// A value: the site is current while the body runs.
    Value,
    /// An `async fn`: the site is current during each poll of its body.
    Async,
    /// `impl Future<..>`: the body runs under the site, and the future it
    /// returns is wrapped in a `Tracked`.
    ImplFuture,
    /// `Pin<Box<dyn Future<..>>>`: as `ImplFuture`, boxed again.
    BoxedFuture,
}

fn expand_fn(args: &Args, func: ItemFn) -> TokenStream {
    let ItemFn { attrs, vis, modifiers, sig, block } = func;
    // `default fn` (specialization) is kept where the user wrote it.
    let defaultness = modifiers.defaultness;
    let (inner, outer): (Vec<_>, Vec<_>) = attrs.into_iter().partition(|a| matches!(a.style, AttrStyle::Inner(_)));
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
    // The static lives in a block of its own: the body cannot see it, and
    // an item of the user's with the same name is not shadowed.
    let site = quote! {{
        static __PINOWNER_SITE: #krate::__private::Site = #krate::__private::Site::new(
            #name,
            ::core::module_path!(),
            ::core::file!(),
            #line,
            #subsystem,
        );
        &__PINOWNER_SITE
    }};

    // The body's value goes through no `let`: a binding would clash with a
    // user's `static`, `const` or unit struct of the same name (E0530),
    // hygiene or not. The guard is a `match` scrutinee, which lives until
    // the `match` ends, on return and unwind alike.
    let enter = quote!(#krate::__private::enter(#site));
    let body = match returns(&sig) {
        Returns::Value => quote! {
            match #enter {
                _ => #block
            }
        },
        Returns::Async => {
            let typed = match &sig.output {
                ReturnType::Type(_, ty) if !mentions_impl(ty) => quote!(::core::convert::identity::<#ty>(#block)),
                _ => quote!(#block),
            };
            quote! {
                #krate::__private::Tracked::new(#site, async move { #typed }).await
            }
        }
        shape @ (Returns::ImplFuture | Returns::BoxedFuture) => {
            // The closure catches every `return` of the body. Its return
            // type is written out where it can be, so that `Box::pin(async
            // { .. })` coerces to the boxed trait object in each `return`.
            let annotation = match &sig.output {
                ReturnType::Type(arrow, ty) if !mentions_impl(ty) => quote!(#arrow #ty),
                _ => TokenStream::new(),
            };
            // The site was just entered, so it is the current one: naming
            // it so needs no binding (the arguments run in order).
            let tracked = quote! {
                #krate::__private::Tracked::new(
                    ::core::option::Option::unwrap(#krate::site::current()),
                    (move || #annotation #block)(),
                )
            };
            let wrapped = match shape {
                Returns::BoxedFuture => quote!(::std::boxed::Box::pin(#tracked)),
                _ => tracked,
            };
            quote! {
                match #enter {
                    _ => #wrapped
                }
            }
        }
    };

    quote! {
        #(#outer)*
        #vis #defaultness #sig {
            #(#inner)*
            #body
        }
    }
}

/// Recognises a returned future by its spelling: `async fn`, `impl ..Future<..>`
/// (any path ending in `Future`) or `Pin<Box<dyn ..Future<..>>>` (any paths
/// ending in `Pin`, `Box` and `Future`). A future behind a type alias
/// (`BoxFuture<'a, T>`) is not recognised.
fn returns(sig: &syn::Signature) -> Returns {
    if sig.asyncness.is_some() {
        return Returns::Async;
    }
    let ReturnType::Type(_, ty) = &sig.output else { return Returns::Value };
    match ungroup(ty) {
        Type::ImplTrait(it) if names_future(&it.bounds) => Returns::ImplFuture,
        Type::Path(pin) => {
            let boxed = single_type_arg(&pin.path, "Pin").and_then(|ty| match ungroup(ty) {
                Type::Path(b) => single_type_arg(&b.path, "Box"),
                _ => None,
            });
            match boxed.map(ungroup) {
                Some(Type::TraitObject(obj)) if names_future(&obj.bounds) => Returns::BoxedFuture,
                _ => Returns::Value,
            }
        }
        _ => Returns::Value,
    }
}

/// The type inside parentheses or an invisible group (from a `macro_rules`
/// `$ty`), or `ty` itself.
fn ungroup(ty: &Type) -> &Type {
    match ty {
        Type::Group(g) => ungroup(&g.elem),
        Type::Paren(p) => ungroup(&p.elem),
        other => other,
    }
}

/// Whether one of `bounds` is a trait whose path ends in `Future`.
fn names_future<'a>(bounds: impl IntoIterator<Item = &'a TypeParamBound>) -> bool {
    bounds.into_iter().any(|b| match b {
        TypeParamBound::Trait(t) => t.path.segments.last().is_some_and(|s| s.ident == "Future"),
        _ => false,
    })
}

/// `T` when `path` ends in `last<T>` (with `T` its only type argument).
fn single_type_arg<'a>(path: &'a syn::Path, last: &str) -> Option<&'a Type> {
    let seg = path.segments.last().filter(|s| s.ident == last)?;
    let syn::PathArguments::AngleBracketed(args) = &seg.arguments else { return None };
    let mut types = args.args.iter().filter_map(|a| match a {
        syn::GenericArgument::Type(ty) => Some(ty),
        _ => None,
    });
    let ty = types.next()?;
    types.next().is_none().then_some(ty)
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
            if let Ok(decl) = syn::parse2::<ForeignItemFn>(tokens.clone()) {
                return no_body(&decl);
            }
            return syn::Error::new_spanned(tokens, MSG);
        }
    };
    syn::Error::new(span, MSG)
}

/// The error for a function declared without a body, on its `;`. The same
/// tokens declare a trait method and a function of an `extern` block; the
/// message says which when the declaration shows it.
fn no_body(decl: &ForeignItemFn) -> syn::Error {
    let in_trait = decl.sig.receiver().is_some();
    let in_extern = !matches!(decl.vis, Visibility::Inherited) || decl.sig.variadic.is_some();
    let msg = if in_trait && !in_extern {
        "#[pin_tracked] needs a function body: put it on the implementations of this method"
    } else if in_extern && !in_trait {
        "#[pin_tracked] needs a function body, and a foreign function has none: \
         put it on a Rust function that calls this one"
    } else {
        "#[pin_tracked] needs a function body: on a trait method, put it on the implementations; \
         on a function of an `extern` block, put it on a Rust function that calls it"
    };
    syn::Error::new(decl.semi_token.span, msg)
}

/// The error for input that is not an item at all: a closure (an attribute
/// on a `let` or an expression) gets pointed to `pin_scope!`; anything else
/// keeps the parser's error.
fn not_an_item(err: syn::Error, tokens: TokenStream) -> syn::Error {
    let closure = match syn::parse2::<Stmt>(tokens.clone()) {
        Ok(Stmt::Local(local)) => local.init.map(|init| *init.expr),
        _ => syn::parse2::<Expr>(tokens).ok(),
    };
    match closure.as_ref().map(unparen) {
        Some(Expr::Closure(c)) => syn::Error::new(
            c.inputs_begin.span,
            "#[pin_tracked] cannot be applied to a closure: \
             wrap the closure's body in `pinowner::pin_scope!(\"name\", { .. })` instead",
        ),
        _ => err,
    }
}

/// The expression inside parentheses or an invisible group, or `expr`.
fn unparen(expr: &Expr) -> &Expr {
    match expr {
        Expr::Group(g) => unparen(&g.expr),
        Expr::Paren(p) => unparen(&p.expr),
        other => other,
    }
}

/// The item re-emitted untouched with `err` attached, so the rest of the
/// crate (and an IDE) still sees it. An expression (the attribute on a
/// closure) stays one expression.
pub(crate) fn with_error(err: &syn::Error, item: TokenStream) -> TokenStream {
    let err = err.to_compile_error();
    if syn::parse2::<Item>(item.clone()).is_err() && syn::parse2::<Expr>(item.clone()).is_ok() {
        return quote!({ #err #item });
    }
    quote!(#err #item)
}
