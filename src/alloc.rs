//! The process allocator: the system allocator, except that single allocations of 1 GiB or
//! more are mapped lazily (`MAP_NORESERVE`).
//!
//! Why: the protocol library sizes a decoded array with `Vec::with_capacity(count)` using the
//! count read from the wire before decoding any element (kafka-protocol-rs issues #152 and
//! #200, unfixed in 0.18). A few bytes claiming two billion elements ask for hundreds of GiB; the
//! system allocator refuses, and Rust aborts the process. Nothing in the broker legitimately
//! allocates 1 GiB in one piece (frames are bounded far below that), so such a request can only
//! come from a hostile or corrupt length. Mapping it without reserving memory lets the decoder
//! fail on the missing elements a moment later, touching only the pages it actually wrote, and
//! the connection is closed with an error instead of the broker dying.

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations at or above this size are mapped lazily.
pub const HUGE_ALLOCATION_BYTES: usize = 1 << 30;
const PAGE: usize = 4096;

/// See the module documentation.
pub struct GuardedAllocator;

fn mapped_len(size: usize) -> usize {
    size.div_ceil(PAGE) * PAGE
}

unsafe fn map(layout: Layout) -> *mut u8 {
    if layout.align() > PAGE {
        return std::ptr::null_mut();
    }
    // SAFETY: anonymous private mapping; no file or existing memory involved.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            mapped_len(layout.size()),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED { std::ptr::null_mut() } else { ptr.cast() }
}

// SAFETY: every block is freed by the allocator that produced it, which is decided by the
// layout size alone (the same on allocation and deallocation).
unsafe impl GlobalAlloc for GuardedAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= HUGE_ALLOCATION_BYTES { unsafe { map(layout) } } else { unsafe { System.alloc(layout) } }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= HUGE_ALLOCATION_BYTES {
            // Fresh anonymous mappings read as zeros.
            unsafe { map(layout) }
        } else {
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.size() >= HUGE_ALLOCATION_BYTES {
            unsafe { libc::munmap(ptr.cast(), mapped_len(layout.size())) };
        } else {
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.size() < HUGE_ALLOCATION_BYTES && new_size < HUGE_ALLOCATION_BYTES {
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        if layout.size() >= HUGE_ALLOCATION_BYTES && new_size >= HUGE_ALLOCATION_BYTES {
            // Mapped to mapped: let the kernel move the page tables instead of copying gigabytes
            // (a growing multi-GiB Vec otherwise stalls its thread for seconds per doubling).
            // SAFETY: `ptr` is a mapping of `mapped_len(layout.size())` bytes made by `map`.
            let moved = unsafe {
                libc::mremap(ptr.cast(), mapped_len(layout.size()), mapped_len(new_size), libc::MREMAP_MAYMOVE)
            };
            return if moved == libc::MAP_FAILED { std::ptr::null_mut() } else { moved.cast() };
        }
        // Crossing the threshold: move between the two allocators.
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return std::ptr::null_mut();
        };
        let new_ptr = unsafe { self.alloc(new_layout) };
        if !new_ptr.is_null() {
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new_ptr, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new_ptr
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_absurd_capacity_does_not_abort() {
        // 2^31 elements of 72 bytes: what a hostile array count asks the decoder for.
        let mut v: Vec<[u8; 72]> = Vec::with_capacity(i32::MAX as usize);
        v.push([1; 72]);
        assert_eq!(v[0][0], 1);
        drop(v);
        // Growing above the threshold keeps the contents (mremap, no copy).
        let mut big: Vec<u8> = Vec::with_capacity(super::HUGE_ALLOCATION_BYTES);
        big.extend_from_slice(b"first");
        big.reserve_exact(super::HUGE_ALLOCATION_BYTES * 2);
        assert!(big.capacity() >= super::HUGE_ALLOCATION_BYTES * 2);
        big.extend_from_slice(b" second");
        assert_eq!(&big[..], b"first second");
        big.shrink_to(8);
        assert_eq!(&big[..], b"first second");
        drop(big);
        let mut grow: Vec<u8> = Vec::with_capacity(16);
        grow.extend_from_slice(b"still fine");
        assert_eq!(&grow, b"still fine");
    }
}
