//! io_uring registered buffers in a pinowner arena: who holds the page
//! that blocks a 2 MiB reservation? An in-flight read.
//!
//! 1. A 4 MiB arena backed by hugepages (`MAP_HUGETLB`, else transparent
//!    hugepages) is registered with io_uring as one fixed buffer, the way
//!    a driver registers its DMA region.
//! 2. Receive frames come from the movable zone (the top 2 MiB). Each read
//!    pins its frame (`#[pin_tracked]` in `rx_post`) for as long as the
//!    kernel may write into it: a `READ_FIXED` from a file completes and
//!    its bytes are checked in the pinned page; a `READ_FIXED` from an
//!    empty pipe stays in flight.
//! 3. A 2 MiB reservation of the movable zone fails: the failure names
//!    `rx_post [io_uring]`, and the owner report shows the pin found at
//!    arming.
//! 4. Data arrives on the pipe; the completion lands in the pinned page and
//!    unpins it; the reservation succeeds.
//!
//! Where io_uring is unavailable (an old kernel, `kernel.io_uring_disabled`,
//! a seccomp filter, no memlock allowance) the example says why and exits
//! successfully.
//!
//! Run: `cargo run --release -p pinowner-examples --features io-uring --example io_uring_buffers`

#[cfg(target_os = "linux")]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    linux::main()
}

#[cfg(not(target_os = "linux"))]
fn main() {
    println!("io_uring_buffers: skipped, io_uring is Linux only");
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io::Write as _;
    use std::os::fd::AsRawFd;

    use io_uring::{opcode, types, IoUring};
    use pinowner::{pin_tracked, Backing, ContigError, MovableBlock, PageArena, PagePin, Reason, ZoneKind};

    /// Posts a receive: pins the frame's page for as long as the kernel may
    /// write into it. The pin is what a failed reservation will name.
    #[pin_tracked(subsystem = "io_uring", name = "rx_post")]
    fn rx_post<'a>(frame: &MovableBlock<&'a PageArena>) -> PagePin<&'a PageArena> {
        frame.pin(0).expect("pin a receive frame")
    }

    /// Submits a `READ_FIXED` of `len` bytes from `fd` into the pinned page,
    /// tagged `tag`.
    fn read_fixed(ring: &mut IoUring, fd: i32, page: &PagePin<&PageArena>, len: u32, tag: u64) -> std::io::Result<()> {
        let entry =
            opcode::ReadFixed::new(types::Fd(fd), page.as_ptr().as_ptr(), len, 0).offset(0).build().user_data(tag);
        // SAFETY: the entry names memory inside buffer 0 (the registered
        // arena), pinned by `page` until the completion is reaped; `fd`
        // stays open until then too (both are checked by the callers,
        // which reap before dropping either).
        unsafe { ring.submission().push(&entry) }.map_err(|_| std::io::Error::other("submission queue full"))?;
        ring.submit()?;
        Ok(())
    }

    /// Waits for the completion tagged `tag`, returning its result.
    fn reap(ring: &mut IoUring, tag: u64) -> std::io::Result<i32> {
        loop {
            ring.submit_and_wait(1)?;
            if let Some(cqe) = ring.completion().find(|c| c.user_data() == tag) {
                return Ok(cqe.result());
            }
        }
    }

    /// Says why the example cannot run here, and succeeds.
    fn skip(why: &str, e: &dyn std::fmt::Display) -> Result<(), Box<dyn std::error::Error>> {
        println!("io_uring_buffers: skipped, {why}: {e}");
        println!("(io_uring may be disabled by kernel.io_uring_disabled, a seccomp filter, or RLIMIT_MEMLOCK)");
        Ok(())
    }

    pub(super) fn main() -> Result<(), Box<dyn std::error::Error>> {
        let arena =
            PageArena::builder().capacity(4 << 20).movable_capacity(2 << 20).backing(Backing::HugeTlb).build()?;
        println!("arena: {} pages, backing {:?}", arena.pages(), arena.backing());
        if let Some(why) = arena.backing_fallback() {
            println!("  (hugetlb fell back to transparent hugepages: {why})");
        }
        let movable = arena.zone_range(ZoneKind::Movable);

        let mut ring = match IoUring::new(8) {
            Ok(ring) => ring,
            Err(e) => return skip("io_uring_setup failed", &e),
        };

        // The region, from a block: a page's address is the base plus its
        // number times the page size.
        // The whole region, as one registered buffer: a page's address is
        // `as_ptr() + pfn * page_size()` for the arena's life.
        let region = libc::iovec { iov_base: arena.as_ptr().as_ptr().cast(), iov_len: arena.len() };
        // SAFETY: the iovec covers exactly the arena's region, which stays
        // mapped until `arena` drops; the ring is dropped first (it is
        // declared after the arena, and unregistered explicitly below), so
        // the kernel never writes the region after it is gone.
        if let Err(e) = unsafe { ring.submitter().register_buffers(&[region]) } {
            return skip("registering the arena as a fixed buffer failed", &e);
        }
        println!("registered {} KiB at {:p} as fixed buffer 0\n", arena.len() / 1024, arena.as_ptr());

        // A read that completes: a file's bytes land in a pinned frame.
        let mut file = tempfile("pinowner-io-uring-input")?;
        file.1.write_all(&[0x5a; 4096])?;
        file.1.flush()?;
        let input = std::fs::File::open(&file.0)?;
        let frame = arena.alloc_movable(0)?;
        let pin = rx_post(&frame);
        read_fixed(&mut ring, input.as_raw_fd(), &pin, 4096, 1)?;
        let n = reap(&mut ring, 1)?;
        if n < 0 {
            return skip("READ_FIXED failed", &std::io::Error::from_raw_os_error(-n));
        }
        // SAFETY: the read completed; nobody writes the page while the pin
        // is held (the frame's owner does not, the kernel is done).
        let landed = unsafe { core::slice::from_raw_parts(pin.as_ptr().as_ptr(), n as usize) };
        assert!(landed.iter().all(|&b| b == 0x5a), "the file's bytes are in the pinned page");
        println!("read 1: {n} bytes from a file landed in pinned page {:#x}", pin.pfn());
        drop(pin);
        drop(frame);
        std::fs::remove_file(&file.0)?;

        // A read that stays in flight: nothing has been written to the pipe.
        let (reader, mut writer) = std::io::pipe()?;
        let frame = arena.alloc_movable(0)?;
        let in_flight = rx_post(&frame);
        let pfn = in_flight.pfn();
        read_fixed(&mut ring, reader.as_raw_fd(), &in_flight, 4096, 2)?;
        // The pool lets go of its frame; the in-flight read keeps it pinned.
        drop(frame);
        println!("read 2: in flight from a pipe into pinned page {pfn:#x}\n");

        println!("reserving 2 MiB (512 pages) of the movable zone {:#x}..{:#x}...", movable.start, movable.end);
        match arena.reserve_contig(512, 512, Reason::Contig) {
            Ok(_) => return Err("the reservation succeeded with a read in flight".into()),
            Err(ContigError::Busy(failure)) => {
                let named = failure.busy.iter().find_map(|b| b.attributed.map(|(_, a)| a.to_string()));
                println!("reservation failed:\n{failure}\n");
                assert!(
                    named.as_deref().is_some_and(|n| n.contains("rx_post")),
                    "the failure names the in-flight read's pin: {named:?}"
                );
            }
            Err(e) => return Err(e.into()),
        }
        println!("{}\n", arena.owner_report());

        // Data arrives: the read completes into the pinned page.
        writer.write_all(b"completion")?;
        let n = reap(&mut ring, 2)?;
        assert_eq!(n, 10, "the read returned the pipe's bytes");
        // SAFETY: the read completed; the pin keeps the page, nobody
        // writes it now.
        let landed = unsafe { core::slice::from_raw_parts(in_flight.as_ptr().as_ptr(), 10) };
        assert_eq!(landed, b"completion");
        println!("read 2 completed: {:?} in page {pfn:#x}; unpinning", String::from_utf8_lossy(landed));
        drop(in_flight);

        let run = arena.reserve_contig(512, 512, Reason::Contig)?;
        println!(
            "after the completion: reserved pfn {:#x}..{:#x} ({} KiB)",
            run.range().start,
            run.range().end,
            run.len() / 1024
        );
        drop(run);
        ring.submitter().unregister_buffers()?;
        drop(ring);
        Ok(())
    }

    /// A new temporary file (path and handle).
    fn tempfile(name: &str) -> std::io::Result<(std::path::PathBuf, std::fs::File)> {
        let path = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        let file = std::fs::File::create(&path)?;
        Ok((path, file))
    }
}
