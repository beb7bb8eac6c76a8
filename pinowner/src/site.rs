//! Owner sites: static descriptions of the code that takes counts.
//!
//! A [`Site`] names a function (and its subsystem) that acquires pages. Its
//! address is what the descriptor's owner slot stores, so naming an owner
//! costs one pointer store and no lookup.
//!
//! # The current site
//!
//! Each thread has a *current site*: the innermost tracked scope it is
//! running. Every `get`, `pin`, `alloc` and handle clone records it in the
//! page's owner slot (or the caller's `#[track_caller]` location when no
//! site is current). Scopes are entered by
//!
//! - `#[pin_tracked]` on a function (the whole body; for an `async fn`, each
//!   poll of its future; for a function returning a future, the body and
//!   each poll of the future it returns),
//! - [`pin_scope!`](crate::pin_scope) around a block,
//! - [`enter`], which returns a [`SiteGuard`] that leaves the scope on drop,
//! - [`Tracked`], which enters a site for each poll of a future.
//!
//! Scopes nest: the innermost is the owner, and [`current_chain`] gives the
//! chain back to the outermost (the last [`MAX_CHAIN`] of them), for
//! reports. Entering and leaving cost about a nanosecond each: a few
//! thread-local stores, no allocation, no lock.
//!
//! ```
//! use pinowner::site::{self, Site};
//! use pinowner::{Acquirer, PageArena};
//!
//! static RX_REFILL: Site = Site::new("rx_refill", module_path!(), file!(), line!(), Some("dma"));
//!
//! let arena = PageArena::builder().pages(16).build()?;
//! let block = arena.alloc(0)?;
//! let pin = {
//!     let _scope = site::enter(&RX_REFILL);
//!     arena.pin(block.pfn())?
//! };
//! let info = arena.page_info(block.pfn())?;
//! assert_eq!(info.acquirer, Some(Acquirer::Site(&RX_REFILL)));
//! assert_eq!(site::current(), None);
//! # drop(pin);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Spawned threads
//!
//! The current site belongs to the thread: a thread spawned inside a
//! tracked scope starts with no site, and its pins record the line that
//! took them. To keep them attributed, carry the site across — read it with
//! [`current`] before spawning and [`enter`] it first thing in the thread —
//! or give the thread's work a site of its own with
//! [`pin_scope!`](crate::pin_scope) or a `#[pin_tracked]` function. Only the
//! innermost site travels; the spawned thread's [`current_chain`] starts
//! from it.
//!
//! ```
//! use std::sync::Arc;
//! use pinowner::{pin_scope, site, Acquirer, PageArena};
//!
//! let arena = Arc::new(PageArena::builder().pages(16).build()?);
//! let (a, b) = (arena.alloc(0)?, arena.alloc(0)?);
//! let (pa, pb) = (a.pfn(), b.pfn());
//! let pins = pin_scope!("rx_refill", subsystem = "dma", {
//!     // Carry this scope's site into the worker.
//!     let owner = site::current();
//!     let arena = arena.clone();
//!     std::thread::spawn(move || {
//!         let _scope = owner.map(site::enter);
//!         let carried = arena.pin_owned(pa);
//!         drop(_scope);
//!         // No site: recorded as the line that pins.
//!         let bare = arena.pin_owned(pb);
//!         (carried, bare)
//!     })
//!     .join()
//!     .unwrap()
//! });
//! let Some(Acquirer::Site(owner)) = arena.page_info(pa)?.acquirer else { panic!() };
//! assert_eq!((owner.name(), owner.subsystem()), ("rx_refill", Some("dma")));
//! assert!(matches!(arena.page_info(pb)?.acquirer, Some(Acquirer::Location(_))));
//! # drop(pins);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use core::cell::Cell;
use core::fmt;
use core::future::Future;
use core::marker::PhantomData;
use core::mem::ManuallyDrop;
use core::pin::Pin;
use core::task::{Context, Poll};

use crate::page::slot::{self, Who};
use crate::sync::{ConstAtomicBool, ConstMutex};

/// A static description of an owner: the function and subsystem that take
/// pins. Declared by `#[pin_tracked]` or [`pin_scope!`](crate::pin_scope),
/// or by hand as a `static` passed to [`enter`].
#[derive(Debug)]
#[repr(align(8))]
pub struct Site {
    name: &'static str,
    module: &'static str,
    file: &'static str,
    line: u32,
    subsystem: Option<&'static str>,
    /// Set once the site is in the registry; read on every [`enter`].
    registered: ConstAtomicBool,
}

impl Site {
    /// A site. Normally written by `#[pin_tracked]`, not by hand. It must
    /// live in a `static` to be entered.
    pub const fn new(
        name: &'static str,
        module: &'static str,
        file: &'static str,
        line: u32,
        subsystem: Option<&'static str>,
    ) -> Site {
        Site { name, module, file, line, subsystem, registered: ConstAtomicBool::new(false) }
    }

    /// The owner's name (the function path unless overridden).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The module the site was declared in.
    pub fn module(&self) -> &'static str {
        self.module
    }

    /// The source file of the declaration.
    pub fn file(&self) -> &'static str {
        self.file
    }

    /// The line of the declaration.
    pub fn line(&self) -> u32 {
        self.line
    }

    /// The subsystem, if one was given.
    pub fn subsystem(&self) -> Option<&'static str> {
        self.subsystem
    }

    /// Whether the site has been entered at least once (and so appears in
    /// [`registered_sites`]).
    pub fn is_registered(&self) -> bool {
        self.registered.load(core::sync::atomic::Ordering::Acquire)
    }

    /// Adds the site to the registry the first time it is entered.
    #[inline(always)]
    fn register(&'static self) {
        if !self.registered.load(core::sync::atomic::Ordering::Relaxed) {
            self.register_slow();
        }
    }

    #[cold]
    #[inline(never)]
    fn register_slow(&'static self) {
        let mut sites = REGISTRY.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Under the lock, so two threads entering a new site at once push it
        // once.
        if !self.registered.load(core::sync::atomic::Ordering::Relaxed) {
            sites.push(self);
            self.registered.store(true, core::sync::atomic::Ordering::Release);
        }
    }
}

/// Sites are compared by identity: each is one `static`.
impl PartialEq for Site {
    fn eq(&self, other: &Site) -> bool {
        core::ptr::eq(self, other)
    }
}

impl Eq for Site {}

impl core::hash::Hash for Site {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        (self as *const Site).hash(state)
    }
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.subsystem {
            Some(s) => write!(f, "{s}/{} ({}:{})", self.name, self.file, self.line),
            None => write!(f, "{} ({}:{})", self.name, self.file, self.line),
        }
    }
}

// ----- registry ------------------------------------------------------------

/// Every site entered so far, in order of first use.
static REGISTRY: ConstMutex<Vec<&'static Site>> = ConstMutex::new(Vec::new());

/// Every site entered at least once in this process, in order of first use.
/// Reports use it to list owners by name, including those that hold nothing
/// right now.
pub fn registered_sites() -> Vec<&'static Site> {
    REGISTRY.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
}

// ----- the per-thread scope stack ---------------------------------------------

/// How many scopes [`current_chain`] reports: the innermost `MAX_CHAIN`
/// of a thread's nested tracked scopes. Deeper nesting still works; the
/// outermost scopes are left out of the chain (see [`SiteChain::depth`]).
pub const MAX_CHAIN: usize = 8;

const _: () = assert!(MAX_CHAIN.is_power_of_two());

/// One thread's tracked scopes.
///
/// `ring[d % MAX_CHAIN]` holds the site of the scope at depth `d` for the
/// innermost `MAX_CHAIN` scopes. A scope that overwrites a slot keeps the old
/// value in its guard and puts it back on exit, so scopes left in reverse
/// order (as lexical scopes and polls are) always leave the ring exact.
/// `current` duplicates the innermost entry, as the owner slot stores it (a
/// tagged pointer, [`slot::site_word`], 0 for none), so the hot path reads
/// one cell and uses it as it is.
struct Frames {
    current: Cell<u64>,
    depth: Cell<u32>,
    ring: [Cell<Option<&'static Site>>; MAX_CHAIN],
}

impl Frames {
    const fn new() -> Frames {
        Frames { current: Cell::new(0), depth: Cell::new(0), ring: [const { Cell::new(None) }; MAX_CHAIN] }
    }
}

crate::sync::thread_local_const! {
    static FRAMES: Frames = const { Frames::new() };
}

#[inline(always)]
fn slot(depth: u32) -> usize {
    depth as usize & (MAX_CHAIN - 1)
}

/// The site this thread is running under, if any: the innermost tracked
/// scope.
#[inline]
pub fn current() -> Option<&'static Site> {
    slot::site_of(FRAMES.with(|f| f.current.get()))
}

/// The acquirer to record for a count taken here: the current site, or the
/// caller's location.
#[track_caller]
#[inline(always)]
pub(crate) fn owner_here() -> Who {
    owner_at(core::panic::Location::caller())
}

/// The acquirer at location `at`: the thread's current site, or else `at`.
#[inline(always)]
pub(crate) fn owner_at(at: &'static core::panic::Location<'static>) -> Who {
    let site = FRAMES.with(|f| f.current.get());
    let word = if site != 0 { site } else { slot::location_word(at) };
    Who::from_tagged(word)
}

/// Makes `site` the thread's current owner until the returned guard drops.
/// The first call for a site adds it to the registry ([`registered_sites`]).
///
/// Guards are meant to be dropped in reverse order of creation, as lexical
/// scopes are. A guard that is leaked (`mem::forget`) leaves its site
/// current; guards dropped out of order leave the chain inexact. Neither
/// is unsafe or affects anything but attribution.
///
/// A guard is not `Send`: it belongs to the thread that entered. In async
/// code, wrap the future in [`Tracked`] instead of holding a guard across
/// an `.await`.
#[inline]
pub fn enter(site: &'static Site) -> SiteGuard {
    site.register();
    FRAMES.with(|f| {
        let depth = f.depth.get();
        let saved = f.ring[slot(depth)].replace(Some(site));
        let outer = f.current.replace(slot::site_word(site));
        f.depth.set(depth.wrapping_add(1));
        SiteGuard { saved, outer, depth, _not_send: PhantomData }
    })
}

/// A tracked scope: while it lives, its site is the thread's current
/// owner. Dropping it (on return or during a panic) restores the previous
/// owner. Created by [`enter`].
#[must_use = "the site is current only while the guard lives"]
pub struct SiteGuard {
    /// The ring entry this scope overwrote.
    saved: Option<&'static Site>,
    /// The site current when the scope was entered (tagged, as `current`
    /// keeps it), restored on exit (so leaving is three stores, with no
    /// branch and no load).
    outer: u64,
    /// The depth of the scope (the number of scopes around it).
    depth: u32,
    _not_send: PhantomData<*const ()>,
}

impl fmt::Debug for SiteGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SiteGuard").field("depth", &self.depth).finish_non_exhaustive()
    }
}

impl Drop for SiteGuard {
    #[inline]
    fn drop(&mut self) {
        // Never panics: the thread-local has a const initializer and no
        // destructor, so it is reachable for the thread's whole life.
        FRAMES.with(|f| {
            f.ring[slot(self.depth)].set(self.saved);
            f.depth.set(self.depth);
            f.current.set(self.outer);
        })
    }
}

/// The chain of tracked scopes on this thread, innermost first: the owner,
/// then the scope that called it, and so on.
pub fn current_chain() -> SiteChain {
    FRAMES.with(|f| {
        let depth = f.depth.get();
        let mut chain = SiteChain { sites: [None; MAX_CHAIN], len: 0, depth };
        let recorded = (depth as usize).min(MAX_CHAIN);
        for i in 0..recorded {
            let d = depth - 1 - i as u32;
            if let Some(site) = f.ring[slot(d)].get() {
                chain.sites[chain.len as usize] = Some(site);
                chain.len += 1;
            }
        }
        chain
    })
}

/// A snapshot of a thread's nested tracked scopes, innermost first, taken by
/// [`current_chain`]. Holds at most [`MAX_CHAIN`] sites; no allocation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SiteChain {
    sites: [Option<&'static Site>; MAX_CHAIN],
    len: u8,
    depth: u32,
}

impl SiteChain {
    /// The sites, innermost (the owner) first.
    pub fn iter(&self) -> impl Iterator<Item = &'static Site> + '_ {
        self.sites[..self.len as usize].iter().flatten().copied()
    }

    /// The innermost site: the owner.
    pub fn innermost(&self) -> Option<&'static Site> {
        self.sites[0]
    }

    /// How many sites the chain holds.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// True when no tracked scope was active.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many tracked scopes were active, including any beyond the
    /// [`MAX_CHAIN`] the chain keeps.
    pub fn depth(&self) -> usize {
        self.depth as usize
    }

    /// True when outer scopes were left out (nesting deeper than
    /// [`MAX_CHAIN`]).
    pub fn is_truncated(&self) -> bool {
        self.depth() > self.len()
    }
}

impl fmt::Debug for SiteChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter().map(|s| s.name())).finish()?;
        if self.is_truncated() {
            write!(f, " (+{} outer)", self.depth() - self.len())?;
        }
        Ok(())
    }
}

/// `dma/rx_refill <- net/poll <- main_loop`: names, innermost first.
impl fmt::Display for SiteChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(" <- ")?;
            }
            match s.subsystem() {
                Some(sub) => write!(f, "{sub}/{}", s.name())?,
                None => f.write_str(s.name())?,
            }
        }
        if self.is_truncated() {
            write!(f, " <- ({} more)", self.depth() - self.len())?;
        }
        Ok(())
    }
}

// ----- futures ------------------------------------------------------------------

/// A future that runs under a site: the site is entered for each poll of the
/// inner future (and for its drop) and left before `poll` returns, so it is
/// never current on a thread while the future is parked, whichever thread
/// polls it next. `#[pin_tracked]` on an `async fn` wraps the body in one,
/// and on a function returning a future, the future it returns.
///
/// ```
/// use pinowner::site::{self, Site, Tracked};
/// use std::future::Future;
///
/// static FILL: Site = Site::new("fill", module_path!(), file!(), line!(), Some("io"));
///
/// let fut = Tracked::new(&FILL, async { site::current().map(|s| s.name()) });
/// let mut fut = std::pin::pin!(fut);
/// let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
/// assert_eq!(fut.as_mut().poll(&mut cx), std::task::Poll::Ready(Some("fill")));
/// assert_eq!(site::current(), None);
/// ```
#[must_use = "futures do nothing unless polled"]
pub struct Tracked<F> {
    site: &'static Site,
    inner: ManuallyDrop<F>,
}

impl<F> Tracked<F> {
    /// Wraps `inner` so that each of its polls runs under `site`.
    pub fn new(site: &'static Site, inner: F) -> Tracked<F> {
        Tracked { site, inner: ManuallyDrop::new(inner) }
    }

    /// The site the future runs under.
    pub fn site(&self) -> &'static Site {
        self.site
    }
}

impl<F: fmt::Debug> fmt::Debug for Tracked<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracked").field("site", &self.site.name()).field("inner", &*self.inner).finish()
    }
}

impl<F: Future> Future for Tracked<F> {
    type Output = F::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // No method of `Tracked` moves `inner`, `Drop` drops it in place, and
        // `Tracked` is `Unpin` only when `F` is.
        // SAFETY: so `inner` is structurally pinned and we never move it.
        let this = unsafe { self.get_unchecked_mut() };
        let _scope = enter(this.site);
        // SAFETY: see above; `this` came from a pinned `Tracked`.
        let inner = unsafe { Pin::new_unchecked(&mut *this.inner) };
        inner.poll(cx)
    }
}

impl<F> Drop for Tracked<F> {
    fn drop(&mut self) {
        let _scope = enter(self.site);
        // SAFETY: `inner` is dropped exactly once, here, in place (it may be
        // pinned), and never used afterwards.
        unsafe { ManuallyDrop::drop(&mut self.inner) }
    }
}

// ----- block form ------------------------------------------------------------------

/// Runs a block under a site declared in place: the block form of
/// `#[pin_tracked]`, for code that cannot take an attribute (a closure body,
/// part of a function).
///
/// `pin_scope!(name, { block })` or `pin_scope!(name, subsystem = "…", {
/// block })`. `name` and the subsystem are `&'static str` constants. The
/// block's value is the macro's value; `return`, `?` and `break` leave the
/// scope as they would any block, and so does a panic.
///
/// ```
/// use pinowner::{pin_scope, site, Acquirer, PageArena};
///
/// let arena = PageArena::builder().pages(16).build()?;
/// let block = arena.alloc(0)?;
/// let pin = pin_scope!("tx_ring", subsystem = "net", {
///     assert_eq!(site::current().map(|s| s.name()), Some("tx_ring"));
///     arena.pin(block.pfn())?
/// });
/// let Some(Acquirer::Site(owner)) = arena.page_info(block.pfn())?.acquirer else { panic!() };
/// assert_eq!((owner.subsystem(), owner.name()), (Some("net"), "tx_ring"));
/// assert_eq!(site::current(), None);
/// # drop(pin);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// The scope's guard is not `Send`: a `pin_scope!` whose block contains an
/// `.await` makes the future `!Send`. Use [`Tracked`](crate::site::Tracked)
/// (or `#[pin_tracked]` on an `async fn`) around async code.
#[macro_export]
macro_rules! pin_scope {
    ($name:expr, subsystem = $subsystem:expr, $body:block $(,)?) => {
        $crate::pin_scope!(@site $name, ::core::option::Option::Some($subsystem), $body)
    };
    ($name:expr, $body:block $(,)?) => {
        $crate::pin_scope!(@site $name, ::core::option::Option::None, $body)
    };
    (@site $name:expr, $subsystem:expr, $body:block) => {{
        static __PINOWNER_SITE: $crate::site::Site =
            $crate::site::Site::new($name, ::core::module_path!(), ::core::file!(), ::core::line!(), $subsystem);
        let __pinowner_guard = $crate::site::enter(&__PINOWNER_SITE);
        $body
    }};
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    static A: Site = Site::new("a", module_path!(), file!(), line!(), Some("x"));
    static B: Site = Site::new("b", module_path!(), file!(), line!(), None);

    #[test]
    fn a_guard_restores_the_outer_site() {
        assert_eq!(current(), None);
        let a = enter(&A);
        {
            let _b = enter(&B);
            assert_eq!(current(), Some(&B));
            let names: Vec<_> = current_chain().iter().map(Site::name).collect();
            assert_eq!(names, ["b", "a"]);
        }
        assert_eq!(current(), Some(&A));
        drop(a);
        assert_eq!(current(), None);
        assert!(current_chain().is_empty());
    }

    #[test]
    fn the_chain_keeps_the_innermost_scopes_past_its_capacity() {
        let depth = MAX_CHAIN + 3;
        let mut guards = Vec::new();
        for i in 0..depth {
            guards.push(enter(if i.is_multiple_of(2) { &A } else { &B }));
        }
        let chain = current_chain();
        assert_eq!(chain.depth(), depth);
        assert_eq!(chain.len(), MAX_CHAIN);
        assert!(chain.is_truncated());
        let innermost = if (depth - 1).is_multiple_of(2) { &A } else { &B };
        assert_eq!(chain.innermost(), Some(innermost));
        // Unwinding past the capacity restores the overwritten slots.
        while guards.len() > 2 {
            guards.pop();
        }
        let names: Vec<_> = current_chain().iter().map(Site::name).collect();
        assert_eq!(names, ["b", "a"]);
        while guards.pop().is_some() {}
        assert_eq!(current(), None);
    }

    #[test]
    fn entering_registers_a_site_once() {
        static C: Site = Site::new("c", module_path!(), file!(), line!(), None);
        assert!(!C.is_registered());
        drop(enter(&C));
        drop(enter(&C));
        assert!(C.is_registered());
        assert_eq!(registered_sites().iter().filter(|s| ***s == C).count(), 1);
    }

    #[test]
    fn the_chain_displays_names_innermost_first() {
        let _a = enter(&A);
        let _b = enter(&B);
        assert_eq!(current_chain().to_string(), "b <- x/a");
    }
}
