//! The global allocator: mimalloc, which keeps a huge up-front reservation from killing the
//! process.
//!
//! mimalloc rather than the C library's allocator: query execution allocates and frees many
//! buffers of a few hundred KiB to a few MiB (Arrow arrays, Parquet pages), which glibc maps
//! and unmaps each time, paying page faults and zeroing; mimalloc reuses them. Cold SQL scans
//! took a quarter less time with it (docs/benchmarks.md).
//!
//! The wire codec (`kafka-protocol` 0.18) sizes a `Vec` from an array length read off the wire
//! before decoding any element, so a 20-byte frame can ask for 150 GB. An allocator refuses
//! that, and Rust aborts the whole broker. Here, allocations of `LARGE_ALLOCATION_BYTES` or
//! more are served by `mmap(MAP_NORESERVE)`: address space only, backed by memory page by page
//! as it is touched. The decoder then fails on the missing elements and frees the mapping, having
//! touched nothing, and only the offending connection is closed. (Found by the `request_decode`
//! fuzz target; the codec's own fix is pending upstream.)
//!
//! ```
//! #[global_allocator]
//! static ALLOCATOR: broker::alloc::LazyLargeAllocator = broker::alloc::LazyLargeAllocator;
//!
//! let reserved: Vec<u64> = Vec::with_capacity(1 << 34); // 128 GiB of address space, no memory
//! assert!(reserved.capacity() >= 1 << 34);
//! ```

use std::alloc::{GlobalAlloc, Layout};

use mimalloc::MiMalloc;

/// Allocations at least this large are mapped lazily.
pub const LARGE_ALLOCATION_BYTES: usize = 1 << 30;

/// Page alignment that `mmap` guarantees.
const PAGE_BYTES: usize = 4096;

pub struct LazyLargeAllocator;

fn is_large(layout: &Layout) -> bool {
    layout.size() >= LARGE_ALLOCATION_BYTES && layout.align() <= PAGE_BYTES
}

unsafe fn map(size: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping with no address hint has no preconditions.
    let pointer = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if pointer == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        pointer.cast()
    }
}

unsafe impl GlobalAlloc for LazyLargeAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_large(&layout) {
            unsafe { map(layout.size()) }
        } else {
            unsafe { MiMalloc.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_large(&layout) {
            // Fresh anonymous pages are zero.
            unsafe { map(layout.size()) }
        } else {
            unsafe { MiMalloc.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        if is_large(&layout) {
            // SAFETY: `pointer` came from `map` with this size.
            unsafe { libc::munmap(pointer.cast(), layout.size()) };
        } else {
            unsafe { MiMalloc.dealloc(pointer, layout) }
        }
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size` with `layout.align()` is a valid layout.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (is_large(&layout), is_large(&new_layout)) {
            (false, false) => return unsafe { MiMalloc.realloc(pointer, layout, new_size) },
            (true, true) => {
                // Move the mapping rather than copy it, so untouched pages stay untouched.
                // SAFETY: `pointer` is a mapping of `layout.size()` bytes made by `map`.
                let moved = unsafe {
                    libc::mremap(
                        pointer.cast(),
                        layout.size(),
                        new_size,
                        libc::MREMAP_MAYMOVE,
                    )
                };
                return if moved == libc::MAP_FAILED {
                    std::ptr::null_mut()
                } else {
                    moved.cast()
                };
            }
            _ => {}
        }
        let new_pointer = unsafe { self.alloc(new_layout) };
        if !new_pointer.is_null() {
            let keep = layout.size().min(new_size);
            // SAFETY: both blocks are valid for `keep` bytes and do not overlap.
            unsafe {
                std::ptr::copy_nonoverlapping(pointer, new_pointer, keep);
                self.dealloc(pointer, layout);
            }
        }
        new_pointer
    }
}

/// Hands memory that the allocators (mimalloc, and the C library's for C code) keep free back
/// to the operating system, so an idle broker's resident size falls back. mimalloc's forced
/// collection purges every arena of the process, whichever thread freed the memory, so the
/// next allocations anywhere fault their pages in again: the binary calls
/// [`release_free_memory_unless_warm`] every few seconds.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
    // SAFETY: mi_collect only returns mimalloc's free pages; callable from any thread.
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
}

/// How long after the last sign of SQL work free memory stays with the process.
pub const KEEP_WARM: std::time::Duration = std::time::Duration::from_secs(2);

/// Milliseconds on [`clock_ms`] until which free memory is kept.
static WARM_UNTIL_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Milliseconds since the first call, on the monotonic clock.
fn clock_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
}

/// Keeps free memory for [`KEEP_WARM`] from now. For the SQL runtime's thread park and unpark:
/// a query allocates and frees many large buffers, and returning them between two queries
/// made the next one fault its pages in again (a cold 1% range query 0.7 s after the last paid
/// about 580 page faults, 370 without these purges).
pub fn keep_memory_warm() {
    WARM_UNTIL_MS.fetch_max(
        clock_ms() + KEEP_WARM.as_millis() as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
}

/// [`release_free_memory`], unless [`keep_memory_warm`] was called in the last [`KEEP_WARM`];
/// true when it ran.
pub fn release_free_memory_unless_warm() -> bool {
    if clock_ms() < WARM_UNTIL_MS.load(std::sync::atomic::Ordering::Relaxed) {
        return false;
    }
    release_free_memory();
    true
}

/// mimalloc's option number for `purge_delay` (mimalloc.h, `mi_option_e`; the Rust bindings
/// name no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long memory a thread freed stays committed for its next allocations before mimalloc
/// returns it to the operating system. mimalloc 2's default is 10 ms: then each query,
/// arriving a few hundred milliseconds after the last, found its buffers returned and paid page
/// faults and zeroing for all of them again (a cold full scan took 86 ms instead of 75 ms when
/// queries came 0.7 s apart). A process without SQL work returns everything sooner
/// ([`release_free_memory_unless_warm`]).
const PURGE_DELAY_MS: i64 = 10_000;

/// Sets the allocator's options; call once, first thing in `main`.
pub fn configure() {
    // SAFETY: sets one option value; mimalloc reads options atomically.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS as _) };
}

/// For a runtime's `on_thread_park`: when a thread goes idle, at most once a second, the pages
/// its own allocator heap holds empty go back to the process's arena (mimalloc keeps free pages
/// per thread, and only that thread hands them back), where they stay committed for the purge
/// delay or until [`release_free_memory`]. Not a forced collection: that purges the whole
/// process, and a thread parks many times a second while queries and requests come and go;
/// each purge made the next query fault its buffers in again.
pub fn release_idle_thread_memory() {
    use std::cell::Cell;
    use std::time::{Duration, Instant};
    thread_local! {
        static LAST: Cell<Option<Instant>> = const { Cell::new(None) };
    }
    let now = Instant::now();
    let due = LAST.with(|last| {
        let due = last
            .get()
            .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1));
        if due {
            last.set(Some(now));
        }
        due
    });
    if due {
        // SAFETY: mi_collect only returns this thread's free pages.
        unsafe { libmimalloc_sys::mi_collect(false) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_memory_is_kept_while_sql_keeps_it_warm() {
        use std::sync::atomic::Ordering::Relaxed;
        keep_memory_warm();
        assert!(!release_free_memory_unless_warm());
        // A call never shortens the time already granted.
        let later = clock_ms() + 60_000;
        WARM_UNTIL_MS.store(later, Relaxed);
        keep_memory_warm();
        assert_eq!(WARM_UNTIL_MS.load(Relaxed), later);
        // Once the time has passed, the memory goes back.
        WARM_UNTIL_MS.store(clock_ms(), Relaxed);
        assert!(release_free_memory_unless_warm());
    }

    #[test]
    fn a_huge_reservation_costs_nothing_until_touched() {
        let allocator = LazyLargeAllocator;
        // 64 GiB: more than this machine's memory, as a hostile array length would ask.
        let layout = Layout::from_size_align(64 << 30, 8).unwrap();
        unsafe {
            let pointer = allocator.alloc(layout);
            assert!(!pointer.is_null());
            pointer.write(7);
            assert_eq!(pointer.read(), 7);
            let grown = allocator.realloc(pointer, layout, 65 << 30);
            assert_eq!(grown.read(), 7);
            allocator.dealloc(grown, Layout::from_size_align(65 << 30, 8).unwrap());
        }
    }

    #[test]
    fn small_allocations_round_trip_through_the_system_allocator() {
        let allocator = LazyLargeAllocator;
        let layout = Layout::from_size_align(100, 8).unwrap();
        unsafe {
            let pointer = allocator.alloc_zeroed(layout);
            assert_eq!(pointer.read(), 0);
            let grown = allocator.realloc(pointer, layout, 200);
            allocator.dealloc(grown, Layout::from_size_align(200, 8).unwrap());
        }
    }
}
