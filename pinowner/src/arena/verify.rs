//! The allocator's consistency check: every page accounted for exactly once.

use crate::alloc::Zone;
use crate::page::state::{self, COUNTS, FREE, HEAD, ISOLATED, PCP};
use crate::page::PageState;
use crate::{PageArena, Pfn};

/// An allocator invariant that [`PageArena::verify`] found broken: the page
/// and its state, and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("page {pfn:#x} ({state}): {problem}")]
pub struct VerifyError {
    /// The page.
    pub pfn: Pfn,
    /// Its state word, decoded.
    pub state: PageState,
    /// What is wrong.
    pub problem: String,
}

impl PageArena {
    /// Checks the allocator's invariants, holding each zone's caches and
    /// lock in turn: every page belongs to exactly one naturally aligned
    /// block inside its zone; every free block is on exactly one free list
    /// of its order, or in exactly one thread cache (and then marked
    /// cached); every list and cache entry is such a block, once; the
    /// page counts of the lists and caches (and the ones
    /// [`free_pages`](Self::free_pages) reads) match them; no page is isolated and no block is left
    /// half-freed (a head with no counts that is not free).
    ///
    /// Meant for tests and debugging, on a **quiescent** arena: with no
    /// reservation running and no release or allocation in progress on
    /// another thread (those pass through states this check reports, for
    /// an instant). Costs a walk of every page.
    ///
    /// ```
    /// let arena = pinowner::PageArena::builder().pages(64).movable_pages(32).build()?;
    /// let block = arena.alloc(2)?;
    /// arena.verify()?;
    /// drop(block);
    /// arena.verify()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// The first broken invariant found, as a [`VerifyError`] naming the
    /// page.
    pub fn verify(&self) -> Result<(), VerifyError> {
        self.zones.iter().try_for_each(|zone| self.verify_zone(zone))
    }

    fn verify_zone(&self, zone: &Zone) -> Result<(), VerifyError> {
        let fail = |pfn: u32, problem: String| {
            let state = PageState::from_word(self.desc(pfn).state.load(crate::sync::Ordering::Relaxed));
            Err(VerifyError { pfn: pfn as Pfn, state, problem })
        };
        if zone.pages() == 0 {
            return Ok(());
        }
        let mut caches = self.lock_caches(zone);
        let area = zone.area.lock();
        // The free blocks on the lists, by head: their order.
        let mut listed = std::collections::HashMap::<u32, u8>::new();
        let mut listed_pages = 0usize;
        for order in 0..=area.max_order {
            for &p in area.heads(order) {
                if !zone.contains(p) {
                    return fail(p, format!("on the order-{order} free list of the {} zone, outside it", zone.kind));
                }
                if listed.insert(p, order).is_some() {
                    return fail(p, format!("on the free lists twice (order {order})"));
                }
                listed_pages += 1 << order;
            }
        }
        if listed_pages != area.free_pages {
            return fail(
                zone.start,
                format!("the {} zone's lists hold {listed_pages} pages, its count says {}", zone.kind, area.free_pages),
            );
        }
        // Published at the last unlock; nothing changed the lists since.
        if zone.area.free_pages() != listed_pages {
            return fail(
                zone.start,
                format!(
                    "the {} zone's lists hold {listed_pages} pages, its published count says {}",
                    zone.kind,
                    zone.area.free_pages()
                ),
            );
        }
        let mut cached = std::collections::HashMap::<u32, u8>::new();
        let shards = zone.pcp.as_ref().map_or(&[][..], |pcp| &pcp.shards[..]);
        for (i, cache) in caches.iter_mut().enumerate() {
            let published = shards[i].pages.get();
            let held = cache.with(|lists| lists.listed_pages());
            if published != held {
                return fail(
                    zone.start,
                    format!(
                        "thread cache {i} of the {} zone holds {held} pages, its count says {published}",
                        zone.kind
                    ),
                );
            }
            let found = cache.with(|lists| {
                for order in 0..=area.max_order {
                    for &p in lists.of(order).iter() {
                        if listed.contains_key(&p) || cached.insert(p, order).is_some() {
                            return Some((p, format!("in a thread cache (order {order}) and elsewhere too")));
                        }
                    }
                }
                None
            });
            if let Some((p, problem)) = found {
                return fail(p, problem);
            }
        }
        let mut p = zone.start;
        while p < zone.end {
            let w = self.desc(p).state.load(crate::sync::Ordering::Acquire);
            if w & HEAD == 0 {
                return fail(p, "no block covers this page (a tail with no head before it)".into());
            }
            let order = state::order(w);
            let size = 1u32 << order;
            if !p.is_multiple_of(size) || p as u64 + size as u64 > zone.end as u64 || order > area.max_order {
                return fail(p, format!("an order-{order} block that is not aligned inside its zone"));
            }
            for q in p..p + size {
                let t = self.desc(q).state.load(crate::sync::Ordering::Acquire);
                if t & ISOLATED != 0 {
                    return fail(q, "isolated with no reservation running".into());
                }
                if q != p && t & (HEAD | FREE | PCP | COUNTS) != 0 {
                    return fail(q, format!("a tail of the order-{order} block at {p:#x} with head bits or counts"));
                }
            }
            let free = w & FREE != 0;
            let in_list = listed.remove(&p);
            let in_cache = cached.remove(&p);
            match (free, w & PCP != 0) {
                (true, false) if in_list != Some(order) => {
                    return fail(p, format!("a free order-{order} block on no free list of its order"));
                }
                (true, true) if in_cache != Some(order) => {
                    return fail(p, format!("a cached order-{order} block in no thread cache (order {in_cache:?})"));
                }
                (true, _) if w & COUNTS != 0 => return fail(p, "a free block with counts".into()),
                (false, _) if w & COUNTS == 0 => {
                    return fail(p, "an allocated block with no counts that was never freed".into());
                }
                (false, _) if in_list.is_some() || in_cache.is_some() => {
                    return fail(p, "an allocated block on a free list or in a cache".into());
                }
                _ => {}
            }
            if in_list.is_some() && w & PCP != 0 {
                return fail(p, "a cached block on a free list".into());
            }
            p += size;
        }
        // `REPORTED` marks exactly the pages of the reported parts of the lists.
        let mut marked = 0;
        for order in 0..=area.max_order {
            for &p in &area.heads(order)[..area.reported(order)] {
                if self.ext.count_in(crate::page::ext::Mark::Reported, p, 1 << order) != 1 << order {
                    return fail(p, format!("a reported order-{order} block with pages not marked reported"));
                }
                marked += 1usize << order;
            }
        }
        let all = self.ext.count_in(crate::page::ext::Mark::Reported, zone.start, zone.pages());
        if all != marked {
            return fail(
                zone.start,
                format!("{all} pages of the {} zone marked reported, {marked} listed so", zone.kind),
            );
        }
        // What is left in the lists or caches is not the head of a block.
        if let Some((&p, _)) = listed.iter().next() {
            return fail(p, "on a free list but not the head of a free block".into());
        }
        if let Some((&p, _)) = cached.iter().next() {
            return fail(p, "in a thread cache but not the head of a block".into());
        }
        Ok(())
    }
}
