//! Shard threads and their mailboxes.
//!
//! Every shard has two bounded mailboxes. The data lane takes work for the data path (produce,
//! fetch, offsets, group calls): each job starts as soon as the shard takes it, in the order jobs
//! were sent, and whatever it awaits runs concurrently with the next jobs. The control lane takes
//! metadata and administrative work (opening and deleting partitions, applying configs): its
//! jobs run one at a time, each to completion, and yield between jobs, so a burst of control work
//! takes at most one task's share of the shard and never queues in front of the data lane.
//! A full mailbox makes its sender wait (back-pressure).
//!
//! Ownership: a [`ShardSet`] is `Send + Sync` and cloned freely; it only holds the mailboxes'
//! senders. A job moves to its shard by value and runs on that shard's thread; what it captures
//! must be `Send`, what it creates there (its future, the services it touches) is not.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::thread::JoinHandle;

use futures_channel::oneshot;
use futures_util::FutureExt;

use crate::io::{self, LocalSignal};

/// A shard's index, 0..count.
pub type ShardId = usize;

/// Data-lane work: started at once on the target shard's thread.
type Job = Box<dyn FnOnce() + Send>;
/// Control-lane work: run to completion, one at a time.
type ControlJob = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()>>> + Send>;

/// The shard a job was sent to has stopped (or stops before answering).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("shard {0} has stopped")]
pub struct ShardGone(pub ShardId);

struct Mailboxes {
    data: Vec<flume::Sender<Job>>,
    control: Vec<flume::Sender<ControlJob>>,
}

/// Handles to every shard's mailboxes.
#[derive(Clone)]
pub struct ShardSet {
    mailboxes: Arc<Mailboxes>,
}

thread_local! {
    static CURRENT: Cell<Option<ShardId>> = const { Cell::new(None) };
    static STOP: RefCell<Option<std::rc::Rc<LocalSignal>>> = const { RefCell::new(None) };
}

/// A result that the target shard will send back.
pub struct Pending<R> {
    shard: ShardId,
    rx: oneshot::Receiver<R>,
}

impl<R> Pending<R> {
    /// Waits for the result.
    pub async fn wait(self) -> Result<R, ShardGone> {
        self.rx.await.map_err(|_| ShardGone(self.shard))
    }
}

impl ShardSet {
    /// Number of shards.
    pub fn count(&self) -> usize {
        self.mailboxes.data.len()
    }

    /// The shard whose thread is calling, if it is one.
    pub fn current() -> Option<ShardId> {
        CURRENT.with(Cell::get)
    }

    /// Sends `f` to `shard`'s data lane now (waiting while its mailbox is full) and returns a
    /// handle to its result. `f` starts when the shard takes the job, in the order jobs were
    /// sent to it, so an append made synchronously inside `f` keeps the caller's order even when
    /// the caller awaits the result later. On the calling shard itself `f` starts at once.
    pub async fn submit_on<F, Fut, R>(&self, shard: ShardId, f: F) -> Pending<R>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = R> + 'static,
        R: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job = move || {
            let future = f();
            io::spawn_detached(async move {
                let _ = tx.send(future.await);
            });
        };
        self.send_data(shard, Box::new(job)).await;
        Pending { shard, rx }
    }

    /// Like [`ShardSet::submit_on`], for work that only matters while someone waits for it (a
    /// long-poll): once the caller drops the returned handle, the work is dropped on its shard.
    pub async fn submit_cancellable_on<F, Fut, R>(&self, shard: ShardId, f: F) -> Pending<R>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = R> + 'static,
        R: Send + 'static,
    {
        let (mut tx, rx) = oneshot::channel();
        let job = move || {
            let future = f();
            io::spawn_detached(async move {
                let abandoned = tx.cancellation();
                futures_util::pin_mut!(future, abandoned);
                if let futures_util::future::Either::Left((result, _)) =
                    futures_util::future::select(future, abandoned).await
                {
                    let _ = tx.send(result);
                }
            });
        };
        self.send_data(shard, Box::new(job)).await;
        Pending { shard, rx }
    }

    /// Starts `job` on `shard`: at once when that is the calling shard, else through its data
    /// lane (waiting while the mailbox is full). A job for a stopped shard is dropped, which its
    /// caller sees as [`ShardGone`].
    async fn send_data(&self, shard: ShardId, job: Job) {
        if Self::current() == Some(shard) {
            job();
        } else {
            let _ = self.mailboxes.data[shard].send_async(job).await;
        }
    }

    /// Runs `f` on `shard`'s data lane and waits for its result.
    pub async fn invoke_on<F, Fut, R>(&self, shard: ShardId, f: F) -> Result<R, ShardGone>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = R> + 'static,
        R: Send + 'static,
    {
        self.submit_on(shard, f).await.wait().await
    }

    /// Runs `f` on `shard`'s control lane (after the control jobs before it, and before the ones
    /// after it) and waits for its result.
    pub async fn control_on<F, Fut, R>(&self, shard: ShardId, f: F) -> Result<R, ShardGone>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = R> + 'static,
        R: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: ControlJob = Box::new(move || {
            Box::pin(async move {
                let _ = tx.send(f().await);
            })
        });
        let _ = self.mailboxes.control[shard].send_async(job).await;
        rx.await.map_err(|_| ShardGone(shard))
    }

    /// [`ShardSet::control_on`] from a thread that is not a shard (the broker's main thread, the
    /// metrics server).
    pub fn control_on_blocking<F, Fut, R>(&self, shard: ShardId, f: F) -> Result<R, ShardGone>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = R> + 'static,
        R: Send + 'static,
    {
        io::block_on_thread(self.control_on(shard, f))
    }

    /// [`ShardSet::invoke_on`] from a thread that is not a shard.
    pub fn invoke_on_blocking<F, Fut, R>(&self, shard: ShardId, f: F) -> Result<R, ShardGone>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = R> + 'static,
        R: Send + 'static,
    {
        io::block_on_thread(self.invoke_on(shard, f))
    }
}

/// Ends the calling shard's loop once the job that called it is done (the last step of a
/// shutdown, after its services closed).
pub fn stop_current() {
    STOP.with(|stop| {
        if let Some(signal) = stop.borrow().as_ref() {
            signal.notify();
        }
    });
}

/// What every shard thread runs first, on its own thread: builds the shard's services. An error
/// stops the broker's start.
pub type ShardInit = Arc<dyn Fn(ShardId) -> Pin<Box<dyn Future<Output = Result<(), String>>>> + Send + Sync>;

/// The receiving ends of every shard's mailboxes, handed to the shard threads when they start.
pub struct ShardInboxes {
    data: Vec<flume::Receiver<Job>>,
    control: Vec<flume::Receiver<ControlJob>>,
}

/// How many shards to start and how big their mailboxes are.
#[derive(Clone, Copy, Debug)]
pub struct ShardLimits {
    /// Shards (one thread each).
    pub count: usize,
    /// Jobs a data lane holds before senders wait.
    pub data_capacity: usize,
    /// Jobs a control lane holds before senders wait.
    pub control_capacity: usize,
}

impl ShardSet {
    /// The mailboxes of `limits.count` shards (the threads start later, with
    /// [`ShardThreads::start`], so services can be wired to the set first).
    pub fn new(limits: ShardLimits) -> (Self, ShardInboxes) {
        let (data, data_rx): (Vec<_>, Vec<_>) =
            (0..limits.count.max(1)).map(|_| flume::bounded::<Job>(limits.data_capacity.max(1))).unzip();
        let (control, control_rx): (Vec<_>, Vec<_>) =
            (0..limits.count.max(1)).map(|_| flume::bounded::<ControlJob>(limits.control_capacity.max(1))).unzip();
        (Self { mailboxes: Arc::new(Mailboxes { data, control }) }, ShardInboxes { data: data_rx, control: control_rx })
    }
}

/// The running shard threads.
pub struct ShardThreads {
    set: ShardSet,
    threads: Vec<JoinHandle<()>>,
}

/// Stack of a shard thread. Every task of the shard is polled on it, nested as deep as its
/// futures go (a debug build copies large futures through its frames: the control plane's
/// shutdown came within a few KiB of the 2 MiB default). Only what is touched is committed.
const SHARD_STACK_BYTES: usize = 8 << 20;

impl ShardThreads {
    /// Starts one pinned thread per shard of `set` (shard `i` on core `i` mod cores), runs
    /// `init` on each, and returns once every one of them finished it.
    pub fn start(set: &ShardSet, inboxes: ShardInboxes, init: ShardInit) -> Result<Self, String> {
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let mut threads = Vec::new();
        for (id, (data, control)) in inboxes.data.into_iter().zip(inboxes.control).enumerate() {
            let core = (!cores.is_empty()).then(|| cores[id % cores.len()]);
            let (init, ready) = (init.clone(), ready_tx.clone());
            let thread = std::thread::Builder::new()
                .name(format!("moldau-shard-{id}"))
                .stack_size(SHARD_STACK_BYTES)
                .spawn(move || run_thread(id, core, init, data, control, ready))
                .map_err(|e| format!("cannot spawn shard thread: {e}"))?;
            threads.push(thread);
        }
        // Only the shards hold senders now: one that dies before reporting (a panic in its
        // init) ends the wait below instead of leaving it blocked for ever.
        drop(ready_tx);
        let running = Self { set: set.clone(), threads };
        for _ in 0..set.count() {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(reason)) => {
                    running.stop_all();
                    return Err(reason);
                }
                Err(_) => {
                    running.stop_all();
                    return Err("a shard thread ended while starting".into());
                }
            }
        }
        Ok(running)
    }

    /// Ends every shard loop at once and joins the threads (a failed start; a clean stop first
    /// closes the shards' services).
    pub fn stop_all(self) {
        for shard in 0..self.set.count() {
            let _ = self.set.control_on_blocking(shard, || async { stop_current() });
        }
        self.join();
    }

    /// Waits for every shard thread to end (after each ran [`stop_current`]).
    pub fn join(self) {
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

fn run_thread(
    id: ShardId,
    core: Option<core_affinity::CoreId>,
    init: ShardInit,
    data: flume::Receiver<Job>,
    control: flume::Receiver<ControlJob>,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
) {
    if let Some(core) = core {
        core_affinity::set_for_current(core);
    }
    CURRENT.with(|c| c.set(Some(id)));
    let runtime = match io::new_runtime() {
        Ok(runtime) => runtime,
        Err(err) => {
            let _ = ready.send(Err(format!("shard {id}: cannot start io_uring runtime: {err}")));
            return;
        }
    };
    runtime.block_on(async move {
        let stop = std::rc::Rc::new(LocalSignal::new());
        STOP.with(|s| *s.borrow_mut() = Some(stop.clone()));
        // The control lane runs before init finishes, so a failed init can still be stopped.
        let lane = io::spawn(control_lane(control));
        let started = init(id).await;
        let failed = started.is_err();
        // Reported once, and the sender let go (see `ShardThreads::start`).
        let _ = ready.send(started.map_err(|e| format!("shard {id}: {e}")));
        drop(ready);
        if !failed {
            data_lane(data, &stop).await;
        } else {
            stop.notified().await;
        }
        drop(lane);
    });
}

async fn data_lane(data: flume::Receiver<Job>, stop: &LocalSignal) {
    loop {
        let job = futures_util::select_biased! {
            _ = stop.notified().fuse() => return,
            job = data.recv_async().fuse() => job,
        };
        match job {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

async fn control_lane(control: flume::Receiver<ControlJob>) {
    while let Ok(job) = control.recv_async().await {
        job().await;
        io::yield_now().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_that_panics_while_starting_fails_the_start_instead_of_hanging_it() {
        let limits = ShardLimits { count: 2, data_capacity: 16, control_capacity: 16 };
        let (set, inboxes) = ShardSet::new(limits);
        let init: ShardInit = Arc::new(|id| {
            Box::pin(async move {
                if id == 1 {
                    panic!("shard 1 fails to start");
                }
                Ok(())
            })
        });
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(ShardThreads::start(&set, inboxes, init).map(|_| ()));
        });
        let outcome = rx.recv_timeout(std::time::Duration::from_secs(30)).expect("the start returns");
        assert!(outcome.is_err(), "{outcome:?}");
    }
}
