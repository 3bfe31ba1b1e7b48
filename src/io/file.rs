//! Files opened with `O_DIRECT`, driven through io_uring by the compio runtime.
//!
//! Ownership: a [`DirectFile`] belongs to the shard that opened it and never leaves that shard's
//! thread (the compio file handle is tied to the shard's ring). Segments keep it behind an `Rc`
//! so a read in flight keeps the descriptor open even after retention unlinked the file.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};

use compio::BufResult;
use compio::buf::{IntoInner, IoBufMut};
use compio::fs::{File, OpenOptions};
use compio::io::AsyncReadAt;
use compio_driver::{OpCode, OpEntry};

use super::aligned::{AlignedBuf, PAGE_BYTES};
use super::fault::{FaultOp, Faults};

/// How to open a segment file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// Create the file if it does not exist.
    CreateOrOpen,
    /// The file must exist.
    Existing,
}

/// A file for page-aligned I/O that bypasses the page cache.
pub struct DirectFile {
    file: File,
    path: PathBuf,
    direct: bool,
    faults: Faults,
}

impl std::fmt::Debug for DirectFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectFile").field("path", &self.path).field("direct", &self.direct).finish()
    }
}

impl DirectFile {
    /// Opens `path` read-write with `O_DIRECT`. Where the filesystem refuses `O_DIRECT` (tmpfs),
    /// it falls back to buffered I/O and says so in the log once per file: the durability policy
    /// still holds because every acknowledgement under `flush = always` waits for fdatasync.
    pub async fn open(path: &Path, mode: OpenMode, faults: Faults) -> io::Result<Self> {
        match Self::open_with(path, mode, libc::O_DIRECT).await {
            Ok(file) => Ok(Self { file, path: path.to_owned(), direct: true, faults }),
            Err(err) if err.raw_os_error() == Some(libc::EINVAL) => {
                tracing::warn!(path = %path.display(), "O_DIRECT refused by the filesystem; using buffered I/O");
                let file = Self::open_with(path, mode, 0).await?;
                Ok(Self { file, path: path.to_owned(), direct: false, faults })
            }
            Err(err) => Err(err),
        }
    }

    async fn open_with(path: &Path, mode: OpenMode, flags: i32) -> io::Result<File> {
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(mode == OpenMode::CreateOrOpen).custom_flags(flags | libc::O_CLOEXEC);
        options.open(path).await
    }

    /// The path the file was opened at.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True when the file really bypasses the page cache.
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// The raw descriptor (for diagnostics and tests that read `/proc/self/fdinfo`).
    pub fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Where the first hole at or after `from` begins (`SEEK_HOLE`; ext4 counts unwritten
    /// extents as holes), or the file's length when there is none. A lookup in the file's extent
    /// map: no I/O on the data.
    pub fn first_hole(&self, from: u64) -> io::Result<u64> {
        let offset = libc::off_t::try_from(from).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: lseek on a descriptor this file owns; it reads no memory of ours.
        let at = unsafe { libc::lseek(self.file.as_raw_fd(), offset, libc::SEEK_HOLE) };
        if at < 0 { Err(io::Error::last_os_error()) } else { Ok(at as u64) }
    }

    /// Writes all of `buf` at `position`. Both must be page aligned (the caller pads the tail).
    /// The buffer comes back whatever the outcome so it can be reused.
    pub async fn write_all_at(&self, buf: AlignedBuf, position: u64) -> (io::Result<()>, AlignedBuf) {
        if let Err(err) = self.faults.check(FaultOp::Write) {
            return (Err(err), buf);
        }
        self.write_with_flags(buf, position, 0).await
    }

    /// [`write_all_at`](Self::write_all_at), durable on return (`RWF_DSYNC`: what the write
    /// covers is as stable as after an fdatasync, in one operation instead of two). Fails like
    /// a write or like an fdatasync.
    pub async fn write_all_at_durable(&self, buf: AlignedBuf, position: u64) -> (io::Result<()>, AlignedBuf) {
        if let Err(err) = self.faults.check(FaultOp::Write) {
            return (Err(err), buf);
        }
        if let Err(err) = self.sync_faults().await {
            return (Err(err), buf);
        }
        self.write_with_flags(buf, position, libc::RWF_DSYNC).await
    }

    async fn write_with_flags(&self, buf: AlignedBuf, position: u64, flags: i32) -> (io::Result<()>, AlignedBuf) {
        debug_assert_eq!(position % PAGE_BYTES as u64, 0);
        debug_assert_eq!(buf.len() % PAGE_BYTES, 0);
        let mut op = Write { fd: self.raw_fd(), buf, from: 0, position, flags };
        while op.from < op.buf.len() {
            // A short write leaves the remaining range page aligned only if the kernel stopped on
            // a page boundary; O_DIRECT writes are all-or-nothing per block in practice, and a
            // misaligned remainder is reported as an error rather than silently rewritten.
            if !op.from.is_multiple_of(PAGE_BYTES) {
                return (Err(io::Error::other("short O_DIRECT write off a page boundary")), op.buf);
            }
            let BufResult(result, returned) = compio::runtime::submit(op).await;
            op = returned;
            match result {
                Ok(0) => return (Err(io::Error::from(io::ErrorKind::WriteZero)), op.buf),
                Ok(n) => op.from += n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return (Err(err), op.buf),
            }
        }
        (Ok(()), op.buf)
    }

    /// Reads into `buf` (which must be empty) from `position` until the buffer's capacity is
    /// full or the end of the file; returns the bytes read (also `buf.len()`).
    pub async fn read_at(&self, buf: AlignedBuf, position: u64) -> (io::Result<usize>, AlignedBuf) {
        debug_assert!(buf.is_empty());
        debug_assert_eq!(position % PAGE_BYTES as u64, 0);
        if let Err(err) = self.faults.check(FaultOp::Read) {
            return (Err(err), buf);
        }
        let mut buf = buf;
        loop {
            let already = buf.len();
            if already == buf.capacity() {
                return (Ok(already), buf);
            }
            // `read_at` fills a buffer from its start; `uninit()` aims it past what is there.
            let BufResult(result, returned) = self.file.read_at(buf.uninit(), position + already as u64).await;
            buf = returned.into_inner();
            match result {
                Ok(0) => return (Ok(buf.len()), buf),
                Ok(_) if !buf.len().is_multiple_of(PAGE_BYTES) => return (Ok(buf.len()), buf),
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return (Err(err), buf),
            }
        }
    }

    /// fdatasync: returns once the device reports the written data stable.
    pub async fn sync_data(&self) -> io::Result<()> {
        self.sync_faults().await?;
        self.file.sync_data().await
    }

    /// The injected faults of a sync (a failure, a stall), for fdatasync and durable writes alike.
    async fn sync_faults(&self) -> io::Result<()> {
        self.faults.check(FaultOp::Sync)?;
        if let Some(delay) = self.faults.sync_delay() {
            compio::time::sleep(delay).await;
        }
        Ok(())
    }

    /// Reserves `length` bytes from `offset` (fallocate mode 0: the file size grows to cover it),
    /// so later appends need no block allocation.
    pub async fn allocate(&self, offset: u64, length: u64) -> io::Result<()> {
        self.faults.check(FaultOp::Allocate)?;
        self.fallocate(0, offset, length).await
    }

    /// Makes `[offset, offset + length)` read back as zeros (used when a log is truncated, so
    /// stale batches past the new end can never be mistaken for data at recovery).
    pub async fn zero_range(&self, offset: u64, length: u64) -> io::Result<()> {
        if length == 0 {
            return Ok(());
        }
        match self.fallocate(libc::FALLOC_FL_ZERO_RANGE, offset, length).await {
            Err(err) if err.raw_os_error() == Some(libc::EOPNOTSUPP) => self.write_zeros(offset, length).await,
            other => other,
        }
    }

    async fn write_zeros(&self, offset: u64, length: u64) -> io::Result<()> {
        // Only reached on filesystems without FALLOC_FL_ZERO_RANGE; page aligned by callers.
        const CHUNK_BYTES: usize = 1 << 20;
        let mut position = offset;
        let end = offset + length;
        let mut zeros = AlignedBuf::with_capacity(CHUNK_BYTES);
        while position < end {
            let n = (end - position).min(CHUNK_BYTES as u64) as usize;
            zeros.clear();
            zeros.extend_from_slice(&vec![0u8; n]);
            zeros.pad_to_page();
            let (result, returned) = self.write_all_at(zeros, position).await;
            zeros = returned;
            result?;
            position += n as u64;
        }
        Ok(())
    }

    async fn fallocate(&self, mode: i32, offset: u64, length: u64) -> io::Result<()> {
        let op = Fallocate { fd: self.raw_fd(), mode, offset, length };
        let BufResult(result, _) = compio::runtime::submit(op).await;
        result.map(|_| ())
    }

    /// Sets the file length (used when a segment is sealed, to drop its preallocated tail).
    pub async fn set_len(&self, length: u64) -> io::Result<()> {
        self.file.set_len(length).await
    }

    /// The file's current length in bytes.
    pub async fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata().await?.len())
    }
}

/// io_uring `IORING_OP_WRITE` of `buf[from..]` at `position + from`, with `pwritev2` flags
/// (compio's own write takes none).
struct Write {
    fd: RawFd,
    buf: AlignedBuf,
    from: usize,
    position: u64,
    flags: i32,
}

// SAFETY: the entry points into `buf`, which the operation owns until it completes (compio
// keeps the operation alive while the kernel may use it); the descriptor is kept open by the
// `DirectFile` that awaits the operation.
unsafe impl OpCode for Write {
    type Control = ();

    fn create_entry(&mut self, _: &mut Self::Control) -> OpEntry {
        let rest = &self.buf.as_slice()[self.from..];
        io_uring::opcode::Write::new(io_uring::types::Fd(self.fd), rest.as_ptr(), rest.len() as u32)
            .offset(self.position + self.from as u64)
            .rw_flags(self.flags)
            .build()
            .into()
    }

    fn call_blocking(&mut self, _: &mut Self::Control) -> io::Result<usize> {
        let rest = &self.buf.as_slice()[self.from..];
        let iov = libc::iovec { iov_base: rest.as_ptr() as *mut libc::c_void, iov_len: rest.len() };
        let offset = (self.position + self.from as u64) as libc::off_t;
        // SAFETY: one iovec over memory we own, on a descriptor we own.
        let n = unsafe { libc::pwritev2(self.fd, &iov, 1, offset, self.flags) };
        if n >= 0 { Ok(n as usize) } else { Err(io::Error::last_os_error()) }
    }
}

/// io_uring `IORING_OP_FALLOCATE` (compio has no fallocate of its own).
struct Fallocate {
    fd: RawFd,
    mode: i32,
    offset: u64,
    length: u64,
}

// SAFETY: the entry refers only to plain integers; the descriptor is kept open by the
// `DirectFile` that awaits the operation.
unsafe impl OpCode for Fallocate {
    type Control = ();

    fn create_entry(&mut self, _: &mut Self::Control) -> OpEntry {
        io_uring::opcode::Fallocate::new(io_uring::types::Fd(self.fd), self.length)
            .offset(self.offset)
            .mode(self.mode)
            .build()
            .into()
    }

    fn call_blocking(&mut self, _: &mut Self::Control) -> io::Result<usize> {
        // SAFETY: plain syscall on a descriptor we own.
        let rc = unsafe { libc::fallocate(self.fd, self.mode, self.offset as libc::off_t, self.length as libc::off_t) };
        if rc == 0 { Ok(0) } else { Err(io::Error::last_os_error()) }
    }
}
