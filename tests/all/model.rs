//! Random sequences of allocator and count operations, raw misuse included,
//! checked step by step against a simple reference model.

use std::collections::BTreeMap;

use pinowner::{AcquireError, Block, MovableBlock, PageArena, PagePin, PageRef, ReleaseError, ZoneKind};
use proptest::prelude::*;

const PAGES: usize = 64;
const MOVABLE: usize = 16;
const MAX_ORDER: u8 = 4;

#[derive(Clone, Debug)]
enum Op {
    Alloc { order: u8, movable: bool },
    DropBlock(usize),
    Get(usize),
    Pin(usize),
    CloneRef(usize),
    DropRef(usize),
    DropPin(usize),
    GetRaw(usize),
    PutRaw(usize),
    PinRaw(usize),
    UnpinRaw(usize),
    Drain,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..=MAX_ORDER + 1, any::<bool>()).prop_map(|(order, movable)| Op::Alloc { order, movable }),
        2 => (0..32usize).prop_map(Op::DropBlock),
        2 => (0..PAGES + 2).prop_map(Op::Get),
        2 => (0..PAGES + 2).prop_map(Op::Pin),
        1 => (0..32usize).prop_map(Op::CloneRef),
        2 => (0..32usize).prop_map(Op::DropRef),
        2 => (0..32usize).prop_map(Op::DropPin),
        1 => (0..PAGES).prop_map(Op::GetRaw),
        1 => (0..PAGES + 1).prop_map(Op::PutRaw),
        1 => (0..PAGES).prop_map(Op::PinRaw),
        1 => (0..PAGES + 1).prop_map(Op::UnpinRaw),
        1 => Just(Op::Drain),
    ]
}

/// The reference model: live blocks by head, with their counts, and raw
/// counts by page.
#[derive(Default)]
struct Model {
    blocks: BTreeMap<usize, (u8, u32, u32)>,
    raw: BTreeMap<usize, (u32, u32)>,
}

impl Model {
    fn block_of(&self, pfn: usize) -> Option<usize> {
        let (&head, &(order, _, _)) = self.blocks.range(..=pfn).next_back()?;
        (pfn < head + (1 << order)).then_some(head)
    }

    fn allocated_pages(&self) -> usize {
        self.blocks.values().map(|(o, _, _)| 1usize << o).sum()
    }

    fn drop_count(&mut self, head: usize, pin: bool) {
        let e = self.blocks.get_mut(&head).unwrap();
        if pin {
            e.2 -= 1
        } else {
            e.1 -= 1
        }
        if e.1 == 0 && e.2 == 0 {
            self.blocks.remove(&head);
        }
    }
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let arena = PageArena::builder().pages(PAGES).movable_pages(MOVABLE).max_order(MAX_ORDER).build().unwrap();
    let fresh = arena.frag_stats();
    let mut m = Model::default();
    let mut blocks: Vec<Block<&PageArena>> = Vec::new();
    let mut refs: Vec<PageRef<&PageArena>> = Vec::new();
    let mut pins: Vec<PagePin<&PageArena>> = Vec::new();

    for op in ops {
        match op {
            Op::Alloc { order, movable } => {
                let r =
                    if movable { arena.alloc_movable(order).map(MovableBlock::into_block) } else { arena.alloc(order) };
                match r {
                    Ok(b) => {
                        let (p, n) = (b.pfn(), b.pages());
                        prop_assert_eq!(p % n, 0, "block not aligned");
                        for q in p..p + n {
                            prop_assert!(m.block_of(q).is_none(), "page {:#x} handed out twice", q);
                        }
                        if !movable {
                            prop_assert_eq!(arena.zone_of(p), Some(ZoneKind::Normal));
                        }
                        m.blocks.insert(p, (order, 1, 0));
                        blocks.push(b);
                    }
                    Err(_) => {
                        let stats = arena.frag_stats();
                        let zones: &[ZoneKind] =
                            if movable { &[ZoneKind::Normal, ZoneKind::Movable] } else { &[ZoneKind::Normal] };
                        for z in zones {
                            if let Some(zf) = stats.zone(*z) {
                                prop_assert!(
                                    order > MAX_ORDER || zf.largest_order().is_none_or(|l| l < order),
                                    "alloc of order {} failed with a free block in {}",
                                    order,
                                    z
                                );
                            }
                        }
                    }
                }
            }
            Op::DropBlock(i) if !blocks.is_empty() => {
                let b = blocks.swap_remove(i % blocks.len());
                m.drop_count(b.pfn(), false);
            }
            Op::Get(pfn) | Op::Pin(pfn) => {
                let pin = matches!(op, Op::Pin(_));
                let expect = m.block_of(pfn);
                if pin {
                    let r = arena.pin(pfn);
                    match (expect, r) {
                        (Some(h), Ok(p)) => {
                            prop_assert_eq!(p.head(), h);
                            m.blocks.get_mut(&h).unwrap().2 += 1;
                            pins.push(p);
                        }
                        (None, Err(AcquireError::Free { .. })) if pfn < PAGES => {}
                        (None, Err(AcquireError::OutOfRange { .. })) if pfn >= PAGES => {}
                        (e, r) => prop_assert!(false, "pin {:#x}: model {:?}, arena {:?}", pfn, e, r.map(|p| p.pfn())),
                    }
                } else {
                    match (expect, arena.get(pfn)) {
                        (Some(h), Ok(r)) => {
                            prop_assert_eq!(r.head(), h);
                            m.blocks.get_mut(&h).unwrap().1 += 1;
                            refs.push(r);
                        }
                        (None, Err(AcquireError::Free { .. })) if pfn < PAGES => {}
                        (None, Err(AcquireError::OutOfRange { .. })) if pfn >= PAGES => {}
                        (e, r) => prop_assert!(false, "get {:#x}: model {:?}, arena {:?}", pfn, e, r.map(|p| p.pfn())),
                    }
                }
            }
            Op::CloneRef(i) if !refs.is_empty() => {
                let r = refs[i % refs.len()].clone();
                m.blocks.get_mut(&r.head()).unwrap().1 += 1;
                refs.push(r);
            }
            Op::DropRef(i) if !refs.is_empty() => {
                let r = refs.swap_remove(i % refs.len());
                m.drop_count(r.head(), false);
            }
            Op::DropPin(i) if !pins.is_empty() => {
                let p = pins.swap_remove(i % pins.len());
                m.drop_count(p.head(), true);
            }
            Op::GetRaw(pfn) | Op::PinRaw(pfn) => {
                let pin = matches!(op, Op::PinRaw(_));
                let r = if pin { arena.pin_raw(pfn) } else { arena.get_raw(pfn) };
                match (m.block_of(pfn), r) {
                    (Some(h), Ok(())) => {
                        let e = m.blocks.get_mut(&h).unwrap();
                        let c = m.raw.entry(pfn).or_default();
                        if pin {
                            e.2 += 1;
                            c.1 += 1;
                        } else {
                            e.1 += 1;
                            c.0 += 1;
                        }
                    }
                    (None, Err(AcquireError::Free { .. })) => {}
                    (e, r) => prop_assert!(false, "raw acquire {:#x}: model {:?}, arena {:?}", pfn, e, r),
                }
            }
            Op::PutRaw(pfn) | Op::UnpinRaw(pfn) => {
                let pin = matches!(op, Op::UnpinRaw(_));
                let before = (pfn < PAGES).then(|| arena.page_state(pfn).unwrap());
                let r = if pin { arena.unpin_raw(pfn) } else { arena.put_raw(pfn) };
                let have = m.raw.get(&pfn).map_or(0, |c| if pin { c.1 } else { c.0 });
                match r {
                    Ok(()) => {
                        prop_assert!(have > 0, "raw release of {:#x} without a raw count succeeded", pfn);
                        let c = m.raw.get_mut(&pfn).unwrap();
                        if pin {
                            c.1 -= 1
                        } else {
                            c.0 -= 1
                        }
                        let h = m.block_of(pfn).unwrap();
                        m.drop_count(h, pin);
                    }
                    Err(ReleaseError::OutOfRange { .. }) => prop_assert!(pfn >= PAGES),
                    Err(ReleaseError::NoReference { .. } | ReleaseError::NoPin { .. }) => {
                        prop_assert_eq!(have, 0);
                        prop_assert_eq!(Some(arena.page_state(pfn).unwrap()), before, "misuse changed state");
                    }
                    Err(e) => prop_assert!(false, "unexpected {:?}", e),
                }
            }
            Op::Drain => {
                arena.drain_thread_caches();
            }
            _ => {}
        }
        // Free pages are conserved and every live block's counts match.
        prop_assert_eq!(arena.free_pages(), PAGES - m.allocated_pages());
        for (&h, &(order, r, p)) in &m.blocks {
            let s = arena.page_state(h).unwrap();
            prop_assert_eq!((s.order, s.refcount, s.pincount), (order, r, p), "block {:#x}", h);
        }
    }

    // Release everything; the arena must coalesce back to its maximal blocks.
    drop((blocks, refs, pins));
    for (pfn, (r, p)) in std::mem::take(&mut m.raw) {
        for _ in 0..r {
            arena.put_raw(pfn).unwrap();
        }
        for _ in 0..p {
            arena.unpin_raw(pfn).unwrap();
        }
    }
    arena.drain_thread_caches();
    prop_assert_eq!(arena.frag_stats(), fresh);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_operations_match_the_reference_model(ops in proptest::collection::vec(op(), 1..200)) {
        run(ops)?;
    }
}
