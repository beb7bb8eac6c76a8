//! A frame-pointer stack walk, bounded by the thread's own stack.
//!
//! In code built with frame pointers (`-C force-frame-pointers=yes`), each
//! frame starts with a record of two words: the caller's frame pointer and
//! the return address. Following that chain costs a few nanoseconds per
//! frame, against a few hundred for the DWARF unwinder.
//!
//! In code built without them the frame-pointer register is an ordinary
//! register and the "chain" is whatever it holds. The walk is still
//! memory-safe: it reads only 8-byte-aligned words between the current stack
//! pointer and the top of this thread's stack — live, mapped memory of this
//! thread — and stops as soon as a link does not point further up that
//! range. The words are loaded with inline assembly, so reading stack slots
//! the compiler considers dead is a plain machine load, not a Rust-level
//! read of uninitialised memory. What it cannot do without frame pointers is
//! give the right frames: the stack comes out short or wrong. That is why
//! this walk is an opt-in ([`Unwinder::FramePointers`](super::Unwinder)).

use super::{StackTrace, MAX_DEPTH};

/// The top (highest address, exclusive) of the calling thread's stack, or
/// 0 when it cannot be found. Cached per thread.
fn stack_top() -> usize {
    crate::sync::thread_local_const! {
        static TOP: core::cell::Cell<usize> = const { core::cell::Cell::new(0) };
    }
    let cached = TOP.with(|t| t.get());
    if cached != 0 {
        return cached;
    }
    let top = query_stack_top();
    TOP.with(|t| t.set(top));
    top
}

#[cfg(target_os = "linux")]
fn query_stack_top() -> usize {
    // SAFETY: `attr` is initialised by `pthread_getattr_np` before use and
    // destroyed once; the out-pointers are valid locals.
    unsafe {
        let mut attr: libc::pthread_attr_t = core::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return 0;
        }
        let mut addr: *mut libc::c_void = core::ptr::null_mut();
        let mut size: libc::size_t = 0;
        let ok = libc::pthread_attr_getstack(&attr, &mut addr, &mut size) == 0;
        libc::pthread_attr_destroy(&mut attr);
        if ok {
            (addr as usize).saturating_add(size)
        } else {
            0
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn query_stack_top() -> usize {
    0
}

/// Loads the frame record at `fp`: the caller's frame pointer and the
/// return address (x86-64 and AArch64 lay frame records out alike: the
/// caller's frame pointer, then the return address).
///
/// # Safety
///
/// `fp` and `fp + 8` must be readable, 8-byte-aligned addresses.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[inline(always)]
unsafe fn frame_record(fp: usize) -> (usize, usize) {
    let (next, ret): (usize, usize);
    #[cfg(target_arch = "x86_64")]
    macro_rules! load_pair {
        () => {
            "mov {next}, qword ptr [{fp}]\nmov {ret}, qword ptr [{fp} + 8]"
        };
    }
    #[cfg(target_arch = "aarch64")]
    macro_rules! load_pair {
        () => {
            "ldp {next}, {ret}, [{fp}]"
        };
    }
    // SAFETY: the caller guarantees both words are readable; the asm only loads them.
    unsafe {
        core::arch::asm!(
            load_pair!(),
            fp = in(reg) fp,
            next = out(reg) next,
            ret = out(reg) ret,
            options(nostack, readonly, preserves_flags),
        );
    }
    (next, ret)
}

/// The frame-pointer register (`rbp` on x86-64, `x29` on AArch64).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[inline(always)]
fn frame_pointer() -> usize {
    let fp: usize;
    #[cfg(target_arch = "x86_64")]
    macro_rules! read_fp {
        () => {
            "mov {}, rbp"
        };
    }
    #[cfg(target_arch = "aarch64")]
    macro_rules! read_fp {
        () => {
            "mov {}, x29"
        };
    }
    // SAFETY: reads a register.
    unsafe { core::arch::asm!(read_fp!(), out(reg) fp, options(nomem, nostack, preserves_flags)) };
    fp
}

/// Whether this target has a frame-pointer walk.
pub(crate) const SUPPORTED: bool = cfg!(any(target_arch = "x86_64", target_arch = "aarch64"));

/// Walks the frame-pointer chain from this function's caller: like
/// [`capture`](super::capture), `skip` frames after the caller's own are
/// dropped, then up to `depth` return addresses are kept. Returns an empty
/// trace on targets without a walk or when the stack's bounds are unknown.
#[inline(never)]
pub(crate) fn capture(skip: usize, depth: usize) -> StackTrace {
    let mut trace = StackTrace::new();
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    {
        let depth = depth.min(MAX_DEPTH);
        let top = stack_top();
        let marker = 0u8;
        let low = core::hint::black_box(&marker) as *const u8 as usize;
        // This function's own record: its return address is into the
        // caller (the frame `capture` in the DWARF walk reports first).
        let mut fp = frame_pointer();
        let mut skip = skip;
        while trace.len() < depth {
            // Inside the live part of this thread's stack, aligned, with
            // room for the two words.
            if top == 0 || fp < low || !fp.is_multiple_of(8) || fp.checked_add(16).is_none_or(|e| e > top) {
                break;
            }
            // `low..top` is this thread's stack from a live local up to its
            // top: mapped, readable, and ours.
            // SAFETY: `fp` and `fp + 8` lie in `low..top` and are aligned.
            let (next, ret) = unsafe { frame_record(fp) };
            if ret == 0 {
                break;
            }
            if skip > 0 {
                skip -= 1;
            } else {
                trace.push(ret);
            }
            // Frames grow down: the caller's record is strictly higher.
            if next <= fp {
                break;
            }
            fp = next;
        }
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let _ = (skip, depth, MAX_DEPTH);
    trace
}
