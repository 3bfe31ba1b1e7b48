//! A partition replica: its log and the state Kafka keeps beside it.
//!
//! On the leader the high watermark is the smallest log end over the in-sync replicas
//! ([`ReplicaSet`]): each follower's is where it last fetched from; the leader's own is what it
//! can stand behind: its durable offset under `flush = always` (or once its log failed), its log
//! end otherwise. A follower learns the high watermark from its leader's fetch responses (never
//! past its own log end). The high watermark never moves back except when the log is cut.
//!
//! Ownership: a `Partition` lives in exactly one shard's [`super::PartitionManager`] for its whole
//! life and is `!Send`; work for it from other shards runs on its shard.

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::{Rc, Weak};
use std::sync::Arc;

use bytes::BytesMut;
use futures_channel::oneshot;
use uuid::Uuid;

use super::epochs::LeaderEpochCache;
use super::isr::{Assignment, ReplicaSet};
use super::producers::{self, ProducerTable, SequenceCheck};
use super::progress::Progress;
use super::{Acks, Appended, Isolation, ListedOffset, PartitionConfig, PartitionError, PartitionStatus, ReadOutcome};
use crate::io::{self, Faults, now_ms};
use crate::model::{BatchHeader, BatchSpan, BrokerId, TopicPartition};
use crate::storage::{Durable, FlushPolicy, Log, LogContext};

/// Save the producer table after this many appended bytes...
const PRODUCER_SNAPSHOT_BYTES: u64 = 64 << 20;
/// ...or this long after the last save, whichever comes first.
const PRODUCER_SNAPSHOT_INTERVAL_MS: i64 = 30_000;
/// Bytes read per step when a table or cache is rebuilt from the log.
const REBUILD_READ_BYTES: usize = 1 << 20;

/// File in each partition directory naming the topic id it belongs to.
const PARTITION_METADATA_FILE: &str = "partition.metadata";

/// Directory of a partition's log.
pub fn partition_dir(data_dir: &Path, topic: &str, index: i32) -> PathBuf {
    data_dir.join(format!("{topic}-{index}"))
}

/// Leadership and the high watermark.
struct ReplicaState {
    high_watermark: i64,
    /// The replicas, the ISR, and (on the leader) the followers' progress.
    replicas: ReplicaSet,
}

impl ReplicaState {
    /// The leader epoch the metadata gives this replica.
    fn leader_epoch(&self) -> i32 {
        self.replicas.assignment().leader_epoch
    }
}

/// A partition hosted by this shard.
pub struct Partition {
    /// Topic name.
    pub topic: String,
    /// Topic id.
    pub topic_id: Uuid,
    /// Partition index.
    pub index: i32,
    log: Log,
    faults: Faults,
    config: RefCell<Arc<PartitionConfig>>,
    state: RefCell<ReplicaState>,
    producers: RefCell<ProducerTable>,
    epochs: RefCell<LeaderEpochCache>,
    progress: RefCell<Progress>,
    bytes_since_snapshot: Cell<u64>,
    last_snapshot_ms: Cell<i64>,
}

/// Shared handle to a partition within its shard.
pub type PartitionRef = Rc<Partition>;

impl std::fmt::Debug for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Partition({}-{})", self.topic, self.index)
    }
}

/// An append that was accepted: its offsets now, its acknowledgement later.
pub struct Replicated {
    /// The answer for the producer.
    pub appended: Appended,
    /// Resolves when the append may be acknowledged.
    pub committed: Committed,
}

/// Waits until an append may be acknowledged under its `acks`.
pub struct Committed {
    log: Log,
    wait: CommitWait,
}

enum CommitWait {
    Ready,
    Failed(PartitionError),
    Durable(Durable),
    HighWatermark(oneshot::Receiver<Result<(), PartitionError>>),
}

impl Committed {
    /// Waits for room in the log's write-behind (producers cannot outrun the disk forever), then
    /// for the acknowledgement condition.
    pub async fn wait(self) -> Result<(), PartitionError> {
        self.log.wait_for_write_room().await;
        match self.wait {
            CommitWait::Ready => Ok(()),
            CommitWait::Failed(err) => Err(err),
            CommitWait::Durable(durable) => Ok(durable.wait().await?),
            CommitWait::HighWatermark(rx) => rx.await.unwrap_or(Err(PartitionError::NotLeaderOrFollower)),
        }
    }
}

/// Where a partition is opened and with what.
pub struct PartitionOpenArgs<'a> {
    /// The broker's data directory.
    pub data_dir: &'a Path,
    /// Topic name.
    pub topic: &'a str,
    /// Topic id.
    pub topic_id: Uuid,
    /// Partition index.
    pub index: i32,
    /// Its replicas, leader and epochs as the metadata has them.
    pub assignment: Assignment,
    /// This broker.
    pub broker_id: BrokerId,
    /// Settings.
    pub config: Arc<PartitionConfig>,
}

impl Partition {
    /// Opens (recovering) or creates the partition. A directory left by an earlier topic of the
    /// same name (another topic id) is set aside first, so deleted data never reappears.
    pub async fn open(args: PartitionOpenArgs<'_>, ctx: &LogContext) -> Result<PartitionRef, PartitionError> {
        let dir = partition_dir(args.data_dir, args.topic, args.index);
        let faults = &ctx.faults;
        claim_dir(&dir, args.topic_id, faults).await?;
        let log = Log::open(&dir, args.config.log.clone(), ctx).await?;
        let producers = rebuild_producers(&log, faults).await?;
        let mut epochs = load_epochs(&log, faults).await?;
        let leader_epoch = args.assignment.leader_epoch;
        let leads = args.assignment.leader == args.broker_id;
        // A leader's epoch starts at its log end (a follower learns epochs from the batches it
        // copies). An empty log needs no checkpoint yet: rebuilding it from the log's batches is
        // as good (and saving it would cost every new partition two more syncs).
        if leads && epochs.assign(leader_epoch, log.log_end_offset()) && log.log_end_offset() > log.log_start_offset() {
            epochs.save(faults).await.map_err(|e| PartitionError::Storage(e.to_string()))?;
        }
        // What a replica may call committed after a restart: on a single replica what is on its
        // disk; with others, what the leader says (a follower's own durable end may hold a tail
        // the leader never committed).
        let alone = args.assignment.replicas.len() <= 1;
        let high_watermark = if alone { log.durable_offset() } else { log.log_start_offset() };
        let partition = Rc::new(Self {
            topic: args.topic.to_owned(),
            topic_id: args.topic_id,
            index: args.index,
            log,
            faults: faults.clone(),
            config: RefCell::new(args.config),
            state: RefCell::new(ReplicaState {
                high_watermark,
                replicas: ReplicaSet::new(args.broker_id, args.assignment, now_ms()),
            }),
            producers: RefCell::new(producers),
            epochs: RefCell::new(epochs),
            progress: RefCell::new(Progress::default()),
            bytes_since_snapshot: Cell::new(0),
            last_snapshot_ms: Cell::new(now_ms()),
        });
        let weak: Weak<Partition> = Rc::downgrade(&partition);
        partition.log.set_progress_listener(Rc::new(move || {
            if let Some(partition) = weak.upgrade() {
                partition.log_progressed();
            }
        }));
        // A leader whose ISR is itself may serve what is durable at once.
        partition.advance_high_watermark();
        Ok(partition)
    }

    /// The partition key.
    pub fn key(&self) -> TopicPartition {
        (self.topic_id, self.index)
    }

    /// True once its log failed a write or fdatasync: it takes nothing more, until it is
    /// reopened from disk ([`super::PartitionManager::close_offline`]).
    pub fn is_offline(&self) -> bool {
        self.log.is_offline()
    }

    /// The current leader epoch.
    pub fn leader_epoch(&self) -> i32 {
        self.state.borrow().leader_epoch()
    }

    /// Offsets below this are visible to consumers.
    pub fn high_watermark(&self) -> i64 {
        self.state.borrow().high_watermark
    }

    /// The last stable offset (no transactions yet: the high watermark).
    pub fn last_stable_offset(&self) -> i64 {
        self.high_watermark()
    }

    /// The partition's settings.
    pub fn config(&self) -> Arc<PartitionConfig> {
        self.config.borrow().clone()
    }

    /// Applies new settings (a topic config change); later appends, rolls and retention passes
    /// use them.
    pub fn set_config(&self, config: Arc<PartitionConfig>) {
        if *self.config.borrow() != config {
            self.log.set_config(config.log.clone());
            *self.config.borrow_mut() = config;
        }
    }

    /// Takes the partition's assignment from new metadata: a new leader epoch (later batches
    /// carry it, and on the leader the epoch cache records where it starts), the replicas and the
    /// ISR. A replica that stops leading fails the acknowledgements still waiting (the new leader
    /// decides what is committed). An older leader epoch changes nothing.
    pub async fn assign(&self, assignment: Assignment) {
        let epoch = assignment.leader_epoch;
        let (was_leader, is_leader, new_epoch) = {
            let mut state = self.state.borrow_mut();
            if epoch < state.leader_epoch() {
                return;
            }
            let was_leader = state.replicas.is_leader();
            let new_epoch = epoch > state.leader_epoch();
            state.replicas.assign(assignment, now_ms());
            (was_leader, state.replicas.is_leader(), new_epoch)
        };
        if was_leader && !is_leader {
            self.progress.borrow_mut().fail_commits(&PartitionError::NotLeaderOrFollower);
        }
        // A new epoch or role changes what fetches naming the old one are answered.
        self.progress.borrow_mut().changed();
        if is_leader && new_epoch && self.epochs.borrow_mut().assign(epoch, self.log.log_end_offset()) {
            self.save_epochs().await;
        }
        self.advance_high_watermark();
        self.advance_low_watermark();
    }

    /// The idempotent producers this replica remembers (DescribeProducers).
    pub fn producers(&self) -> Vec<super::producers::ProducerSummary> {
        self.producers.borrow().summaries()
    }

    /// Whether this replica leads.
    pub fn is_leader(&self) -> bool {
        self.state.borrow().replicas.is_leader()
    }

    /// The assignment it holds.
    pub fn assignment(&self) -> Assignment {
        self.state.borrow().replicas.assignment().clone()
    }

    /// Checks the leader epoch a client sent (-1 skips the check).
    pub fn check_epoch(&self, client_epoch: i32) -> Result<(), PartitionError> {
        let current = self.leader_epoch();
        if client_epoch < 0 || client_epoch == current {
            Ok(())
        } else if client_epoch < current {
            Err(PartitionError::FencedLeaderEpoch { client: client_epoch, current })
        } else {
            Err(PartitionError::UnknownLeaderEpoch { client: client_epoch, current })
        }
    }

    /// Appends a producer's batches (validated by the caller, which found `spans`) as the
    /// leader. Idempotent producers are checked first: a retried batch that was appended before
    /// is not written again but answered with its original offset, once that is committed; a
    /// gap in sequence numbers or a fenced producer epoch is refused with nothing written.
    pub fn replicate(
        &self,
        records: BytesMut,
        spans: &[BatchSpan],
        acks: Acks,
        now: i64,
    ) -> Result<Replicated, PartitionError> {
        let config = self.config();
        if !self.is_leader() {
            return Err(PartitionError::NotLeaderOrFollower);
        }
        let in_sync = self.state.borrow().replicas.isr_len();
        if acks == Acks::All && in_sync < config.min_insync_replicas {
            return Err(PartitionError::NotEnoughReplicas { required: config.min_insync_replicas, in_sync });
        }
        if let Some(base_offset) = self.check_producers(spans)? {
            let end: i64 = base_offset + spans.iter().map(|s| s.header.offset_count()).sum::<i64>();
            let appended =
                Appended { base_offset, log_append_time_ms: -1, log_start_offset: self.log.log_start_offset() };
            return Ok(Replicated { appended, committed: self.committed_at(end, acks, None) });
        }
        let bytes = records.len() as u64;
        let epoch = self.leader_epoch();
        let info = self.log.append(records, spans, epoch, now)?;
        self.record_producers(spans, Some(info.base_offset), now);
        self.bytes_since_snapshot.set(self.bytes_since_snapshot.get() + bytes);
        if self.bytes_since_snapshot.get() >= PRODUCER_SNAPSHOT_BYTES {
            self.maybe_snapshot_producers(now);
        }
        self.progress.borrow_mut().log_end_moved(info.last_offset + 1);
        self.advance_high_watermark();
        let appended = Appended {
            base_offset: info.base_offset,
            log_append_time_ms: info.log_append_time_ms.unwrap_or(-1),
            log_start_offset: info.log_start_offset,
        };
        Ok(Replicated { appended, committed: self.committed_at(info.last_offset + 1, acks, Some(info.durable)) })
    }

    /// The idempotence check of every batch; `Some(offset)` when the batches were appended
    /// before at that base offset.
    fn check_producers(&self, spans: &[BatchSpan]) -> Result<Option<i64>, PartitionError> {
        if spans.len() > 1
            && let Some(span) = spans.iter().find(|s| s.header.producer_id >= 0)
        {
            // Every batch is checked against the table as it stands, so several batches of one
            // producer in one append cannot be judged (Kafka allows one batch per partition in a
            // Produce request; the protocol edge refuses more).
            return Err(PartitionError::OutOfOrderSequence {
                producer_id: span.header.producer_id,
                expected: -1,
                found: span.header.base_sequence,
            });
        }
        let table = self.producers.borrow();
        let mut duplicate = None;
        for span in spans {
            match table.check(&span.header)? {
                SequenceCheck::Append if duplicate.is_some() => {
                    // Part of the request was appended before and part was not: the client's
                    // idea of its sequence is broken.
                    return Err(PartitionError::OutOfOrderSequence {
                        producer_id: span.header.producer_id,
                        expected: -1,
                        found: span.header.base_sequence,
                    });
                }
                SequenceCheck::Append => {}
                SequenceCheck::Duplicate { base_offset } => {
                    duplicate.get_or_insert(base_offset);
                }
            }
        }
        Ok(duplicate)
    }

    /// Records the producers of batches just appended: stamped by this leader from offset
    /// `stamped_from` on (their headers, parsed before stamping, do not say where), or, with
    /// `None`, copied from a leader with their offsets in their headers (gaps included).
    fn record_producers(&self, spans: &[BatchSpan], stamped_from: Option<i64>, now: i64) {
        let mut table = self.producers.borrow_mut();
        let mut base = stamped_from;
        for span in spans {
            let base_offset = base.unwrap_or(span.header.base_offset);
            table.record(&BatchHeader { base_offset, ..span.header }, now);
            base = base.map(|b| b + span.header.offset_count());
        }
    }

    /// What an append ending at `end_offset` waits for before it is acknowledged.
    fn committed_at(&self, end_offset: i64, acks: Acks, durable: Option<Durable>) -> Committed {
        let wait = match acks {
            Acks::None => CommitWait::Ready,
            Acks::Leader if self.config().log.flush == FlushPolicy::Always => {
                CommitWait::Durable(durable.unwrap_or_else(|| self.log.durable_up_to(end_offset)))
            }
            Acks::Leader => CommitWait::Ready,
            Acks::All if self.high_watermark() >= end_offset => CommitWait::Ready,
            // A failed log never moves the high watermark again (a retried batch gets here
            // without appending, which would have said so).
            Acks::All if self.log.is_offline() => CommitWait::Failed(offline_error()),
            Acks::All => CommitWait::HighWatermark(self.progress.borrow_mut().wait_for_commit(end_offset)),
        };
        Committed { log: self.log.clone(), wait }
    }

    /// What this replica contributes to the high watermark.
    fn local_commit_end(&self) -> i64 {
        if self.log.is_offline() || self.config().log.flush == FlushPolicy::Always {
            self.log.durable_offset()
        } else {
            self.log.log_end_offset()
        }
    }

    /// On the leader, moves the high watermark to the smallest log end of the in-sync replicas
    /// when that is further, and wakes whoever it unblocks.
    fn advance_high_watermark(&self) {
        let candidate = {
            let state = self.state.borrow();
            if !state.replicas.is_leader() {
                return;
            }
            state.replicas.high_watermark(self.local_commit_end())
        };
        self.raise_high_watermark(candidate);
    }

    fn raise_high_watermark(&self, candidate: i64) {
        let moved = {
            let mut state = self.state.borrow_mut();
            if candidate > state.high_watermark {
                state.high_watermark = candidate;
                true
            } else {
                false
            }
        };
        if moved {
            let required = self.config().min_insync_replicas;
            let in_sync = {
                let state = self.state.borrow();
                if state.replicas.is_leader() { state.replicas.isr_len() } else { required }
            };
            let shortfall =
                (in_sync < required).then_some(PartitionError::NotEnoughReplicasAfterAppend { required, in_sync });
            self.progress.borrow_mut().high_watermark_moved(candidate, shortfall.as_ref());
        }
    }

    /// Called by the log's writer after its durable offset moved or it went offline.
    fn log_progressed(&self) {
        if self.log.is_offline() {
            self.progress.borrow_mut().fail_all(&offline_error());
            return;
        }
        self.advance_high_watermark();
    }

    /// On the leader: a follower's fetch from `offset`. Records how far it has come (which may
    /// move the high watermark), then reads from its log end, up to the log end.
    pub async fn read_for_follower(
        &self,
        follower: BrokerId,
        offset: i64,
        follower_log_start: i64,
        max_bytes: usize,
        current_leader_epoch: i32,
    ) -> Result<ReadOutcome, PartitionError> {
        self.check_epoch(current_leader_epoch)?;
        let (log_start_offset, log_end_offset) = (self.log.log_start_offset(), self.log.log_end_offset());
        if offset > log_end_offset || offset < log_start_offset {
            // Nothing is recorded for an offset this log does not have.
            return Err(PartitionError::OffsetOutOfRange { offset, log_start_offset, log_end_offset });
        }
        let known = {
            let mut state = self.state.borrow_mut();
            if !state.replicas.is_leader() {
                return Err(PartitionError::NotLeaderOrFollower);
            }
            state.replicas.fetched(follower, offset, follower_log_start, log_end_offset, now_ms())
        };
        if !known {
            return Err(PartitionError::NotLeaderOrFollower);
        }
        self.advance_high_watermark();
        self.advance_low_watermark();
        self.read(offset, max_bytes, Isolation::LogEnd, current_leader_epoch).await
    }

    /// That this replica follows in `leader_epoch`: what a pipeline got from a leader is applied
    /// only while that leadership holds (an answer from a replaced leader is dropped).
    fn check_following(&self, leader_epoch: i32) -> Result<(), PartitionError> {
        let state = self.state.borrow();
        if state.replicas.is_leader() {
            return Err(PartitionError::NotLeaderOrFollower);
        }
        if state.leader_epoch() != leader_epoch {
            return Err(PartitionError::FencedLeaderEpoch { client: leader_epoch, current: state.leader_epoch() });
        }
        Ok(())
    }

    /// On a follower: where to fetch from (its log end) and the epoch of its last batch.
    pub fn fetch_position(&self) -> (i64, i32) {
        (self.log.log_end_offset(), self.epochs.borrow().latest_epoch().unwrap_or(-1))
    }

    /// On a follower: where its log has epoch `epoch` end (for truncation after a leader change:
    /// see [`LeaderEpochCache::end_offset_for`]).
    pub fn local_end_of_epoch(&self, epoch: i32) -> (i32, i64) {
        self.epochs.borrow().end_offset_for(epoch, self.log.log_end_offset())
    }

    /// On a follower: appends batches copied from the leader (offsets, epochs and timestamps as
    /// the leader stamped them; the first at this log's end), and takes the leader's high
    /// watermark, never past this log's end. Returns when the batches are durable.
    pub async fn append_replica(
        &self,
        leader_epoch: i32,
        records: bytes::Bytes,
        spans: &[BatchSpan],
        leader_high_watermark: i64,
        now: i64,
    ) -> Result<Durable, PartitionError> {
        self.check_following(leader_epoch)?;
        // A fetch answers from the batch holding the fetch offset: what this log already holds
        // is skipped.
        let mut end = self.log.log_end_offset();
        let skip = spans.iter().take_while(|s| s.header.last_offset() < end).count();
        let spans = &spans[skip..];
        // An empty log that just started at the leader's log start gets the batch holding that
        // offset: it starts at that batch instead (as Kafka's followers do).
        if let Some(first) = spans.first()
            && first.header.base_offset < end
            && self.log.log_start_offset() == end
        {
            self.start_at(leader_epoch, first.header.base_offset).await?;
            end = first.header.base_offset;
        }
        let durable = if spans.is_empty() {
            self.log.durable_up_to(end)
        } else {
            let bytes = records.len() as u64;
            let info = self.log.append_replica(records, spans, now)?;
            let mut epochs_changed = false;
            {
                let mut epochs = self.epochs.borrow_mut();
                for span in spans {
                    epochs_changed |= epochs.assign(span.header.partition_leader_epoch.max(0), span.header.base_offset);
                }
            }
            self.record_producers(spans, None, now);
            self.bytes_since_snapshot.set(self.bytes_since_snapshot.get() + bytes);
            self.progress.borrow_mut().log_end_moved(info.last_offset + 1);
            if epochs_changed {
                self.save_epochs().await;
            }
            info.durable
        };
        self.raise_high_watermark(leader_high_watermark.min(self.log.log_end_offset()));
        Ok(durable)
    }

    /// On a follower: removes its log from `offset` on (a tail the leader does not have, found
    /// after a leader change), with the epochs and producer state it held.
    pub async fn truncate_to(&self, leader_epoch: i32, offset: i64) -> Result<(), PartitionError> {
        self.check_following(leader_epoch)?;
        if offset >= self.log.log_end_offset() {
            return Ok(());
        }
        tracing::info!(partition = ?self, offset, log_end = self.log.log_end_offset(), "truncating a divergent tail");
        self.log.truncate_to(offset).await?;
        let changed = self.epochs.borrow_mut().truncate_from_end(self.log.log_end_offset());
        self.reload_after_cut(changed).await?;
        {
            let mut state = self.state.borrow_mut();
            state.high_watermark = state.high_watermark.min(self.log.log_end_offset());
        }
        self.progress.borrow_mut().changed();
        Ok(())
    }

    /// On a follower whose log ends before its leader's log start (it was away while the leader
    /// deleted by retention or DeleteRecords): empties the log to start at `offset`, with no
    /// epochs or producers left from what was there.
    pub async fn start_at(&self, leader_epoch: i32, offset: i64) -> Result<(), PartitionError> {
        self.check_following(leader_epoch)?;
        tracing::info!(partition = ?self, offset, log_end = self.log.log_end_offset(), "starting the log over (behind the leader's log start)");
        self.log.start_at(offset).await?;
        let changed = self.epochs.borrow_mut().truncate_from_end(i64::MIN);
        self.reload_after_cut(changed).await?;
        self.raise_high_watermark(offset);
        self.progress.borrow_mut().changed();
        Ok(())
    }

    /// After the log lost its tail (or everything): the epoch cache saved when it changed, the
    /// producer state rebuilt from what is left.
    async fn reload_after_cut(&self, epochs_changed: bool) -> Result<(), PartitionError> {
        if epochs_changed {
            self.save_epochs().await;
        }
        let producers = rebuild_producers(&self.log, &self.faults).await?;
        *self.producers.borrow_mut() = producers;
        Ok(())
    }

    /// On a follower: moves its log start up to the leader's (`leader_log_start`, as its fetch
    /// answer says), never past what it holds or what is committed.
    pub async fn follow_log_start(&self, leader_log_start: i64) -> Result<(), PartitionError> {
        let target = leader_log_start.min(self.high_watermark()).min(self.log.log_end_offset());
        if self.is_leader() || target <= self.log.log_start_offset() {
            return Ok(());
        }
        self.log.delete_records_before(target).await?;
        self.log_start_moved(target).await;
        Ok(())
    }

    /// On the leader: the ISR it should ask the controller for now (with the assignment it
    /// holds), if any; `lag_ms` is `replica.lag.time.max.ms`.
    pub fn wanted_isr(&self, lag_ms: i64) -> Option<(Assignment, Vec<BrokerId>)> {
        let state = self.state.borrow();
        let epoch_start = self
            .epochs
            .borrow()
            .entries()
            .iter()
            .find(|e| e.epoch == state.leader_epoch())
            .map_or(0, |e| e.start_offset);
        let isr = state.replicas.wanted_isr(state.high_watermark, epoch_start, now_ms(), lag_ms)?;
        Some((state.replicas.assignment().clone(), isr))
    }

    /// The ISR change `isr` was sent to the controller (see [`ReplicaSet::change_sent`]).
    pub fn isr_change_sent(&self, isr: Vec<BrokerId>) {
        self.state.borrow_mut().replicas.change_sent(isr, now_ms());
    }

    /// The controller refused the ISR change sent against `partition_epoch`.
    pub fn isr_change_refused(&self, partition_epoch: i32) {
        self.state.borrow_mut().replicas.change_refused(partition_epoch);
    }

    /// Where reads under `isolation` stop.
    fn visible_end(&self, isolation: Isolation) -> i64 {
        match isolation {
            Isolation::HighWatermark => self.high_watermark(),
            Isolation::Committed => self.last_stable_offset(),
            Isolation::LogEnd => self.log.log_end_offset(),
        }
    }

    /// Reads whole batches from `offset`, at most `max_bytes` (but a whole first batch), up to
    /// what `isolation` may see.
    pub async fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        isolation: Isolation,
        current_leader_epoch: i32,
    ) -> Result<ReadOutcome, PartitionError> {
        self.check_epoch(current_leader_epoch)?;
        let upper = self.visible_end(isolation);
        let result = self.log.read(offset, max_bytes, upper).await?;
        let high_watermark = self.high_watermark();
        Ok(ReadOutcome {
            high_watermark,
            last_stable_offset: self.last_stable_offset(),
            log_start_offset: result.log_start_offset,
            log_end_offset: result.log_end_offset,
            records: result.batches,
        })
    }

    /// Marks `slot` of `signal` whenever what a fetch of this replica answers may change, from
    /// now on and as long as the signal lives (see [`super::ChangeSignal`]).
    pub fn listen(&self, signal: &std::sync::Arc<super::ChangeSignal>, slot: u32) {
        self.progress.borrow_mut().listen(signal, slot);
    }

    /// A receiver completing when data at `offset` becomes visible under `isolation` (or the
    /// partition goes away); `None` if it already is.
    pub fn watch(&self, offset: i64, isolation: Isolation) -> Option<oneshot::Receiver<()>> {
        if self.visible_end(isolation) > offset {
            return None;
        }
        Some(self.progress.borrow_mut().wait_for_data(offset, isolation))
    }

    /// ListOffsets for one timestamp or special value (-1 latest, -2 earliest, -3 max timestamp,
    /// -4 earliest local, -5 latest tiered).
    pub async fn list_offset(
        &self,
        timestamp: i64,
        current_leader_epoch: i32,
        isolation: Isolation,
    ) -> Result<ListedOffset, PartitionError> {
        self.check_epoch(current_leader_epoch)?;
        let none = ListedOffset { timestamp: -1, offset: -1, leader_epoch: -1 };
        let visible = self.visible_end(isolation);
        let at = |offset: i64, timestamp: i64| ListedOffset {
            timestamp,
            offset,
            leader_epoch: self.epochs.borrow().epoch_for_offset(offset).unwrap_or(-1),
        };
        Ok(match timestamp {
            -2 | -4 => at(self.log.log_start_offset(), -1),
            -1 => ListedOffset { timestamp: -1, offset: visible, leader_epoch: self.leader_epoch() },
            -5 => none,
            -3 => match self.log.offset_of_max_timestamp().await? {
                Some(found) if found.offset < visible => at(found.offset, found.timestamp),
                _ => none,
            },
            t => match self.log.offset_for_timestamp(t).await? {
                Some(found) if found.offset < visible => at(found.offset, found.timestamp),
                _ => none,
            },
        })
    }

    /// OffsetForLeaderEpoch (KIP-101/320): where `leader_epoch` ended in this replica's log, as
    /// (the epoch answered for, the end offset); see [`LeaderEpochCache::end_offset_for`].
    pub fn offset_for_leader_epoch(
        &self,
        leader_epoch: i32,
        current_leader_epoch: i32,
    ) -> Result<(i32, i64), PartitionError> {
        self.check_epoch(current_leader_epoch)?;
        Ok(self.epochs.borrow().end_offset_for(leader_epoch, self.log.log_end_offset()))
    }

    /// On the leader: the smallest log start over the in-sync replicas (see
    /// [`ReplicaSet::low_watermark`]).
    pub fn low_watermark(&self) -> i64 {
        self.state.borrow().replicas.low_watermark(self.log.log_start_offset())
    }

    /// Completes the deletions the low watermark now covers.
    fn advance_low_watermark(&self) {
        if self.is_leader() {
            let low = self.low_watermark();
            self.progress.borrow_mut().low_watermark_moved(low);
        }
    }

    /// DeleteRecords on the leader: moves the log start offset to `offset` (-1: the high
    /// watermark) here. Answers the new log start; the followers follow on their next fetches
    /// (see [`Self::low_watermark_reached`]).
    pub async fn delete_records(&self, offset: i64) -> Result<i64, PartitionError> {
        if !self.is_leader() {
            return Err(PartitionError::NotLeaderOrFollower);
        }
        let high_watermark = self.high_watermark();
        let offset = if offset == -1 { high_watermark } else { offset };
        if offset < 0 || offset > high_watermark {
            return Err(PartitionError::OffsetOutOfRange {
                offset,
                log_start_offset: self.log.log_start_offset(),
                log_end_offset: high_watermark,
            });
        }
        let low = self.log.delete_records_before(offset).await?;
        self.log_start_moved(low).await;
        Ok(low)
    }

    /// On the leader: waits until every in-sync follower's log start has reached `offset` (as
    /// Kafka's DeleteRecords does before it answers), so no clean election brings deleted
    /// records back. Completes with the low watermark then.
    pub async fn low_watermark_reached(&self, offset: i64) -> Result<i64, PartitionError> {
        if !self.is_leader() {
            return Err(PartitionError::NotLeaderOrFollower);
        }
        let low = self.low_watermark();
        if low >= offset {
            return Ok(low);
        }
        let wait = self.progress.borrow_mut().wait_for_low_watermark(offset);
        wait.await.unwrap_or(Err(PartitionError::NotLeaderOrFollower))
    }

    /// How much of the log the cleaner would clean now (compacted topics only).
    pub fn cleanable(&self, now: i64) -> Option<crate::storage::Cleanable> {
        self.log.cleanable(now, self.high_watermark())
    }

    /// One compaction pass over what lies wholly below the high watermark (see
    /// `storage/log/compact.rs`).
    pub async fn compact(
        &self,
        now: i64,
        map_entries: usize,
        pace: &crate::io::RateLimit,
    ) -> Result<crate::storage::CompactionOutcome, PartitionError> {
        Ok(self.log.compact(now, self.high_watermark(), map_entries, pace).await?)
    }

    /// Deletes what retention no longer keeps.
    pub async fn enforce_retention(&self, now: i64) -> Result<crate::storage::RetentionOutcome, PartitionError> {
        let outcome = self.log.enforce_retention(now).await?;
        if outcome.segments_deleted > 0 {
            self.log_start_moved(outcome.log_start_offset).await;
        }
        Ok(outcome)
    }

    async fn log_start_moved(&self, log_start_offset: i64) {
        self.progress.borrow_mut().changed();
        let changed = self.epochs.borrow_mut().truncate_from_start(log_start_offset);
        if changed {
            self.save_epochs().await;
        }
    }

    async fn save_epochs(&self) {
        let epochs = self.epochs.borrow().clone();
        if let Err(err) = epochs.save(&self.faults).await {
            tracing::warn!(partition = ?self, error = %err, "could not save the leader epoch checkpoint");
        }
    }

    /// Writes and syncs everything appended so far, whatever the flush policy.
    pub async fn flush(&self) -> Result<(), PartitionError> {
        Ok(self.log.flush().await?)
    }

    /// Offsets and size.
    pub fn status(&self) -> PartitionStatus {
        let snapshot = self.log.snapshot();
        PartitionStatus {
            log_start_offset: snapshot.log_start_offset,
            log_end_offset: snapshot.log_end_offset,
            high_watermark: self.high_watermark(),
            size_bytes: snapshot.size_bytes,
        }
    }

    /// Saves the producer table when enough has been appended or time has passed. The table is
    /// taken now, as of the log end, and written once everything it covers is durable (a
    /// snapshot must never claim batches a crash could lose).
    pub fn maybe_snapshot_producers(&self, now: i64) {
        let due = self.bytes_since_snapshot.get() >= PRODUCER_SNAPSHOT_BYTES
            || now - self.last_snapshot_ms.get() >= PRODUCER_SNAPSHOT_INTERVAL_MS;
        if !due {
            return;
        }
        let (bytes, covered) = {
            let mut table = self.producers.borrow_mut();
            table.expire(now);
            (table.to_json(), table.covered_offset)
        };
        self.bytes_since_snapshot.set(0);
        self.last_snapshot_ms.set(now);
        let durable = self.log.durable_up_to(covered);
        let dir = self.log.dir().to_owned();
        let faults = self.faults.clone();
        io::spawn_detached(async move {
            if durable.wait().await.is_ok() {
                producers::save_snapshot(&dir, bytes, &faults).await;
            }
        });
    }

    /// Closes the log (flushing it), saves the producer table, and fails whoever still waits.
    pub async fn close(&self) -> Result<(), PartitionError> {
        let closed = self.log.close().await;
        self.progress.borrow_mut().fail_all(&PartitionError::NotLeaderOrFollower);
        if closed.is_ok() {
            let bytes = {
                let mut table = self.producers.borrow_mut();
                table.covered_offset = table.covered_offset.max(self.log.log_end_offset());
                table.to_json()
            };
            producers::save_snapshot(self.log.dir(), bytes, &self.faults).await;
        }
        Ok(closed?)
    }

    /// Closes the partition and removes its directory.
    pub async fn delete(&self) -> Result<(), PartitionError> {
        self.progress.borrow_mut().fail_all(&PartitionError::UnknownTopicOrPartition);
        Ok(self.log.delete().await?)
    }

    /// The partition's log directory.
    pub fn dir(&self) -> &Path {
        self.log.dir()
    }

    /// Descriptor of the active segment's file, for tests that inspect `/proc/self/fdinfo`.
    pub fn active_segment_fd(&self) -> Option<i32> {
        self.log.active_segment_fd()
    }
}

fn offline_error() -> PartitionError {
    PartitionError::Storage("the partition's log is offline after a disk failure".into())
}

/// Makes `dir` the directory of topic `topic_id`'s partition: a directory left by an older topic
/// of the same name is removed first, so deleted data never reappears under a new topic.
async fn claim_dir(dir: &Path, topic_id: Uuid, faults: &Faults) -> Result<(), PartitionError> {
    let storage = |e: std::io::Error| PartitionError::Storage(format!("{}: {e}", dir.display()));
    let id_file = dir.join(PARTITION_METADATA_FILE);
    let expected = format!("topic_id: {topic_id}\n");
    match io::fs::read(&id_file, faults).await.map_err(storage)? {
        Some(text) if text.trim_ascii() == expected.trim().as_bytes() => return Ok(()),
        Some(_) => {
            tracing::warn!(dir = %dir.display(), "partition directory belongs to an older topic of the same name; removing it");
            io::fs::discard_dir(dir, faults).await.map_err(storage)?;
        }
        None => {}
    }
    io::fs::create_dir_all(dir, faults).await.map_err(storage)?;
    io::fs::write_atomic(&id_file, expected.into_bytes(), faults).await.map_err(storage)
}

/// Loads the producer snapshot and replays the batches written after it.
async fn rebuild_producers(log: &Log, faults: &Faults) -> Result<ProducerTable, PartitionError> {
    let mut table = ProducerTable::load(log.dir(), faults).await;
    let (start, end) = (log.log_start_offset(), log.log_end_offset());
    if table.covered_offset > end || table.covered_offset < start {
        table = ProducerTable::default();
        table.covered_offset = start;
    }
    for_each_header(log, table.covered_offset, end, |header| table.record(header, header.max_timestamp)).await?;
    table.expire(now_ms());
    Ok(table)
}

/// Calls `f` with the header of every batch of `log` from `from` to `end`, in order.
async fn for_each_header(
    log: &Log,
    from: i64,
    end: i64,
    mut f: impl FnMut(&BatchHeader),
) -> Result<(), PartitionError> {
    let mut offset = from;
    while offset < end {
        let read = log.read(offset, REBUILD_READ_BYTES, i64::MAX).await?;
        if read.batches.is_empty() {
            break;
        }
        for batch in &read.batches {
            let header = BatchHeader::parse(batch)?;
            f(&header);
            offset = header.last_offset() + 1;
        }
    }
    Ok(())
}

/// Loads the leader-epoch checkpoint, or rebuilds it from the log's batch headers when it is
/// missing or damaged. The log's first and last batches usually share an epoch (every
/// partition written before epochs changed), and then the two reads are all it takes.
async fn load_epochs(log: &Log, faults: &Faults) -> Result<LeaderEpochCache, PartitionError> {
    let storage = |e: std::io::Error| PartitionError::Storage(format!("{}: {e}", log.dir().display()));
    if let Some(cache) = LeaderEpochCache::load(log.dir(), faults).await.map_err(storage)? {
        return Ok(cache);
    }
    let mut cache = LeaderEpochCache::empty(log.dir());
    let (start, end) = (log.log_start_offset(), log.log_end_offset());
    if start == end {
        return Ok(cache);
    }
    let (first, last) = (batch_epoch(log, start).await?, batch_epoch(log, end - 1).await?);
    if first.is_some() && first == last {
        cache.assign(first.unwrap_or(0).max(0), start);
    } else {
        for_each_header(log, start, end, |header| {
            cache.assign(header.partition_leader_epoch.max(0), header.base_offset);
        })
        .await?;
    }
    cache.save(faults).await.map_err(storage)?;
    Ok(cache)
}

/// The leader epoch of the batch holding `offset`.
async fn batch_epoch(log: &Log, offset: i64) -> Result<Option<i32>, PartitionError> {
    Ok(match log.read(offset, 1, i64::MAX).await?.batches.first() {
        Some(batch) => Some(BatchHeader::parse(batch)?.partition_leader_epoch),
        None => None,
    })
}
