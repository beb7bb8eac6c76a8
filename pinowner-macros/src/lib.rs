//! `#[pin_tracked]`: owner sites for [`pinowner`](https://docs.rs/pinowner).
//!
//! Use it through `pinowner` (its default `macros` feature re-exports it as
//! `pinowner::pin_tracked`). Parsing lives in `attr`, code generation in
//! `expand`.

mod attr;
mod expand;

use proc_macro::TokenStream;

/// Makes a function an owner site: while its body runs, the pins and
/// references it takes (`get`, `pin`, `alloc`, handle clones) record the
/// function, not the line that called `pin`, as their acquirer. A failed
/// reservation can then name the function and subsystem holding each busy
/// page.
///
/// ```
/// use pinowner::{pin_tracked, Acquirer, PageArena, PagePin};
///
/// #[pin_tracked(subsystem = "dma")]
/// fn rx_refill(arena: &PageArena, pfn: usize) -> PagePin<&PageArena> {
///     arena.pin(pfn).unwrap()
/// }
///
/// let arena = PageArena::builder().pages(16).build()?;
/// let block = arena.alloc(0)?;
/// let pin = rx_refill(&arena, block.pfn());
/// let Some(Acquirer::Site(site)) = arena.page_info(block.pfn())?.acquirer else { panic!() };
/// assert_eq!(site.subsystem(), Some("dma"));
/// assert!(site.name().ends_with("::rx_refill"));
/// # drop(pin);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Arguments
///
/// - `subsystem = "dma"`: the subsystem reports group owners by.
/// - `name = "rx_refill"`: the site's name; by default the function's path
///   (`module_path!()` and the function name, e.g. `my_driver::rx::refill`;
///   a method is named after its module, not its type).
/// - `crate = path`: where `pinowner` lives, for crates that re-export it
///   (default `::pinowner`).
///
/// # What it does
///
/// The function gets a `static` site (name, module path, file, line,
/// subsystem), registered the first time it is entered, and its body runs
/// under a scope guard that makes the site the thread's current owner and
/// restores the previous owner on exit, panics included. Nested tracked
/// functions form a chain; the innermost is the owner
/// (`pinowner::site::current_chain` gives the rest).
///
/// On an `async fn`, the site is entered for each poll of the body's
/// future and left before the poll returns, so it is never current on a
/// thread while the future waits, and the future stays `Send` when its body
/// is.
///
/// Free functions, methods, trait implementations, generic functions and
/// `async fn` are accepted. `const fn` and anything that is not a function
/// with a body are compile errors.
#[proc_macro_attribute]
pub fn pin_tracked(args: TokenStream, item: TokenStream) -> TokenStream {
    let item = proc_macro2::TokenStream::from(item);
    match attr::Args::parse(args.into()).and_then(|args| expand::expand(args, item.clone())) {
        Ok(expanded) => expanded.into(),
        Err(err) => expand::with_error(&err, item).into(),
    }
}
