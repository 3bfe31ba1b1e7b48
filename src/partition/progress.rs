//! Who waits for a partition to move on: produce acknowledgements waiting for the high watermark
//! to pass their batch (acks=all), fetch long-polls waiting for data past an offset, and
//! DeleteRecords waiting for the in-sync followers' log starts (the low watermark).
//!
//! Ownership: one per partition, owned by its shard; waiters hold only oneshot receivers, so a
//! canceled request (its receiver dropped) is pruned on the next wake-up.

use std::collections::VecDeque;

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
}

/// The smallest length at which abandoned fetch waiters are pruned.
const MIN_PRUNE_LENGTH: usize = 64;

impl Progress {
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
    }

    /// Fails every waiting acknowledgement with `error` and wakes every fetch (the partition is
    /// going away or its log went offline).
    pub fn fail_all(&mut self, error: &PartitionError) {
        self.fail_commits(error);
        self.fetches.clear();
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
}
