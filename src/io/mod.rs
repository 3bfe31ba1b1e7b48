//! The thin I/O layer: the only module that names the io_uring runtime (compio).
//!
//! Everything above it (storage, shards, the Kafka server) uses these types and functions, so the
//! runtime can be replaced, or a simulated disk and clock slipped in for tests, in one place.

mod aligned;
pub mod budget;
mod fault;
mod file;
pub mod fs;
pub mod http;
pub mod net;
mod rate;
mod signal;

use std::future::Future;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

pub use aligned::{AlignedBuf, PAGE_BYTES, round_down_to_page, round_up_to_page};
pub use fault::{FaultOp, Faults};
pub use file::{DirectFile, OpenMode};
pub use rate::RateLimit;
pub use signal::{LocalSignal, Notified};

/// A handle to a task running on the current shard; dropping it cancels the task, so
/// fire-and-forget tasks call [`Task::detach`].
pub type Task<T> = compio::runtime::JoinHandle<T>;

/// Spawns `future` on the current shard's executor.
pub fn spawn<F: Future + 'static>(future: F) -> Task<F::Output> {
    compio::runtime::spawn(future)
}

/// Spawns `future` on the current shard and lets it run to completion on its own.
pub fn spawn_detached<F: Future + 'static>(future: F) {
    compio::runtime::spawn(future).detach();
}

/// Runs a blocking closure on the runtime's helper threads (for syscalls io_uring cannot do).
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> std::io::Result<T> {
    compio::runtime::spawn_blocking(f).await.map_err(|_| std::io::Error::other("blocking task failed"))
}

/// Lets every other ready task on this shard run once before the caller continues.
pub async fn yield_now() {
    struct YieldNow(bool);
    impl Future for YieldNow {
        type Output = ();
        fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
            if self.0 {
                return std::task::Poll::Ready(());
            }
            self.0 = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    }
    YieldNow(false).await
}

/// Suspends the current task for `duration`.
pub async fn sleep(duration: Duration) {
    compio::time::sleep(duration).await
}

/// Runs `future` with a deadline; `None` when the deadline passed first.
pub async fn timeout<F: Future>(duration: Duration, future: F) -> Option<F::Output> {
    compio::time::timeout(duration, future).await.ok()
}

/// Builds a single-threaded io_uring executor for the calling thread.
pub fn new_runtime() -> std::io::Result<compio::runtime::Runtime> {
    compio::runtime::RuntimeBuilder::new().build()
}

/// Runs `future` to completion on a fresh executor on the calling thread (tests, tools, and
/// each shard's thread).
pub fn block_on<F: Future>(future: F) -> F::Output {
    let runtime = new_runtime().expect("io_uring runtime");
    runtime.block_on(future)
}

/// True when the current thread's executor drives io_uring (not a readiness fallback).
pub fn runtime_uses_io_uring() -> bool {
    compio::runtime::Runtime::try_with_current(|rt| matches!(rt.driver_type(), compio_driver::DriverType::IoUring))
        .unwrap_or(false)
}

/// The io_uring descriptor of the current thread's executor (for diagnostics and tests that read
/// `/proc/self/fdinfo`).
pub fn runtime_ring_fd() -> Option<i32> {
    use std::os::fd::AsRawFd;
    compio::runtime::Runtime::try_with_current(|rt| rt.as_raw_fd()).ok()
}

/// Current wall-clock time in milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Runs a future to completion on the calling (non-shard) thread, parking between polls. For
/// the broker's main thread and helper threads that wait on shard replies.
pub fn block_on_thread<F: Future>(future: F) -> F::Output {
    struct ThreadWaker(std::thread::Thread);
    impl std::task::Wake for ThreadWaker {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(std::sync::Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        std::thread::park();
    }
}

/// Raises this process's soft limit of open files to its hard limit (a broker holds a socket
/// per connection and several files per partition) and returns the soft limit now in force.
pub fn raise_open_files_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
        limit.rlim_cur
    }
}

/// A warning said at most once per [`Throttled::INTERVAL`].
#[derive(Default)]
pub struct Throttled {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttled {
    /// How often it may be said.
    pub const INTERVAL: Duration = Duration::from_secs(10);

    /// `Some(occurrences held back since the last one)` when it is time to say it again.
    pub fn due(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.last.is_some_and(|at| now.duration_since(at) < Self::INTERVAL) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}
