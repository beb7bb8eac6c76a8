//! What `#[pin_tracked]` and `pin_scope!` do at run time: the site a pin
//! records, scopes restored on return and panic, nesting, generics, methods,
//! hygiene, and async functions polled across threads.

use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use pinowner::site::{self, Site};
use pinowner::{pin_scope, pin_tracked, AcquireError, Acquirer, PageArena, PagePin, Pfn};

type Pinned = PagePin<Arc<PageArena>>;

fn arena() -> PageArena {
    PageArena::builder().pages(64).build().unwrap()
}

/// The site recorded for `pfn`, which must be attributed to one.
fn site_of(arena: &PageArena, pfn: Pfn) -> &'static Site {
    match arena.page_info(pfn).unwrap().acquirer {
        Some(Acquirer::Site(site)) => site,
        other => panic!("page {pfn} is attributed to {other:?}, not a site"),
    }
}

/// Polls a future that never waits to completion on this thread.
fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..1000 {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
    }
    panic!("the future did not finish");
}

// ----- sync functions -----------------------------------------------------

const RX_REFILL_LINE: u32 = line!() + 2;
#[pin_tracked(subsystem = "dma")]
fn rx_refill(arena: &PageArena, pfn: Pfn) -> PagePin<&PageArena> {
    arena.pin(pfn).unwrap()
}

#[test]
fn a_pin_taken_in_a_tracked_fn_names_the_fn_and_its_subsystem() {
    let arena = arena();
    let block = arena.alloc(0).unwrap();
    let _pin = rx_refill(&arena, block.pfn());
    let site = site_of(&arena, block.pfn());
    assert_eq!(site.name(), concat!(module_path!(), "::rx_refill"));
    assert_eq!(site.subsystem(), Some("dma"));
    assert_eq!(site.module(), module_path!());
    assert_eq!(site.file(), file!());
    assert_eq!(site.line(), RX_REFILL_LINE);
    assert!(site.is_registered());
    assert!(site::registered_sites().contains(&site));
    assert_eq!(site::current(), None, "the scope ends with the function");
}

#[pin_tracked(name = "tx_ring", subsystem = "net")]
fn tx(arena: &PageArena) -> pinowner::Block<&PageArena> {
    arena.alloc(0).unwrap()
}

#[test]
fn the_name_argument_replaces_the_fn_path_and_alloc_is_attributed_too() {
    let arena = arena();
    let block = tx(&arena);
    let site = site_of(&arena, block.pfn());
    assert_eq!((site.name(), site.subsystem()), ("tx_ring", Some("net")));
}

#[test]
fn a_pin_outside_any_tracked_scope_records_the_callers_location() {
    let arena = arena();
    let block = arena.alloc(0).unwrap();
    let line = line!() + 1;
    let _pin = arena.pin(block.pfn()).unwrap();
    match arena.page_info(block.pfn()).unwrap().acquirer {
        Some(Acquirer::Location(loc)) => assert_eq!((loc.file(), loc.line()), (file!(), line)),
        other => panic!("expected a location, got {other:?}"),
    }
}

#[pin_tracked]
fn early_return(arena: &PageArena, pfn: Pfn, stop: bool) -> Option<PagePin<&PageArena>> {
    if stop {
        return None;
    }
    let pin = arena.pin(pfn).ok()?;
    Some(pin)
}

#[test]
fn return_and_question_mark_leave_the_scope() {
    let arena = arena();
    let block = arena.alloc(0).unwrap();
    assert!(early_return(&arena, block.pfn(), true).is_none());
    assert_eq!(site::current(), None);
    assert!(early_return(&arena, 10_000, false).is_none());
    assert_eq!(site::current(), None);
    let _pin = early_return(&arena, block.pfn(), false).unwrap();
    assert!(site_of(&arena, block.pfn()).name().ends_with("::early_return"));
}

// ----- panics and nesting -----------------------------------------------------

#[pin_tracked(subsystem = "inner")]
fn pin_then_panic(arena: &PageArena, pfn: Pfn) {
    let pin = arena.pin(pfn).unwrap();
    std::mem::forget(pin);
    panic!("driver bug");
}

#[test]
fn a_panic_restores_the_outer_site() {
    let arena = arena();
    let block = arena.alloc(0).unwrap();
    let hook = panic::take_hook();
    panic::set_hook(Box::new(|_| {}));
    let caught = pin_scope!("outer", subsystem = "test", {
        let outer = site::current().unwrap();
        let r = panic::catch_unwind(AssertUnwindSafe(|| pin_then_panic(&arena, block.pfn())));
        assert_eq!(site::current(), Some(outer), "the panicking fn's site is left on unwind");
        assert_eq!(site::current_chain().len(), 1);
        r
    });
    panic::set_hook(hook);
    assert!(caught.is_err());
    assert_eq!(site::current(), None);
    assert_eq!(site_of(&arena, block.pfn()).subsystem(), Some("inner"));
}

#[pin_tracked(subsystem = "leaf")]
fn leaf(arena: &PageArena, pfn: Pfn) -> (PagePin<&PageArena>, Vec<&'static str>) {
    let chain = site::current_chain().iter().map(Site::name).collect();
    (arena.pin(pfn).unwrap(), chain)
}

#[pin_tracked(name = "middle")]
fn middle(arena: &PageArena, pfn: Pfn) -> (PagePin<&PageArena>, Vec<&'static str>) {
    let r = leaf(arena, pfn);
    assert_eq!(site::current().map(Site::name), Some("middle"));
    r
}

#[test]
fn nested_tracked_fns_attribute_to_the_innermost_and_keep_the_chain() {
    let arena = arena();
    let block = arena.alloc(0).unwrap();
    let (_pin, chain) = pin_scope!("top", { middle(&arena, block.pfn()) });
    assert_eq!(chain, [concat!(module_path!(), "::leaf"), "middle", "top"]);
    assert_eq!(site_of(&arena, block.pfn()).subsystem(), Some("leaf"));
    assert!(site::current_chain().is_empty());
}

// ----- generics, methods, trait impls -----------------------------------------

#[pin_tracked(subsystem = "generic")]
fn pin_with<T: Into<Pfn>>(arena: &PageArena, pfn: T) -> PagePin<&PageArena> {
    arena.pin(pfn.into()).unwrap()
}

#[test]
fn every_instance_of_a_generic_fn_shares_one_site() {
    let arena = arena();
    let a = arena.alloc(0).unwrap();
    let b = arena.alloc(0).unwrap();
    let _p1 = pin_with(&arena, a.pfn());
    let _p2 = pin_with(&arena, u16::try_from(b.pfn()).unwrap());
    assert!(std::ptr::eq(site_of(&arena, a.pfn()), site_of(&arena, b.pfn())));
}

struct Driver<'a> {
    arena: &'a PageArena,
}

impl<'a> Driver<'a> {
    #[pin_tracked(subsystem = "method")]
    fn refill(&self, pfn: Pfn) -> PagePin<&'a PageArena> {
        self.arena.pin(pfn).unwrap()
    }

    #[pin_tracked]
    fn refill_generic<const N: usize>(&mut self, pfns: [Pfn; N]) -> Vec<PagePin<&'a PageArena>> {
        pfns.iter().map(|&p| self.arena.pin(p).unwrap()).collect()
    }
}

trait Refill {
    fn refill_one(&self, pfn: Pfn) -> PagePin<&PageArena>;

    #[pin_tracked(subsystem = "default-method")]
    fn refill_default(&self, arena: &'static PageArena, pfn: Pfn) -> PagePin<&'static PageArena> {
        arena.pin(pfn).unwrap()
    }
}

impl Refill for Driver<'_> {
    #[pin_tracked(subsystem = "trait-impl")]
    fn refill_one(&self, pfn: Pfn) -> PagePin<&PageArena> {
        self.arena.pin(pfn).unwrap()
    }
}

#[test]
fn methods_trait_impls_and_default_methods_are_tracked() {
    let arena: &'static PageArena = Box::leak(Box::new(arena()));
    let mut driver = Driver { arena };
    let blocks: Vec<_> = (0..4).map(|_| arena.alloc(0).unwrap()).collect();
    let _d = driver.refill_generic([blocks[3].pfn()]);
    let _a = driver.refill(blocks[0].pfn());
    let _b = driver.refill_one(blocks[1].pfn());
    let _c = driver.refill_default(arena, blocks[2].pfn());
    assert_eq!(site_of(arena, blocks[0].pfn()).subsystem(), Some("method"));
    assert_eq!(site_of(arena, blocks[1].pfn()).subsystem(), Some("trait-impl"));
    assert_eq!(site_of(arena, blocks[2].pfn()).subsystem(), Some("default-method"));
    assert_eq!(site_of(arena, blocks[3].pfn()).name(), concat!(module_path!(), "::refill_generic"));
}

// ----- hygiene ---------------------------------------------------------------------

mod hygiene {
    //! User items and locals named like the generated ones.

    use pinowner::{pin_tracked, PageArena, PagePin, Pfn};

    /// A user type named like the crate's.
    #[allow(dead_code)]
    pub struct Site;
    /// A user module named like the private one.
    #[allow(dead_code)]
    mod __private {
        pub fn enter() {}
    }
    #[allow(dead_code)]
    fn enter() {}
    #[allow(unused_macros)]
    macro_rules! line {
        () => {
            "not a line"
        };
    }
    #[allow(unused_macros)]
    macro_rules! concat {
        ($($t:tt)*) => {
            0
        };
    }
    #[allow(unused_macros)]
    macro_rules! module_path {
        () => {
            0
        };
    }
    #[allow(unused_macros)]
    macro_rules! file {
        () => {
            0
        };
    }
    /// A user static named like the generated one, used by tracked bodies.
    static __PINOWNER_SITE: u32 = 40;
    /// User types named like the prelude's.
    #[allow(dead_code)]
    enum Option {}
    #[allow(dead_code)]
    struct Some;
    #[allow(dead_code)]
    struct None;

    #[pin_tracked(subsystem = "hygiene")]
    pub fn shadowing(arena: &PageArena, __pinowner_guard: Pfn) -> (PagePin<&PageArena>, Site) {
        static __PINOWNER_SITE: u8 = 7;
        let __pinowner_site = Site;
        let __pinowner_ret = __PINOWNER_SITE;
        assert_eq!(__pinowner_ret, 7);
        // The parameter named like the guard is the user's value.
        (arena.pin(__pinowner_guard).unwrap(), __pinowner_site)
    }

    #[pin_tracked(subsystem = "hygiene-async")]
    pub async fn shadowing_async(arena: &PageArena, __pinowner_ret: Pfn) -> PagePin<&PageArena> {
        let __pinowner_guard = __pinowner_ret;
        arena.pin(__pinowner_guard).unwrap()
    }

    #[pin_tracked(subsystem = "hygiene-outer")]
    pub fn outer_item(arena: &PageArena, pfn: Pfn) -> (PagePin<&PageArena>, u32) {
        (arena.pin(pfn).unwrap(), __PINOWNER_SITE + 2)
    }
}

#[test]
fn a_user_item_named_like_the_generated_static_is_not_shadowed() {
    let arena = arena();
    let block = arena.alloc(0).unwrap();
    let (_pin, n) = hygiene::outer_item(&arena, block.pfn());
    assert_eq!(n, 42);
    assert_eq!(site_of(&arena, block.pfn()).subsystem(), Some("hygiene-outer"));
}

#[test]
fn generated_names_do_not_collide_with_user_names() {
    let arena = arena();
    let a = arena.alloc(0).unwrap();
    let b = arena.alloc(0).unwrap();
    let (_pin, _site) = hygiene::shadowing(&arena, a.pfn());
    let _pin2 = block_on(hygiene::shadowing_async(&arena, b.pfn()));
    let site = site_of(&arena, a.pfn());
    assert_eq!(site.name(), concat!(module_path!(), "::hygiene::shadowing"));
    assert_eq!(site.subsystem(), Some("hygiene"));
    assert_eq!(site_of(&arena, b.pfn()).subsystem(), Some("hygiene-async"));
}

mod reexport {
    //! A crate that re-exports pinowner under another path.
    pub use pinowner as po;
}

#[pin_tracked(crate = crate::reexport::po, subsystem = "reexported")]
fn through_reexport(arena: &PageArena, pfn: Pfn) -> PagePin<&PageArena> {
    arena.pin(pfn).unwrap()
}

#[test]
fn the_crate_argument_reaches_pinowner_through_a_reexport() {
    let arena = arena();
    let block = arena.alloc(0).unwrap();
    let _pin = through_reexport(&arena, block.pfn());
    assert_eq!(site_of(&arena, block.pfn()).subsystem(), Some("reexported"));
}

// ----- async -----------------------------------------------------------------------

#[pin_tracked(subsystem = "async")]
async fn pin_async(arena: &PageArena, pfn: Pfn) -> Result<PagePin<&PageArena>, AcquireError> {
    let pin = arena.pin(pfn)?;
    Ok(pin)
}

#[test]
fn an_async_fn_with_question_mark_is_attributed_and_leaves_nothing_current() {
    let arena = arena();
    let block = arena.alloc(0).unwrap();
    let _pin = block_on(pin_async(&arena, block.pfn())).unwrap();
    assert_eq!(site_of(&arena, block.pfn()).subsystem(), Some("async"));
    assert!(block_on(pin_async(&arena, 10_000)).is_err());
    assert_eq!(site::current(), None);
}

/// Returns `Pending` once (waking itself at once), so the next poll of the
/// task lands on the executor's next worker.
struct Hop {
    hopped: bool,
    seen_inside: Arc<Mutex<Vec<Option<&'static str>>>>,
}

impl Future for Hop {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.seen_inside.lock().unwrap().push(site::current().map(Site::name));
        if self.hopped {
            return Poll::Ready(());
        }
        self.hopped = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[pin_tracked(name = "sync_helper")]
fn chain_here() -> Vec<&'static str> {
    site::current_chain().iter().map(Site::name).collect()
}

/// Everything `fill` saw, for the test to check.
struct FillReport {
    pins: Vec<PagePin<Arc<PageArena>>>,
    threads: Vec<std::thread::ThreadId>,
    chains: Vec<Vec<&'static str>>,
}

#[pin_tracked(name = "fill", subsystem = "io")]
async fn fill(
    arena: Arc<PageArena>,
    pfns: [Pfn; 2],
    seen_inside: Arc<Mutex<Vec<Option<&'static str>>>>,
) -> Result<FillReport, AcquireError> {
    let mut report = FillReport { pins: Vec::new(), threads: Vec::new(), chains: Vec::new() };
    report.threads.push(std::thread::current().id());
    report.pins.push(arena.pin_owned(pfns[0])?);
    report.chains.push(chain_here());
    Hop { hopped: false, seen_inside: seen_inside.clone() }.await;
    report.threads.push(std::thread::current().id());
    report.pins.push(arena.pin_owned(pfns[1])?);
    report.chains.push(chain_here());
    Ok(report)
}

mod executor {
    //! A minimal multi-threaded executor: each wake sends the task to the
    //! next worker in turn, so consecutive polls run on different threads.
    //! After every poll the worker writes down which site is current on it.

    use std::future::Future;
    use std::pin::Pin;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc::{channel, Sender};
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Wake, Waker};
    use std::thread::{JoinHandle, ThreadId};

    type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

    struct Task {
        fut: Mutex<Option<BoxFuture>>,
        pool: Arc<Shared>,
    }

    struct Shared {
        workers: Vec<Sender<Option<Arc<Task>>>>,
        next: AtomicUsize,
    }

    impl Shared {
        fn schedule(&self, task: Arc<Task>) {
            let i = self.next.fetch_add(1, Ordering::Relaxed) % self.workers.len();
            self.workers[i].send(Some(task)).unwrap();
        }
    }

    impl Wake for Task {
        fn wake(self: Arc<Self>) {
            self.pool.clone().schedule(self);
        }
    }

    /// What a worker saw right after a poll returned.
    #[derive(Debug, Clone, Copy)]
    pub struct AfterPoll {
        pub thread: ThreadId,
        pub ready: bool,
        pub current_site: Option<&'static str>,
    }

    pub struct Pool {
        shared: Arc<Shared>,
        handles: Vec<JoinHandle<()>>,
        pub after_polls: Arc<Mutex<Vec<AfterPoll>>>,
    }

    impl Pool {
        pub fn new(threads: usize) -> Pool {
            let after_polls = Arc::new(Mutex::new(Vec::new()));
            let mut workers = Vec::new();
            let mut handles = Vec::new();
            for _ in 0..threads {
                let (tx, rx) = channel::<Option<Arc<Task>>>();
                workers.push(tx);
                let log = after_polls.clone();
                handles.push(std::thread::spawn(move || {
                    while let Ok(Some(task)) = rx.recv() {
                        let mut slot = task.fut.lock().unwrap();
                        let Some(mut fut) = slot.take() else { continue };
                        let waker = Waker::from(task.clone());
                        let ready = fut.as_mut().poll(&mut Context::from_waker(&waker)).is_ready();
                        if !ready {
                            *slot = Some(fut);
                        }
                        log.lock().unwrap().push(AfterPoll {
                            thread: std::thread::current().id(),
                            ready,
                            current_site: pinowner::site::current().map(|s| s.name()),
                        });
                    }
                }));
            }
            Pool { shared: Arc::new(Shared { workers, next: AtomicUsize::new(0) }), handles, after_polls }
        }

        pub fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
            let task = Arc::new(Task { fut: Mutex::new(Some(Box::pin(fut))), pool: self.shared.clone() });
            self.shared.schedule(task);
        }

        pub fn shutdown(self) {
            for w in &self.shared.workers {
                w.send(None).unwrap();
            }
            for h in self.handles {
                h.join().unwrap();
            }
        }
    }
}

fn assert_send<T: Send>(t: T) -> T {
    t
}

#[test]
fn an_async_fn_enters_its_site_only_while_polled_on_whichever_thread() {
    let arena = Arc::new(arena());
    let a_block = arena.alloc_owned(0).unwrap();
    let b_block = arena.alloc_owned(0).unwrap();
    let (a, b) = (a_block.pfn(), b_block.pfn());

    let pool = executor::Pool::new(2);
    let seen_inside = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    // The future of a tracked async fn is `Send`: the scope guard lives
    // only inside `poll`.
    let fut = assert_send(fill(arena.clone(), [a, b], seen_inside.clone()));
    pool.spawn(async move {
        tx.send(fut.await).unwrap();
    });
    let report = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap().unwrap();
    // The worker logs a poll after the poll returns, which is after the
    // body sent its report: join the workers before reading the log.
    let log = pool.after_polls.clone();
    pool.shutdown();
    let after_polls = log.lock().unwrap().clone();

    assert_ne!(report.threads[0], report.threads[1], "the body resumed on another worker");
    assert_eq!(after_polls.len(), 2);
    assert_eq!(after_polls[0].thread, report.threads[0]);
    assert!(!after_polls[0].ready);
    assert_eq!(after_polls[1].thread, report.threads[1]);
    for p in &after_polls {
        assert_eq!(p.current_site, None, "no site is current on a worker between polls: {p:?}");
    }
    assert_eq!(*seen_inside.lock().unwrap(), [Some("fill"), Some("fill")], "the site is current inside each poll");
    assert_eq!(report.chains, [["sync_helper", "fill"], ["sync_helper", "fill"]]);
    for pfn in [a, b] {
        let site = site_of(&arena, pfn);
        assert_eq!((site.name(), site.subsystem()), ("fill", Some("io")), "page {pfn}");
    }
    assert_eq!(site::current(), None);
    drop(report);
}

// ----- functions that return a future ----------------------------------------

/// Pins `now` while building the future and `later` when it runs.
#[pin_tracked(name = "refill_later", subsystem = "impl-future")]
fn refill_later(arena: Arc<PageArena>, now: Pfn, later: Pfn) -> impl Future<Output = (Pinned, Pinned)> + Send {
    let first = arena.pin_owned(now).unwrap();
    async move { (first, arena.pin_owned(later).unwrap()) }
}

#[pin_tracked(name = "refill_boxed", subsystem = "boxed")]
fn refill_boxed(arena: &PageArena, pfn: Pfn) -> Pin<Box<dyn Future<Output = PagePin<&PageArena>> + Send + '_>> {
    if pfn == Pfn::MAX {
        return Box::pin(async { panic!("no such page") });
    }
    Box::pin(async move { arena.pin(pfn).unwrap() })
}

#[async_trait::async_trait]
trait Refiller {
    async fn refill(&self, pfn: Pfn, seen_inside: Arc<Mutex<Vec<Option<&'static str>>>>) -> Pinned;
}

struct AsyncDriver {
    arena: Arc<PageArena>,
}

#[async_trait::async_trait]
impl Refiller for AsyncDriver {
    /// `#[async_trait]` runs first: this sees a fn returning
    /// `Pin<Box<dyn Future + Send + 'async_trait>>`.
    #[pin_tracked(name = "async_trait_refill", subsystem = "async-trait")]
    async fn refill(&self, pfn: Pfn, seen_inside: Arc<Mutex<Vec<Option<&'static str>>>>) -> Pinned {
        Hop { hopped: false, seen_inside }.await;
        self.arena.pin_owned(pfn).unwrap()
    }
}

#[test]
fn futures_returned_by_tracked_fns_attribute_their_pins_to_the_fn_when_another_site_polls_them() {
    let arena = Arc::new(arena());
    let blocks: Vec<_> = (0..4).map(|_| arena.alloc(0).unwrap()).collect();
    let pfn = |i: usize| blocks[i].pfn();
    let later = refill_later(arena.clone(), pfn(0), pfn(1));
    let boxed = refill_boxed(&arena, pfn(2));
    let driver = AsyncDriver { arena: arena.clone() };
    let trait_fut = driver.refill(pfn(3), Arc::new(Mutex::new(Vec::new())));
    assert_eq!(site::current(), None, "building a future leaves no site current");
    let pins =
        pin_scope!("poller", subsystem = "executor", { (block_on(later), block_on(boxed), block_on(trait_fut)) });
    for (i, (name, subsystem)) in [
        ("refill_later", "impl-future"),
        ("refill_later", "impl-future"),
        ("refill_boxed", "boxed"),
        ("async_trait_refill", "async-trait"),
    ]
    .into_iter()
    .enumerate()
    {
        let site = site_of(&arena, pfn(i));
        assert_eq!((site.name(), site.subsystem()), (name, Some(subsystem)), "page {i}");
    }
    assert_eq!(site::current(), None);
    drop(pins);
}

#[test]
fn an_async_trait_method_enters_its_site_only_while_polled_on_whichever_thread() {
    let arena = Arc::new(arena());
    let block = arena.alloc_owned(0).unwrap();
    let pfn = block.pfn();
    let pool = executor::Pool::new(2);
    let seen_inside = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let driver = AsyncDriver { arena: arena.clone() };
    let seen = seen_inside.clone();
    pool.spawn(async move {
        let fut = assert_send(driver.refill(pfn, seen));
        tx.send(fut.await).unwrap();
    });
    let pin = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
    let log = pool.after_polls.clone();
    pool.shutdown();
    let after_polls = log.lock().unwrap().clone();

    assert_eq!(after_polls.len(), 2);
    assert_ne!(after_polls[0].thread, after_polls[1].thread, "the method resumed on another worker");
    for p in &after_polls {
        assert_eq!(p.current_site, None, "no site is current on a worker between polls: {p:?}");
    }
    let inside = Some("async_trait_refill");
    assert_eq!(*seen_inside.lock().unwrap(), [inside, inside], "the site is current inside each poll");
    let site = site_of(&arena, pfn);
    assert_eq!((site.name(), site.subsystem()), ("async_trait_refill", Some("async-trait")));
    drop(pin);
}
