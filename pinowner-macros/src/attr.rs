//! Parsing `#[pin_tracked(...)]` arguments.

use proc_macro2::TokenStream;
use syn::meta::ParseNestedMeta;
use syn::parse::{ParseStream, Parser};
use syn::{LitStr, Path, Token};

/// The arguments of one `#[pin_tracked]`, each given at most once.
#[derive(Default)]
pub(crate) struct Args {
    /// `subsystem = "dma"`.
    pub(crate) subsystem: Option<LitStr>,
    /// `name = "rx_refill"`; the function path when absent.
    pub(crate) name: Option<LitStr>,
    /// `crate = path`: where `pinowner` is reachable (for re-exports).
    pub(crate) krate: Option<Path>,
}

impl Args {
    /// Parses the attribute's argument list (possibly empty).
    pub(crate) fn parse(args: TokenStream) -> syn::Result<Args> {
        let mut out = Args::default();
        let parser = syn::meta::parser(|meta| out.parse_one(meta));
        parser.parse2(args)?;
        Ok(out)
    }

    fn parse_one(&mut self, meta: ParseNestedMeta<'_>) -> syn::Result<()> {
        if meta.path.is_ident("subsystem") {
            let value = string_value(&meta, "subsystem = \"dma\"")?;
            set_once(&mut self.subsystem, value, &meta, "subsystem")
        } else if meta.path.is_ident("name") {
            let value = string_value(&meta, "name = \"rx_refill\"")?;
            if value.value().is_empty() {
                return Err(syn::Error::new(value.span(), "`name` must not be empty"));
            }
            set_once(&mut self.name, value, &meta, "name")
        } else if meta.path.is_ident("crate") {
            let input = value_of(&meta, "crate = ::pinowner")?;
            if input.peek(LitStr) {
                let lit = input.parse::<LitStr>()?;
                return Err(syn::Error::new(
                    lit.span(),
                    format_args!("`crate` takes a path, not a string: `crate = {}`", lit.value()),
                ));
            }
            let value = input.call(Path::parse_mod_style)?;
            set_once(&mut self.krate, value, &meta, "crate")
        } else {
            Err(meta.error(format_args!(
                "unknown `pin_tracked` argument `{}`; expected `subsystem`, `name` or `crate`",
                path_to_string(&meta.path)
            )))
        }
    }
}

/// The input after `name =`, or an error on the argument's name showing
/// `example` when the `=` is missing.
fn value_of<'a>(meta: &ParseNestedMeta<'a>, example: &str) -> syn::Result<ParseStream<'a>> {
    if !meta.input.peek(Token![=]) {
        return Err(syn::Error::new_spanned(&meta.path, format_args!("expected a value: `{example}`")));
    }
    meta.value()
}

/// A string literal value, with an example in the error otherwise.
fn string_value(meta: &ParseNestedMeta<'_>, example: &str) -> syn::Result<LitStr> {
    let input = value_of(meta, example)?;
    if input.peek(LitStr) {
        return input.parse();
    }
    Err(input.error(format_args!("expected a string literal: `{example}`")))
}

/// Stores an argument, or fails (on the argument's name) if it was given
/// before.
fn set_once<T>(slot: &mut Option<T>, value: T, meta: &ParseNestedMeta<'_>, what: &str) -> syn::Result<()> {
    if slot.is_some() {
        return Err(syn::Error::new_spanned(&meta.path, format_args!("duplicate `{what}` argument")));
    }
    *slot = Some(value);
    Ok(())
}

fn path_to_string(path: &Path) -> String {
    let mut s = String::new();
    if path.leading_colon.is_some() {
        s.push_str("::");
    }
    for (i, seg) in path.segments.iter().enumerate() {
        if i > 0 {
            s.push_str("::");
        }
        s.push_str(&seg.ident.to_string());
    }
    s
}
