//! Failure injection for the io layer (in the spirit of Redpanda's `finjector`).
//!
//! Ownership: a [`Faults`] handle is an `Arc` shared read-mostly between the test that arms it and
//! the files that consult it; every field is an atomic, so arming a fault from the test thread
//! while a shard performs I/O needs no lock. A production broker uses [`Faults::none`], whose
//! checks cost one relaxed atomic load per operation.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// Which operation a fault applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultOp {
    /// A data write.
    Write,
    /// An fdatasync.
    Sync,
    /// A preallocation (fallocate).
    Allocate,
    /// A data read.
    Read,
    /// Any operation on a side file or directory through `io::fs` (metadata log, snapshots,
    /// checkpoints, markers, indexes).
    SideFile,
}

/// Number of [`FaultOp`] kinds.
const OPS: usize = 5;

#[derive(Default)]
struct FaultState {
    /// errno for the next operation of each kind, 0 when not armed.
    next_errno: [AtomicI32; OPS],
    /// errno for every operation of the kind from now on, 0 when not armed.
    sticky_errno: [AtomicI32; OPS],
    /// Operations of each kind performed so far (for assertions in tests).
    performed: [AtomicU64; OPS],
    /// Extra delay added to every fdatasync, in milliseconds.
    sync_delay_ms: AtomicU32,
    /// Operations of each kind still to succeed before every later one fails (0: not armed).
    countdown: [AtomicU64; OPS],
    /// errno for the failures after a countdown.
    countdown_errno: [AtomicI32; OPS],
}

/// A handle through which tests make disk operations fail or stall.
#[derive(Clone, Default)]
pub struct Faults {
    state: Arc<FaultState>,
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Faults")
    }
}

fn slot(op: FaultOp) -> usize {
    match op {
        FaultOp::Write => 0,
        FaultOp::Sync => 1,
        FaultOp::Allocate => 2,
        FaultOp::Read => 3,
        FaultOp::SideFile => 4,
    }
}

impl Faults {
    /// A handle with nothing armed.
    pub fn none() -> Self {
        Self::default()
    }

    /// The next operation of kind `op` fails with `errno` (once).
    pub fn fail_next(&self, op: FaultOp, errno: i32) {
        self.state.next_errno[slot(op)].store(errno, Ordering::SeqCst);
    }

    /// Every operation of kind `op` fails with `errno` until [`Faults::heal`].
    pub fn fail_always(&self, op: FaultOp, errno: i32) {
        self.state.sticky_errno[slot(op)].store(errno, Ordering::SeqCst);
    }

    /// The next `successes` operations of kind `op` succeed, and every one after them fails with
    /// `errno` until [`Faults::heal`] (a process dying at a chosen point, for crash tests).
    pub fn fail_after(&self, op: FaultOp, successes: u64, errno: i32) {
        self.state.countdown_errno[slot(op)].store(errno, Ordering::SeqCst);
        self.state.countdown[slot(op)].store(successes + 1, Ordering::SeqCst);
    }

    /// Disarms every fault.
    pub fn heal(&self) {
        for i in 0..OPS {
            self.state.countdown[i].store(0, Ordering::SeqCst);
            self.state.next_errno[i].store(0, Ordering::SeqCst);
            self.state.sticky_errno[i].store(0, Ordering::SeqCst);
        }
        self.state.sync_delay_ms.store(0, Ordering::SeqCst);
    }

    /// Adds `delay` to every fdatasync (a stalled device).
    pub fn stall_syncs(&self, delay: Duration) {
        let ms = u32::try_from(delay.as_millis()).unwrap_or(u32::MAX);
        self.state.sync_delay_ms.store(ms, Ordering::SeqCst);
    }

    /// How many operations of kind `op` were attempted through files using this handle.
    pub fn performed(&self, op: FaultOp) -> u64 {
        self.state.performed[slot(op)].load(Ordering::Relaxed)
    }

    /// Called by the io layer before an operation: counts it and returns the injected error.
    pub(crate) fn check(&self, op: FaultOp) -> io::Result<()> {
        let i = slot(op);
        self.state.performed[i].fetch_add(1, Ordering::Relaxed);
        let sticky = self.state.sticky_errno[i].load(Ordering::Relaxed);
        if sticky != 0 {
            return Err(io::Error::from_raw_os_error(sticky));
        }
        if self.state.countdown[i].load(Ordering::Relaxed) != 0 {
            let left = self.state.countdown[i].fetch_sub(1, Ordering::SeqCst);
            if left == 1 {
                let errno = self.state.countdown_errno[i].load(Ordering::SeqCst);
                self.state.sticky_errno[i].store(errno, Ordering::SeqCst);
                return Err(io::Error::from_raw_os_error(errno));
            }
        }
        if self.state.next_errno[i].load(Ordering::Relaxed) != 0 {
            let errno = self.state.next_errno[i].swap(0, Ordering::SeqCst);
            if errno != 0 {
                return Err(io::Error::from_raw_os_error(errno));
            }
        }
        Ok(())
    }

    /// The injected extra fdatasync delay.
    pub(crate) fn sync_delay(&self) -> Option<Duration> {
        match self.state.sync_delay_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(u64::from(ms))),
        }
    }
}
