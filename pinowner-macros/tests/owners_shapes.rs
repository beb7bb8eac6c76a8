//! `#[pin_tracked]` on the function shapes buffer wrappers are written in,
//! checked at run time: recursion, a generic method of a generic type, a
//! native `async fn` in a trait impl awaiting another tracked `async fn`,
//! and a function returning `impl Trait` that pins before it returns.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use pinowner::site::{self, Site};
use pinowner::{pin_tracked, Acquirer, PageArena, PagePin, Pfn};

fn site_of(arena: &PageArena, pfn: Pfn) -> &'static Site {
    match arena.page_info(pfn).unwrap().acquirer {
        Some(Acquirer::Site(site)) => site,
        other => panic!("page {pfn} is attributed to {other:?}, not a site"),
    }
}

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

#[pin_tracked(subsystem = "pool")]
fn pin_chain<'a>(arena: &'a PageArena, pfns: &[Pfn], out: &mut Vec<PagePin<&'a PageArena>>) -> usize {
    let Some((&first, rest)) = pfns.split_first() else { return site::current_chain().depth() };
    out.push(arena.pin(first).unwrap());
    pin_chain(arena, rest, out)
}

/// A recursive tracked function names itself for every pin of every level,
/// nests one scope per level, and leaves nothing current.
#[test]
fn owners_a_recursive_tracked_fn_names_itself_at_every_depth() {
    let arena = PageArena::builder().pages(64).build().unwrap();
    let blocks: Vec<_> = (0..12).map(|_| arena.alloc(0).unwrap()).collect();
    let pfns: Vec<Pfn> = blocks.iter().map(|b| b.pfn()).collect();
    let mut pins = Vec::new();
    let depth = pin_chain(&arena, &pfns, &mut pins);
    assert_eq!(depth, pfns.len() + 1);
    for &p in &pfns {
        let s = site_of(&arena, p);
        assert!(s.name().ends_with("::pin_chain"), "{}", s.name());
        assert_eq!(s.subsystem(), Some("pool"));
    }
    assert_eq!(site::current(), None);
}

struct Ring<T> {
    tag: T,
}

impl<T: Copy + Into<u64>> Ring<T> {
    #[pin_tracked(subsystem = "uring", name = "uring::register")]
    fn register<'a, I: IntoIterator<Item = Pfn>>(&self, arena: &'a PageArena, pfns: I) -> Vec<PagePin<&'a PageArena>> {
        let _ = self.tag.into();
        pfns.into_iter().map(|p| arena.pin(p).unwrap()).collect()
    }

    /// Pins now, hands the pins out as an iterator.
    #[pin_tracked(subsystem = "uring")]
    fn pinned<'a>(&self, arena: &'a PageArena, pfns: &[Pfn]) -> impl Iterator<Item = PagePin<&'a PageArena>> {
        let pins: Vec<_> = pfns.iter().map(|&p| arena.pin(p).unwrap()).collect();
        pins.into_iter()
    }
}

/// A generic method of a generic type with a `name` and a `subsystem`:
/// every instance names the one site; a method returning `impl Iterator`
/// of pins taken in its body names the method.
#[test]
fn owners_generic_methods_and_impl_trait_returns_name_their_site() {
    let arena = PageArena::builder().pages(64).build().unwrap();
    let a = arena.alloc(0).unwrap();
    let b = arena.alloc(0).unwrap();
    let c = arena.alloc(0).unwrap();
    let p1 = Ring { tag: 1u8 }.register(&arena, [a.pfn()]);
    let p2 = Ring { tag: 2u32 }.register(&arena, vec![b.pfn()]);
    let (s1, s2) = (site_of(&arena, a.pfn()), site_of(&arena, b.pfn()));
    assert!(core::ptr::eq(s1, s2));
    assert_eq!((s1.name(), s1.subsystem()), ("uring::register", Some("uring")));
    let p3: Vec<_> = Ring { tag: 3u16 }.pinned(&arena, &[c.pfn()]).collect();
    let s3 = site_of(&arena, c.pfn());
    assert!(s3.name().ends_with("::pinned"), "{}", s3.name());
    drop((p1, p2, p3));
}

trait Device {
    async fn map<'a>(&self, arena: &'a PageArena, pfn: Pfn) -> (PagePin<&'a PageArena>, Vec<&'static str>);
}

struct Nic;

#[pin_tracked(subsystem = "net", name = "net::post_rx")]
async fn post_rx(arena: &PageArena, pfn: Pfn) -> PagePin<&PageArena> {
    std::future::ready(()).await;
    arena.pin(pfn).unwrap()
}

impl Device for Nic {
    #[pin_tracked(subsystem = "vfio", name = "vfio::map")]
    async fn map<'a>(&self, arena: &'a PageArena, pfn: Pfn) -> (PagePin<&'a PageArena>, Vec<&'static str>) {
        let pin = post_rx(arena, pfn).await;
        (pin, site::current_chain().iter().map(Site::name).collect())
    }
}

/// A native `async fn` of a trait impl awaiting another tracked `async
/// fn`: the pin names the inner function, the chain is inner then outer
/// while polled, and nothing is current once it is done.
#[test]
fn owners_a_native_async_trait_method_awaiting_a_tracked_async_fn_names_the_inner_one() {
    let arena = PageArena::builder().pages(64).build().unwrap();
    let block = arena.alloc(0).unwrap();
    let (pin, chain) = block_on(Nic.map(&arena, block.pfn()));
    assert_eq!(chain, ["vfio::map"]);
    assert_eq!(site_of(&arena, block.pfn()).name(), "net::post_rx");
    assert_eq!(site::current(), None);
    drop(pin);
}
