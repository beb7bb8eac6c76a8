//! A bounded multi-producer, multi-consumer queue that never blocks.
//!
//! The recording side of the tracker: a thread touching an armed page pushes
//! its event here and returns; a report drains the queue into its history.
//! Neither side ever waits for the other, so rendering a report (which
//! resolves symbols for milliseconds) never stalls a thread that is putting a
//! page.
//!
//! The algorithm is the classic bounded queue with one sequence number per
//! slot (Dmitry Vyukov's): slot `i` is writable by the producer that claims
//! position `p` when its sequence equals `p`, and readable by the consumer
//! that claims `p` when it equals `p + 1`. A producer that finds the slot
//! still occupied (the queue is full, or a consumer is mid-read) gives up at
//! once and the caller counts a drop.

use core::mem::MaybeUninit;

use crate::sync::Ordering::{Acquire, Relaxed, Release};
use crate::sync::{AtomicUsize, UnsafeCell};

struct Slot<T> {
    seq: AtomicUsize,
    value: UnsafeCell<MaybeUninit<T>>,
}

/// A bounded queue of `capacity` (rounded up to a power of two) values.
pub(crate) struct Ring<T> {
    slots: Box<[Slot<T>]>,
    mask: usize,
    head: AtomicUsize,
    tail: AtomicUsize,
}

// A value is written by exactly one producer (the one whose claim of the
// position succeeded) and read by exactly one consumer; the slot's sequence
// number (release store, acquire load) orders the two.
// SAFETY: values only move between threads, so `T: Send` suffices.
unsafe impl<T: Send> Sync for Ring<T> {}
// SAFETY: as above; the ring owns its values.
unsafe impl<T: Send> Send for Ring<T> {}

impl<T> Ring<T> {
    pub(crate) fn new(capacity: usize) -> Ring<T> {
        let n = capacity.max(2).next_power_of_two();
        Ring {
            slots: (0..n)
                .map(|i| Slot { seq: AtomicUsize::new(i), value: UnsafeCell::new(MaybeUninit::uninit()) })
                .collect(),
            mask: n - 1,
            head: AtomicUsize::new(0),
            tail: AtomicUsize::new(0),
        }
    }

    /// The number of slots.
    pub(crate) fn capacity(&self) -> usize {
        self.mask + 1
    }

    /// Pushes `value`, or gives it back when the queue is full.
    pub(crate) fn push(&self, value: T) -> Result<(), T> {
        let mut pos = self.tail.load(Relaxed);
        loop {
            let slot = &self.slots[pos & self.mask];
            let seq = slot.seq.load(Acquire);
            let diff = seq.wrapping_sub(pos) as isize;
            if diff == 0 {
                match self.tail.compare_exchange_weak(pos, pos.wrapping_add(1), Relaxed, Relaxed) {
                    Ok(_) => {
                        // SAFETY: winning the claim of `pos` while the slot's
                        // sequence is `pos` makes this thread its only writer
                        // until the release store below hands it to a reader.
                        slot.value.with_mut(|v| unsafe { (*v).write(value) });
                        slot.seq.store(pos.wrapping_add(1), Release);
                        return Ok(());
                    }
                    Err(cur) => pos = cur,
                }
            } else if diff < 0 {
                return Err(value);
            } else {
                pos = self.tail.load(Relaxed);
            }
        }
    }

    /// Pops the oldest value, if any.
    pub(crate) fn pop(&self) -> Option<T> {
        let mut pos = self.head.load(Relaxed);
        loop {
            let slot = &self.slots[pos & self.mask];
            let seq = slot.seq.load(Acquire);
            let diff = seq.wrapping_sub(pos.wrapping_add(1)) as isize;
            if diff == 0 {
                match self.head.compare_exchange_weak(pos, pos.wrapping_add(1), Relaxed, Relaxed) {
                    Ok(_) => {
                        // SAFETY: the acquire load saw the producer's release
                        // of this position, and winning the claim makes this
                        // thread the slot's only reader.
                        let value = slot.value.with_mut(|v| unsafe { (*v).assume_init_read() });
                        slot.seq.store(pos.wrapping_add(self.mask + 1), Release);
                        return Some(value);
                    }
                    Err(cur) => pos = cur,
                }
            } else if diff < 0 {
                return None;
            } else {
                pos = self.head.load(Relaxed);
            }
        }
    }
}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        while self.pop().is_some() {}
    }
}

impl<T> core::fmt::Debug for Ring<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Ring").field("capacity", &self.capacity()).finish_non_exhaustive()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_full_ring_refuses_and_a_drained_one_accepts_again_in_order() {
        let r = Ring::new(4);
        for i in 0..4 {
            r.push(i).unwrap();
        }
        assert_eq!(r.push(9), Err(9));
        assert_eq!(r.pop(), Some(0));
        r.push(4).unwrap();
        assert_eq!((1..=4).map(|_| r.pop().unwrap()).collect::<Vec<_>>(), [1, 2, 3, 4]);
        assert_eq!(r.pop(), None);
    }

    #[test]
    fn values_left_in_a_dropped_ring_are_dropped() {
        let v = std::sync::Arc::new(());
        let r = Ring::new(8);
        r.push(v.clone()).unwrap();
        r.push(v.clone()).unwrap();
        drop(r);
        assert_eq!(std::sync::Arc::strong_count(&v), 1);
    }

    #[test]
    fn concurrent_producers_lose_nothing_they_were_not_told_about() {
        // Smaller under Miri (a ring of 64 still fills up).
        const PER: usize = if cfg!(miri) { 100 } else { 1000 };
        let r = std::sync::Arc::new(Ring::new(if cfg!(miri) { 64 } else { 1024 }));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let r = r.clone();
                std::thread::spawn(move || (0..PER).filter(|i| r.push(t * PER + i).is_err()).count())
            })
            .collect();
        let mut popped = 0;
        let mut dropped = 0;
        let mut running = threads;
        while !running.is_empty() {
            while r.pop().is_some() {
                popped += 1;
            }
            if running.iter().all(|t| t.is_finished()) {
                dropped += running.drain(..).map(|t| t.join().unwrap()).sum::<usize>();
            }
        }
        while r.pop().is_some() {
            popped += 1;
        }
        assert_eq!(popped + dropped, 4 * PER);
    }
}
