//! The fast single-threaded heap allocators page allocators are compared
//! with (issue 12): talc, buddy-alloc and linked_list_allocator, each over a
//! region of its own, asked for blocks of 4 KiB (order 0) or 2 MiB (order 9)
//! aligned to their size. Shared by `benches/alloc.rs` and
//! `benches/alloc_insn.rs`.
//!
//! None keeps counts, pins or attribution, and all three are `&mut`
//! allocators (a multi-threaded user wraps them in a lock).

use std::alloc::Layout;
use std::ptr::NonNull;

/// A block of `order` pages of 4 KiB, aligned to its size.
pub fn layout(order: u8) -> Layout {
    Layout::from_size_align(4096 << order, 4096 << order).unwrap()
}

/// Memory for a peer: page-aligned, from the global allocator, not zeroed
/// (the pages a peer never writes are never touched).
struct Memory {
    ptr: NonNull<u8>,
    layout: Layout,
}

impl Memory {
    fn new(bytes: usize) -> Memory {
        let layout = Layout::from_size_align(bytes, 2 << 20).unwrap();
        // SAFETY: `bytes` is non-zero.
        let ptr = NonNull::new(unsafe { std::alloc::alloc(layout) }).expect("peer memory");
        Memory { ptr, layout }
    }
}

impl Drop for Memory {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

/// talc (`Talc` with the `Manual` source: one claimed heap).
pub struct Talc {
    heap: talc::base::Talc<talc::source::Manual, talc::DefaultBinning>,
    _memory: Memory,
}

impl Talc {
    /// A heap of `bytes` (plus room for talc's metadata).
    pub fn new(bytes: usize) -> Talc {
        let memory = Memory::new(bytes + (4 << 20));
        let mut heap = talc::base::Talc::new(talc::source::Manual);
        // SAFETY: the memory is ours and outlives the heap (same struct,
        // dropped after it); nothing else touches it.
        unsafe { heap.claim(memory.ptr.as_ptr(), memory.layout.size()) }.expect("talc claim");
        Talc { heap, _memory: memory }
    }

    /// Allocates a block of `layout`.
    #[inline]
    pub fn alloc(&mut self, layout: Layout) -> NonNull<u8> {
        // SAFETY: the size is non-zero.
        unsafe { self.heap.allocate(layout) }.expect("talc out of memory")
    }

    /// Frees a block `alloc` returned for `layout`.
    #[inline]
    pub fn free(&mut self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: allocated by this heap with this layout.
        unsafe { self.heap.deallocate(ptr.as_ptr(), layout) }
    }
}

/// buddy-alloc (`BuddyAlloc`, leaves of 4 KiB).
pub struct BuddyAlloc {
    heap: buddy_alloc::buddy_alloc::BuddyAlloc,
    _memory: Memory,
}

impl BuddyAlloc {
    /// A heap of `bytes` (plus room for its metadata).
    pub fn new(bytes: usize) -> BuddyAlloc {
        let memory = Memory::new(bytes + (4 << 20));
        let param = buddy_alloc::buddy_alloc::BuddyAllocParam::new(memory.ptr.as_ptr(), memory.layout.size(), 4096);
        // SAFETY: the memory is ours, allocated, and outlives the heap; nothing
        // else writes it.
        let heap = unsafe { buddy_alloc::buddy_alloc::BuddyAlloc::new(param) };
        BuddyAlloc { heap, _memory: memory }
    }

    /// Allocates `bytes` (a power of two of at least 4 KiB: a buddy block,
    /// aligned to its size inside the heap).
    #[inline]
    pub fn alloc(&mut self, bytes: usize) -> NonNull<u8> {
        NonNull::new(self.heap.malloc(bytes)).expect("buddy-alloc out of memory")
    }

    /// Frees a block `alloc` returned.
    #[inline]
    pub fn free(&mut self, ptr: NonNull<u8>) {
        self.heap.free(ptr.as_ptr())
    }
}

/// linked_list_allocator (`Heap`, first fit).
pub struct LinkedList {
    heap: linked_list_allocator::Heap,
    _memory: Memory,
}

impl LinkedList {
    /// A heap of `bytes` (plus room to align a 2 MiB block).
    pub fn new(bytes: usize) -> LinkedList {
        let memory = Memory::new(bytes + (4 << 20));
        let mut heap = linked_list_allocator::Heap::empty();
        // SAFETY: the memory is ours and outlives the heap (same struct,
        // dropped after it); nothing else touches it.
        unsafe { heap.init(memory.ptr.as_ptr(), memory.layout.size()) };
        LinkedList { heap, _memory: memory }
    }

    /// Allocates a block of `layout`.
    #[inline]
    pub fn alloc(&mut self, layout: Layout) -> NonNull<u8> {
        self.heap.allocate_first_fit(layout).expect("linked_list_allocator out of memory")
    }

    /// Frees a block `alloc` returned for `layout`.
    #[inline]
    pub fn free(&mut self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: allocated by this heap with this layout.
        unsafe { self.heap.deallocate(ptr, layout) }
    }
}

/// The floor of a cached alloc+free that keeps an exact state word per
/// page, not a peer: the operations pinowner's thread cache cannot drop,
/// alone, `&mut` like the peers. Alloc pops a page number off a list,
/// makes the page's word allocated (a load and a plain store, as a cache
/// owner does) and writes the owner slot; free loads the word and drops
/// the last count with a compare-and-swap (a last release races
/// acquisitions by page number, so it must be one), then pushes the page
/// back. No lock, thread-local, counter, attribution site, isolation or
/// poisoning check.
pub struct Floor {
    words: Vec<std::sync::atomic::AtomicU64>,
    owners: Vec<std::sync::atomic::AtomicU64>,
    list: Vec<u32>,
}

impl Floor {
    /// `pages` pages, all free.
    pub fn new(pages: usize) -> Floor {
        Floor {
            words: (0..pages).map(|_| Default::default()).collect(),
            owners: (0..pages).map(|_| Default::default()).collect(),
            list: (0..pages as u32).rev().collect(),
        }
    }

    /// Allocates a page for `who`; returns its number.
    #[inline]
    pub fn alloc(&mut self, who: u64) -> u32 {
        use std::sync::atomic::Ordering::{Relaxed, Release};
        let p = self.list.pop().expect("floor out of pages");
        let w = &self.words[p as usize];
        w.store(w.load(Relaxed) + 1, Release);
        self.owners[p as usize].store(who, Relaxed);
        p
    }

    /// Drops the one count on page `p`, freeing it.
    #[inline]
    pub fn free(&mut self, p: u32) {
        use std::sync::atomic::Ordering::{Relaxed, Release};
        let w = &self.words[p as usize];
        let old = w.load(Relaxed);
        if w.compare_exchange(old, old - 1, Release, Relaxed).is_ok() {
            self.list.push(p);
        }
    }

    /// [`free`](Self::free) with a plain store in place of the
    /// compare-and-swap: not a correct release of a count others may race
    /// (a `&mut` allocator's free), measured only to show what the one
    /// locked instruction of a refcounted free costs.
    #[inline]
    #[allow(dead_code, reason = "timed by alloc_insn alone; the other benches include this file too")]
    pub fn free_plain(&mut self, p: u32) {
        use std::sync::atomic::Ordering::{Relaxed, Release};
        let w = &self.words[p as usize];
        w.store(w.load(Relaxed) - 1, Release);
        self.list.push(p);
    }
}
