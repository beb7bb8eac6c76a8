//! A frame-pointer stack walk, confined to the stack it starts on.
//!
//! In code built with frame pointers (`-C force-frame-pointers=yes`), each
//! frame starts with a record of two words: the caller's frame pointer and
//! the return address. Following that chain costs a few nanoseconds per
//! frame, against a few hundred for the DWARF unwinder.
//!
//! In code built without them the frame-pointer register is an ordinary
//! register and the "chain" is whatever it holds, so every link is checked
//! before it is read. The walk is memory-safe because of two facts:
//!
//! 1. **It only runs on the thread's own stack.** Each thread caches the
//!    bounds `[lo, hi)` of its stack (`pthread_getattr_np`, once). A walk
//!    first reads the stack pointer `sp`; if `sp` is not inside `[lo, hi)`,
//!    the code runs on a stack of someone else's making — a segment that
//!    `stacker::grow` (and so `recursive`, which DataFusion uses) mapped, a
//!    `sigaltstack` signal stack, a green thread's stack — whose extent
//!    nothing tells us, and the walk refuses ([`capture`] returns `None`).
//!    There is no provably safe way to learn such a stack's top: its mapping
//!    may sit next to unrelated memory that another thread can unmap.
//! 2. **On that stack it reads only `[sp, hi)`.** Above the stack pointer
//!    the thread's stack is mapped and readable: a spawned thread's stack is
//!    one mapping `[lo, hi)` (its guard page lies below `lo`), and the main
//!    thread's stack mapping covers everything from the deepest point it
//!    has grown to up to `hi`. Every record read lies in `[sp, hi)`, is
//!    8-byte aligned and starts above the end of the record before it, so
//!    the walk goes strictly up and ends.
//!
//! The main thread's bounds are glibc's reconstruction: `hi` is the end of
//! the `[stack]` mapping and `lo` lies `RLIMIT_STACK` below it (or at the
//! end of the mapping below, whichever is higher). With a finite limit the
//! kernel places no mapping of its choosing in that range (it keeps
//! `mmap_base` below the stack's limit), so a stack pointer inside it is the
//! main stack's. With `RLIMIT_STACK` unlimited, glibc's range reaches down
//! to the next mapping and later mappings can land inside it, so the main
//! thread refuses to walk. What this cannot see: a program that raises
//! `RLIMIT_STACK` after start and then maps a stack of its own below the
//! main stack with `MAP_FIXED`, inside the new limit.
//!
//! The words are loaded with inline assembly, so reading stack slots the
//! compiler considers dead is a plain machine load, not a Rust-level read of
//! uninitialised memory; the values are only compared and kept as numbers.
//! What the walk cannot do without frame pointers is give the right frames:
//! the stack comes out short or wrong. That is why it is an opt-in
//! ([`Unwinder::FramePointers`](super::Unwinder)), and why that unwinder
//! falls back to the DWARF unwinder where this walk refuses.
//!
//! Under Miri there is no walk (no inline assembly, no
//! `pthread_getattr_np`): [`SUPPORTED`] is false.

use super::{StackTrace, MAX_DEPTH};

/// The calling thread's stack `[lo, hi)`, cached per thread. An empty range
/// when the bounds are unknown or the walk must not trust them.
fn thread_stack() -> (usize, usize) {
    crate::sync::thread_local_const! {
        /// `(0, 0)`: not asked yet.
        static STACK: core::cell::Cell<(usize, usize)> = const { core::cell::Cell::new((0, 0)) };
    }
    let cached = STACK.with(|s| s.get());
    if cached.1 != 0 {
        return cached;
    }
    // `(1, 1)`: asked, nothing to trust (empty, and `hi` is not 0).
    let bounds = query_thread_stack().filter(|&(lo, hi)| lo < hi).unwrap_or((1, 1));
    STACK.with(|s| s.set(bounds));
    bounds
}

/// The calling thread's stack as `pthread_getattr_np` reports it, or `None`
/// where it must not be trusted (see the module docs).
#[cfg(all(target_os = "linux", not(miri)))]
fn query_thread_stack() -> Option<(usize, usize)> {
    let (lo, size) = pthread_stack()?;
    let hi = lo.checked_add(size)?;
    // SAFETY: `getpid` and `gettid` have no preconditions.
    let main = unsafe { libc::getpid() == libc::gettid() };
    if main {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: `limit` is a valid, writable `rlimit`.
        let read = unsafe { libc::getrlimit(libc::RLIMIT_STACK, &mut limit) } == 0;
        if !read || limit.rlim_cur == libc::RLIM_INFINITY {
            return None;
        }
    }
    Some((lo, hi))
}

/// The low end and size of the calling thread's stack.
#[cfg(all(target_os = "linux", not(miri)))]
fn pthread_stack() -> Option<(usize, usize)> {
    let mut attr = core::mem::MaybeUninit::<libc::pthread_attr_t>::uninit();
    // SAFETY: `attr` is valid for writes; `pthread_self` is the calling
    // thread, alive for the call.
    if unsafe { libc::pthread_getattr_np(libc::pthread_self(), attr.as_mut_ptr()) } != 0 {
        return None;
    }
    let mut addr: *mut libc::c_void = core::ptr::null_mut();
    let mut size: libc::size_t = 0;
    // `attr` is destroyed once here and not used after.
    // SAFETY: `pthread_getattr_np` succeeded, so `attr` is initialised; the
    // out-pointers are valid locals.
    let ok = unsafe {
        let ok = libc::pthread_attr_getstack(attr.as_ptr(), &mut addr, &mut size) == 0;
        libc::pthread_attr_destroy(attr.as_mut_ptr());
        ok
    };
    ok.then_some((addr as usize, size))
}

#[cfg(not(all(target_os = "linux", not(miri))))]
fn query_thread_stack() -> Option<(usize, usize)> {
    None
}

/// The bounds the walk trusts for this thread, for tests: `None` where it
/// refuses every walk.
#[cfg(test)]
pub(crate) fn thread_stack_for_tests() -> Option<(usize, usize)> {
    let (lo, hi) = thread_stack();
    (lo < hi).then_some((lo, hi))
}

/// Loads the frame record at `fp`: the caller's frame pointer and the
/// return address (x86-64 and AArch64 lay frame records out alike: the
/// caller's frame pointer, then the return address).
///
/// # Safety
///
/// `fp` must be 8-byte aligned and `fp..fp + 16` readable.
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
    // SAFETY: the caller guarantees both words are readable and aligned; the
    // asm only loads them.
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
    // SAFETY: reads a register; touches no memory.
    unsafe { core::arch::asm!(read_fp!(), out(reg) fp, options(nomem, nostack, preserves_flags)) };
    fp
}

/// The stack-pointer register (`rsp` on x86-64, `sp` on AArch64).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[inline(always)]
fn stack_pointer() -> usize {
    let sp: usize;
    #[cfg(target_arch = "x86_64")]
    macro_rules! read_sp {
        () => {
            "mov {}, rsp"
        };
    }
    #[cfg(target_arch = "aarch64")]
    macro_rules! read_sp {
        () => {
            "mov {}, sp"
        };
    }
    // SAFETY: reads a register; touches no memory.
    unsafe { core::arch::asm!(read_sp!(), out(reg) sp, options(nomem, nostack, preserves_flags)) };
    sp
}

/// Whether this target has a frame-pointer walk: x86-64 and AArch64, not
/// under Miri.
pub(crate) const SUPPORTED: bool = cfg!(all(any(target_arch = "x86_64", target_arch = "aarch64"), not(miri)));

/// Walks the frame-pointer chain from this function's caller: like
/// [`capture`](super::capture), `skip` frames after the caller's own are
/// dropped, then up to `depth` return addresses are kept.
///
/// `None` when the walk refuses: on targets without a walk, where the
/// thread's stack bounds are unknown, and when the caller runs on another
/// stack than its thread's own (see the module docs).
#[inline(never)]
pub(crate) fn capture(skip: usize, depth: usize) -> Option<StackTrace> {
    if !SUPPORTED {
        let _ = (skip, depth, MAX_DEPTH);
        return None;
    }
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    {
        let sp = stack_pointer();
        let (lo, hi) = thread_stack();
        if !(lo..hi).contains(&sp) {
            return None;
        }
        let mut trace = StackTrace::new();
        let depth = depth.min(MAX_DEPTH);
        // This function's own record: its return address is into the
        // caller (the frame `capture` in the DWARF walk reports first).
        let mut fp = frame_pointer();
        // The lowest address the next record may start at: the stack
        // pointer, then the end of the record before.
        let mut floor = sp;
        let mut skip = skip;
        while trace.len() < depth {
            if fp < floor || !fp.is_multiple_of(8) || fp.checked_add(16).is_none_or(|end| end > hi) {
                break;
            }
            // `sp` lies in `[lo, hi)`, this thread's own stack, and
            // `floor >= sp`: `fp..fp + 16` lies in `[sp, hi)`, the part of
            // the stack above the stack pointer, which is mapped and
            // readable while the thread runs on it.
            // SAFETY: `fp` is 8-byte aligned and `fp..fp + 16` lies in
            // `[sp, hi)`, readable (above).
            let (next, ret) = unsafe { frame_record(fp) };
            if ret == 0 {
                break;
            }
            if skip > 0 {
                skip -= 1;
            } else {
                trace.push(ret);
            }
            // Frames grow down: the caller's record starts above this one.
            floor = fp + 16;
            fp = next;
        }
        Some(trace)
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    None
}
