//! Who waits for a partition to move on: produce acknowledgements waiting for the high watermark
//! to pass their batch (acks=all), fetch long-polls waiting for data past an offset, and
//! DeleteRecords waiting for the in-sync followers' log starts (the low watermark), and fetch
//! sessions listening for any change at all.
//!
//! Ownership: one per partition, owned by its shard; waiters hold only oneshot receivers, so a
//! canceled request (its receiver dropped) is pruned on the next wake-up. A [`ChangeSignal`] is
//! the one thing shared across shards: a fetch session (on its connection's shard) owns it, and
//! the partitions it listens to (on their shards) hold it weakly and mark their slot in it.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Poll, Waker};

use futures_channel::oneshot;

use super::{Isolation, PartitionError};

/// Acknowledgements and long-polls waiting on one partition.
#[derive(Default)]
pub(super) struct Progress {
    /// acks=all appends, by the offset the high watermark must reach; kept sorted.
    commits: VecDeque<(i64, oneshot::Sender<Result<(), PartitionError>>)>,
    /// Fetches waiting for data at or past an offset under an isolation.
    fetches: Vec<(i64, Isolation, oneshot::Sender<()>)>,
    /// DeleteRecords waiting for the low watermark to reach an offset.
    deletes: Vec<(i64, oneshot::Sender<Result<i64, PartitionError>>)>,
    /// Abandoned fetches are pruned when `fetches` reaches this length (an idle partition that
    /// consumers long-poll would otherwise collect one dead entry per poll).
    prune_fetches_at: usize,
    /// Fetch sessions listening to this partition, each with the slot it goes by there.
    listeners: Vec<(Weak<ChangeSignal>, u32)>,
}

/// Which of a fetch session's partitions changed since the session last read them: each
/// partition marks its slot whenever what a fetch of it answers may differ (the log end, the high
/// watermark, the log start or the leader epoch moved, the replica stopped leading, went offline
/// or away). The session reads only marked partitions (and those whose position the client
/// moved), and a long-poll waits for any mark instead of watching every partition.
#[derive(Debug, Default)]
pub struct ChangeSignal {
    state: Mutex<Marks>,
}

#[derive(Debug, Default)]
struct Marks {
    /// One bit per slot: marked and not taken yet.
    bits: Vec<u64>,
    /// The marked slots, in marking order, each once.
    marked: Vec<u32>,
    /// The task waiting for a mark.
    waiter: Option<Waker>,
}

impl ChangeSignal {
    /// A signal with nothing marked.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    fn marks(&self) -> std::sync::MutexGuard<'_, Marks> {
        // A panic while holding the lock leaves only bits behind: still usable.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Marks `slot` (from any thread) and wakes the waiter.
    pub fn mark(&self, slot: u32) {
        let waiter = {
            let mut marks = self.marks();
            let (word, bit) = ((slot / 64) as usize, 1u64 << (slot % 64));
            if marks.bits.len() <= word {
                marks.bits.resize(word + 1, 0);
            }
            if marks.bits[word] & bit != 0 {
                return;
            }
            marks.bits[word] |= bit;
            marks.marked.push(slot);
            marks.waiter.take()
        };
        if let Some(waker) = waiter {
            waker.wake();
        }
    }

    /// The slots marked since the last call, each once.
    pub fn take(&self) -> Vec<u32> {
        let mut marks = self.marks();
        let marked = std::mem::take(&mut marks.marked);
        for slot in &marked {
            marks.bits[(*slot / 64) as usize] &= !(1u64 << (*slot % 64));
        }
        marked
    }

    /// Completes once some slot is marked (at once when one already is).
    pub fn changed(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            let mut marks = self.marks();
            if marks.marked.is_empty() {
                marks.waiter = Some(cx.waker().clone());
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
    }
}

/// The smallest length at which abandoned fetch waiters are pruned.
const MIN_PRUNE_LENGTH: usize = 64;

impl Progress {
    /// Adds `signal` as a listener that goes by `slot` (once: listening again changes nothing).
    /// Listeners whose session is gone leave on the way, so an idle partition keeps only the
    /// live ones.
    pub fn listen(&mut self, signal: &Arc<ChangeSignal>, slot: u32) {
        let weak = Arc::downgrade(signal);
        if !self.listeners.iter().any(|(w, s)| *s == slot && Weak::ptr_eq(w, &weak)) {
            self.listeners.retain(|(w, _)| w.strong_count() > 0);
            self.listeners.push((weak, slot));
        }
    }

    /// Something a fetch answers may have changed: marks every listener (dropping the sessions
    /// that are gone).
    pub fn changed(&mut self) {
        self.listeners.retain(|(weak, slot)| match weak.upgrade() {
            Some(signal) => {
                signal.mark(*slot);
                true
            }
            None => false,
        });
    }

    /// A receiver completing once the high watermark reaches `end_offset` (or with the error
    /// that makes it never will).
    pub fn wait_for_commit(&mut self, end_offset: i64) -> oneshot::Receiver<Result<(), PartitionError>> {
        let (tx, rx) = oneshot::channel();
        let at = self.commits.partition_point(|(end, _)| *end <= end_offset);
        self.commits.insert(at, (end_offset, tx));
        rx
    }

    /// A receiver completing once data at `offset` is visible under `isolation`.
    pub fn wait_for_data(&mut self, offset: i64, isolation: Isolation) -> oneshot::Receiver<()> {
        if self.fetches.len() >= self.prune_fetches_at.max(MIN_PRUNE_LENGTH) {
            self.fetches.retain(|(_, _, tx)| !tx.is_canceled());
            self.prune_fetches_at = 2 * self.fetches.len();
        }
        let (tx, rx) = oneshot::channel();
        self.fetches.push((offset, isolation, tx));
        rx
    }

    /// The high watermark is now `high_watermark`: completes the commits it covers and wakes
    /// consumer fetches it made data visible for. `shortfall`, when the ISR has fewer members than `min.insync.replicas` now: the
    /// acknowledgements it reaches fail with it (committed, but by too few replicas: Kafka's
    /// NOT_ENOUGH_REPLICAS_AFTER_APPEND).
    pub fn high_watermark_moved(&mut self, high_watermark: i64, shortfall: Option<&PartitionError>) {
        while self.commits.front().is_some_and(|(end, _)| *end <= high_watermark) {
            let (_, tx) = self.commits.pop_front().expect("checked");
            let _ = tx.send(shortfall.map_or(Ok(()), |e| Err(e.clone())));
        }
        self.commits.retain(|(_, tx)| !tx.is_canceled());
        self.wake(high_watermark, |i| i != Isolation::LogEnd);
        self.changed();
    }

    /// A receiver completing with the low watermark once it reaches `offset` (or with the error
    /// that makes it never will).
    pub fn wait_for_low_watermark(&mut self, offset: i64) -> oneshot::Receiver<Result<i64, PartitionError>> {
        let (tx, rx) = oneshot::channel();
        self.deletes.push((offset, tx));
        rx
    }

    /// The low watermark is now `low_watermark`: completes the deletions it covers.
    pub fn low_watermark_moved(&mut self, low_watermark: i64) {
        if self.deletes.is_empty() {
            return;
        }
        for (_, tx) in self.deletes.extract_if(.., |(offset, tx)| tx.is_canceled() || *offset <= low_watermark) {
            let _ = tx.send(Ok(low_watermark));
        }
    }

    /// The log end is now `log_end_offset`: wakes replica fetches waiting below it.
    pub fn log_end_moved(&mut self, log_end_offset: i64) {
        self.wake(log_end_offset, |i| i == Isolation::LogEnd);
        self.changed();
    }

    fn wake(&mut self, visible_end: i64, applies: impl Fn(Isolation) -> bool) {
        // Dropping a sender wakes its receiver; abandoned ones are pruned on the way.
        let done = |offset: i64, isolation: Isolation| applies(isolation) && offset < visible_end;
        self.fetches.retain(|(offset, isolation, tx)| !tx.is_canceled() && !done(*offset, *isolation));
    }

    /// Fails every waiting acknowledgement and deletion with `error` (this replica no longer
    /// leads).
    pub fn fail_commits(&mut self, error: &PartitionError) {
        for (_, tx) in self.commits.drain(..) {
            let _ = tx.send(Err(error.clone()));
        }
        for (_, tx) in self.deletes.drain(..) {
            let _ = tx.send(Err(error.clone()));
        }
        self.changed();
    }

    /// Fails every waiting acknowledgement with `error` and wakes every fetch (the partition is
    /// going away or its log went offline).
    pub fn fail_all(&mut self, error: &PartitionError) {
        self.fail_commits(error);
        self.fetches.clear();
    }
}

impl Drop for Progress {
    /// The replica is gone: its listeners read it again (and hear it is not here).
    fn drop(&mut self) {
        self.changed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abandoned_fetch_waiters_do_not_pile_up_on_an_idle_partition() {
        let mut progress = Progress::default();
        for _ in 0..10_000 {
            drop(progress.wait_for_data(5, Isolation::HighWatermark));
        }
        assert!(progress.fetches.len() <= MIN_PRUNE_LENGTH, "{} waiters kept", progress.fetches.len());
        let live = progress.wait_for_data(5, Isolation::HighWatermark);
        progress.high_watermark_moved(6, None);
        assert!(progress.fetches.is_empty());
        drop(live);
    }

    #[test]
    fn a_change_signal_marks_each_listening_slot_once_until_taken_and_wakes_its_waiter() {
        let signal = ChangeSignal::new();
        let mut progress = Progress::default();
        progress.listen(&signal, 3);
        progress.listen(&signal, 3);
        progress.listen(&signal, 70);
        let mut other = Progress::default();
        other.listen(&signal, 5);
        assert!(signal.take().is_empty());
        let mut changed = Box::pin(signal.changed());
        let mut cx = std::task::Context::from_waker(Waker::noop());
        assert!(changed.as_mut().poll(&mut cx).is_pending(), "nothing marked yet");
        progress.log_end_moved(10);
        progress.high_watermark_moved(10, None);
        assert!(changed.as_mut().poll(&mut cx).is_ready());
        drop(changed);
        assert_eq!(signal.take(), vec![3, 70], "each slot once, listening twice changes nothing");
        assert!(signal.take().is_empty());
        drop(other);
        assert_eq!(signal.take(), vec![5], "a replica that goes away marks its listeners");
        let gone = Arc::downgrade(&signal);
        drop(signal);
        let mut idle = Progress::default();
        idle.listen(&ChangeSignal::new(), 1);
        let live = ChangeSignal::new();
        idle.listen(&live, 1);
        assert_eq!(idle.listeners.len(), 1, "a new listener makes the closed sessions' leave");
        progress.log_end_moved(11);
        assert!(progress.listeners.is_empty() && gone.upgrade().is_none(), "a closed session's listening ends");
    }
}
