//! Page-aligned, owned byte buffers for O_DIRECT I/O.
//!
//! Ownership: an [`AlignedBuf`] is owned by one task at a time. It is moved into an io_uring
//! operation for the duration of the operation and handed back with the result, so the kernel
//! never reads memory that Rust code can write. It is `Send` so a frozen read buffer can back
//! `Bytes` that travel between shards (see [`AlignedBuf::freeze`]).

use std::alloc::{Layout, alloc, dealloc, realloc};
use std::mem::MaybeUninit;
use std::ptr::NonNull;

use bytes::Bytes;
use compio::buf::{IoBuf, IoBufMut, SetLen};

/// The alignment (and the unit of length) of every O_DIRECT transfer: one page.
pub const PAGE_BYTES: usize = 4096;

/// Rounds `n` up to a whole number of pages.
pub const fn round_up_to_page(n: usize) -> usize {
    n.div_ceil(PAGE_BYTES) * PAGE_BYTES
}

/// Rounds `n` down to a whole number of pages.
pub const fn round_down_to_page(n: u64) -> u64 {
    n - n % PAGE_BYTES as u64
}

/// A growable byte buffer whose start address and capacity are multiples of [`PAGE_BYTES`].
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
    capacity: usize,
}

// SAFETY: AlignedBuf owns its allocation exclusively, like Vec<u8>.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared references only allow reads.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// An empty buffer able to hold at least `capacity` bytes (rounded up to a page).
    pub fn with_capacity(capacity: usize) -> Self {
        let capacity = round_up_to_page(capacity.max(1));
        let layout = Self::layout(capacity);
        // SAFETY: layout has a non-zero size.
        let raw = unsafe { alloc(layout) };
        let Some(ptr) = NonNull::new(raw) else { std::alloc::handle_alloc_error(layout) };
        Self { ptr, len: 0, capacity }
    }

    fn layout(capacity: usize) -> Layout {
        Layout::from_size_align(capacity, PAGE_BYTES).expect("aligned buffer layout")
    }

    /// Number of initialized bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no bytes are held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Allocated bytes (a multiple of [`PAGE_BYTES`]).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The initialized bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: [0, len) is initialized and owned by self.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The initialized bytes, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: [0, len) is initialized and exclusively borrowed.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// Grows the allocation so that `additional` more bytes fit, keeping page alignment.
    pub fn reserve(&mut self, additional: usize) {
        let needed = self.len.checked_add(additional).expect("buffer length overflow");
        if needed <= self.capacity {
            return;
        }
        let new_capacity = round_up_to_page(needed.max(self.capacity * 2));
        let old_layout = Self::layout(self.capacity);
        // SAFETY: ptr was allocated with old_layout; the new size is non-zero and keeps the
        // alignment because `realloc` preserves the layout's alignment.
        let raw = unsafe { realloc(self.ptr.as_ptr(), old_layout, new_capacity) };
        let Some(ptr) = NonNull::new(raw) else { std::alloc::handle_alloc_error(Self::layout(new_capacity)) };
        self.ptr = ptr;
        self.capacity = new_capacity;
    }

    /// Appends `bytes`, growing if needed.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.reserve(bytes.len());
        // SAFETY: capacity checked above; regions cannot overlap (we own ours exclusively).
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.as_ptr().add(self.len), bytes.len());
        }
        self.len += bytes.len();
    }

    /// Drops everything past `len` bytes.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Empties the buffer, keeping the allocation.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Zero-fills up to the next page boundary and makes those bytes part of the buffer, so the
    /// whole buffer can be written with O_DIRECT. Returns the padded length.
    pub fn pad_to_page(&mut self) -> usize {
        let padded = round_up_to_page(self.len);
        self.reserve(padded - self.len);
        // SAFETY: [len, padded) lies inside the allocation.
        unsafe { std::ptr::write_bytes(self.ptr.as_ptr().add(self.len), 0, padded - self.len) };
        self.len = padded;
        padded
    }

    /// Turns the buffer into shared, immutable `Bytes` without copying; slices of it can then be
    /// handed out (and sent to other shards) while the allocation stays alive.
    pub fn freeze(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in with_capacity/reserve with this layout.
        unsafe { dealloc(self.ptr.as_ptr(), Self::layout(self.capacity)) };
    }
}

impl AsRef<[u8]> for AlignedBuf {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedBuf").field("len", &self.len).field("capacity", &self.capacity).finish()
    }
}

impl IoBuf for AlignedBuf {
    fn as_init(&self) -> &[u8] {
        self.as_slice()
    }
}

impl SetLen for AlignedBuf {
    unsafe fn set_len(&mut self, len: usize) {
        debug_assert!(len <= self.capacity);
        self.len = len;
    }
}

impl IoBufMut for AlignedBuf {
    fn as_uninit(&mut self) -> &mut [MaybeUninit<u8>] {
        // SAFETY: the allocation is `capacity` bytes long and exclusively borrowed.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().cast::<MaybeUninit<u8>>(), self.capacity) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alignment_and_growth_keep_page_boundaries() {
        let mut buf = AlignedBuf::with_capacity(10);
        assert_eq!(buf.capacity(), PAGE_BYTES);
        assert_eq!(buf.as_slice().as_ptr() as usize % PAGE_BYTES, 0);
        buf.extend_from_slice(&[7u8; 5000]);
        assert_eq!(buf.len(), 5000);
        assert_eq!(buf.capacity() % PAGE_BYTES, 0);
        assert_eq!(buf.as_slice().as_ptr() as usize % PAGE_BYTES, 0);
        assert!(buf.as_slice().iter().all(|b| *b == 7));
        assert_eq!(buf.pad_to_page(), 8192);
        assert!(buf.as_slice()[5000..].iter().all(|b| *b == 0));
    }

    #[test]
    fn freeze_shares_without_copy() {
        let mut buf = AlignedBuf::with_capacity(PAGE_BYTES);
        buf.extend_from_slice(b"hello world");
        let start = buf.as_slice().as_ptr();
        let bytes = buf.freeze();
        assert_eq!(&bytes[..], b"hello world");
        assert_eq!(bytes.as_ptr(), start);
        let slice = bytes.slice(6..);
        assert_eq!(&slice[..], b"world");
    }
}
