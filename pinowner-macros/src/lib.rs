//! `#[pin_tracked]`: owner sites for [`pinowner`](https://docs.rs/pinowner).
//!
//! Use it through `pinowner` (its default `macros` feature re-exports it as
//! `pinowner::pin_tracked`). Parsing lives in `attr`, code generation in
//! `expand`, and `manifest` spots a renamed `pinowner` dependency.

mod attr;
mod expand;
mod manifest;

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
///   or rename the dependency (default `::pinowner`). Without it, a crate
///   whose `Cargo.toml` renames `pinowner` (`po = { package = "pinowner",
///   .. }`) gets an error saying to write `crate = ::po`.
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
/// A function that returns a future, written `-> impl Future<..>` or
/// `-> Pin<Box<dyn Future<..>>>`, runs its body under the site and returns
/// its future wrapped so that each poll enters the site too, whoever polls
/// it; the wrapper is `Send` and `Unpin` when the future is. This covers
/// `async fn` in an `#[async_trait]` impl with the attribute on the method
/// (`#[async_trait]` expands first and leaves a function returning
/// `Pin<Box<dyn Future + Send + 'async_trait>>`). Returned futures are
/// recognised by how the return type is spelled: behind a type alias
/// (`BoxFuture<'a, T>`) only the building is tracked.
///
/// ```
/// use std::future::Future;
/// use pinowner::{pin_scope, pin_tracked, Acquirer, PageArena, PagePin};
///
/// #[pin_tracked(subsystem = "dma")]
/// fn refill_later(arena: &PageArena, pfn: usize) -> impl Future<Output = PagePin<&PageArena>> + '_ {
///     async move { arena.pin(pfn).unwrap() }
/// }
///
/// let arena = PageArena::builder().pages(16).build()?;
/// let block = arena.alloc(0)?;
/// let fut = refill_later(&arena, block.pfn());
/// // Polled by code under another site, the pin still names `refill_later`.
/// let mut fut = std::pin::pin!(fut);
/// let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
/// let std::task::Poll::Ready(pin) = pin_scope!("executor", { fut.as_mut().poll(&mut cx) }) else { panic!() };
/// let Some(Acquirer::Site(site)) = arena.page_info(block.pfn())?.acquirer else { panic!() };
/// assert!(site.name().ends_with("::refill_later"));
/// # drop(pin);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// The site is the running thread's: a thread spawned from a tracked
/// function starts without it (see "Spawned threads" in `pinowner::site`
/// for carrying it across).
///
/// The expansion binds no name the body can see: a user item called
/// `__PINOWNER_SITE` (or anything else) keeps its meaning inside the body,
/// and inner attributes (`#![allow(..)]`, `//!`) stay at the top of the
/// body.
///
/// Free functions, methods, trait implementations, generic functions and
/// `async fn` are accepted. `const fn` and anything that is not a function
/// with a body (a trait method's declaration, a function of an `extern`
/// block, a closure: use `pinowner::pin_scope!` there) are compile errors.
#[proc_macro_attribute]
pub fn pin_tracked(args: TokenStream, item: TokenStream) -> TokenStream {
    let item = proc_macro2::TokenStream::from(item);
    match attr::Args::parse(args.into()).and_then(|args| expand::expand(args, item.clone())) {
        Ok(expanded) => expanded.into(),
        Err(err) => expand::with_error(&err, item).into(),
    }
}
