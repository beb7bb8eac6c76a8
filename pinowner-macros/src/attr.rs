//! Parsing `#[pin_tracked(...)]` arguments.

use proc_macro2::{TokenStream, TokenTree};
use syn::meta::ParseNestedMeta;
use syn::parse::{ParseStream, Parser};
use syn::{LitStr, Path, Token};

/// The arguments `#[pin_tracked]` accepts, for messages.
const ARGUMENTS: [&str; 3] = ["subsystem", "name", "crate"];

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
        reject_bare_literals(&args)?;
        let mut out = Args::default();
        let parser = syn::meta::parser(|meta| out.parse_one(meta));
        parser.parse2(args)?;
        Ok(out)
    }

    fn parse_one(&mut self, meta: ParseNestedMeta<'_>) -> syn::Result<()> {
        if meta.path.is_ident("subsystem") {
            let value = non_empty_string(&meta, "subsystem", "subsystem = \"dma\"")?;
            set_once(&mut self.subsystem, value, &meta, "subsystem")
        } else if meta.path.is_ident("name") {
            let value = non_empty_string(&meta, "name", "name = \"rx_refill\"")?;
            set_once(&mut self.name, value, &meta, "name")
        } else if meta.path.is_ident("crate") {
            const EXAMPLE: &str = "crate = ::pinowner";
            let input = value_of(&meta, EXAMPLE)?;
            if input.peek(LitStr) {
                let lit = input.parse::<LitStr>()?;
                return Err(syn::Error::new(
                    lit.span(),
                    format_args!("`crate` takes a path, not a string: `crate = {}`", lit.value()),
                ));
            }
            if !starts_a_path(input) {
                return Err(input.error(format_args!("expected a path to `pinowner`: `{EXAMPLE}`")));
            }
            let value = input.call(Path::parse_mod_style)?;
            set_once(&mut self.krate, value, &meta, "crate")
        } else {
            let given = path_to_string(&meta.path);
            let hint = match closest(&given) {
                Some(arg) => format!("did you mean `{arg}`?"),
                None => format!("expected `{}`, `{}` or `{}`", ARGUMENTS[0], ARGUMENTS[1], ARGUMENTS[2]),
            };
            Err(meta.error(format_args!("unknown `pin_tracked` argument `{given}`; {hint}")))
        }
    }
}

/// Fails on a string literal given where an argument's name belongs, as in
/// `#[pin_tracked("dma")]`, showing the named form.
fn reject_bare_literals(args: &TokenStream) -> syn::Result<()> {
    let mut at_start = true;
    for token in args.clone() {
        match &token {
            TokenTree::Punct(p) if p.as_char() == ',' => at_start = true,
            TokenTree::Literal(_) if at_start => {
                let value = match syn::parse2::<LitStr>(token.clone().into()) {
                    Ok(lit) => lit.value(),
                    Err(_) => token.to_string(),
                };
                return Err(syn::Error::new(
                    token.span(),
                    format_args!(
                        "`pin_tracked` arguments are named: write `subsystem = \"{value}\"` \
                         (or `name = \"{value}\"` for the site's name)"
                    ),
                ));
            }
            _ => at_start = false,
        }
    }
    Ok(())
}

/// The known argument `given` is most likely a misspelling of, if any.
fn closest(given: &str) -> Option<&'static str> {
    ARGUMENTS
        .iter()
        .map(|arg| (edit_distance(given, arg), *arg))
        .filter(|(d, arg)| *d <= arg.len() / 3 + 1)
        .min_by_key(|(d, _)| *d)
        .map(|(_, arg)| arg)
}

/// Levenshtein distance, counting a swap of two neighbours as one edit
/// (`subsytem` is one edit from `subsystem`, `nmae` one from `name`).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    // d[i][j]: the distance between a[..i] and b[..j].
    let mut d = vec![vec![0; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// Whether the input begins with something `Path::parse_mod_style` takes.
fn starts_a_path(input: ParseStream<'_>) -> bool {
    input.peek(Token![::])
        || input.peek(Token![crate])
        || input.peek(Token![self])
        || input.peek(Token![super])
        || input.peek(syn::Ident)
}

/// The input after `name =`, or an error on the argument's name showing
/// `example` when the `=` is missing.
fn value_of<'a>(meta: &ParseNestedMeta<'a>, example: &str) -> syn::Result<ParseStream<'a>> {
    if !meta.input.peek(Token![=]) {
        return Err(syn::Error::new_spanned(&meta.path, format_args!("expected a value: `{example}`")));
    }
    meta.value()
}

/// A string literal value, with an example in the error otherwise; an empty
/// string is an error too.
fn non_empty_string(meta: &ParseNestedMeta<'_>, what: &str, example: &str) -> syn::Result<LitStr> {
    let input = value_of(meta, example)?;
    if !input.peek(LitStr) {
        return Err(input.error(format_args!("expected a string literal: `{example}`")));
    }
    let value = input.parse::<LitStr>()?;
    if value.value().is_empty() {
        return Err(syn::Error::new(value.span(), format_args!("`{what}` must not be empty")));
    }
    Ok(value)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_swap_or_one_wrong_letter_is_one_edit() {
        assert_eq!(edit_distance("subsytem", "subsystem"), 1);
        assert_eq!(edit_distance("nmae", "name"), 1);
        assert_eq!(edit_distance("crat", "crate"), 1);
        assert_eq!(edit_distance("", "name"), 4);
    }

    #[test]
    fn misspellings_suggest_the_closest_argument_and_strangers_none() {
        assert_eq!(closest("subsytem"), Some("subsystem"));
        assert_eq!(closest("subsys"), Some("subsystem"));
        assert_eq!(closest("sub"), None);
        assert_eq!(closest("nam"), Some("name"));
        assert_eq!(closest("krate"), Some("crate"));
        assert_eq!(closest("level"), None);
    }
}
