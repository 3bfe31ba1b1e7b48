//! The partition layer on real files: when an append may be acknowledged (acks and the flush
//! policy), what consumers may see (the high watermark), idempotent retries, the
//! min.insync.replicas check, the leader-epoch cache across reopens, and a leader and a follower
//! replica copying batches, with the high watermark waiting for the ISR and a divergent tail cut
//! after a leader change.

mod common;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::TempDir;
use moldau::io::{FaultOp, Faults, block_on};
use moldau::model::batch::validate_all;
use moldau::model::records::{BatchBuilder, BatchFields};
use moldau::partition::{
    Acks, Assignment, Isolation, PartitionConfig, PartitionError, PartitionManager, PartitionOpen, PartitionRef,
};
use moldau::storage::{FlushPolicy, LogConfig, LogContext, ReadCache};

fn manager(dir: &TempDir, faults: &Faults) -> PartitionManager {
    manager_of(dir, 1, faults)
}

fn manager_of(dir: &TempDir, broker: i32, faults: &Faults) -> PartitionManager {
    let context = LogContext { cache: Rc::new(RefCell::new(ReadCache::new(1 << 20))), faults: faults.clone() };
    PartitionManager::new(dir.to_path_buf(), broker, context)
}

fn config(flush: FlushPolicy, min_insync_replicas: usize) -> Arc<PartitionConfig> {
    Arc::new(PartitionConfig { log: LogConfig { flush, ..LogConfig::default() }, min_insync_replicas })
}

/// Broker 1 alone leads the partition, in `leader_epoch`.
async fn open(manager: &PartitionManager, leader_epoch: i32, config: Arc<PartitionConfig>) -> PartitionRef {
    let alone = Assignment { leader: 1, leader_epoch, partition_epoch: 0, replicas: vec![1], isr: vec![1] };
    open_as(manager, alone, config).await
}

async fn open_as(manager: &PartitionManager, assignment: Assignment, config: Arc<PartitionConfig>) -> PartitionRef {
    let open = PartitionOpen { topic: "t".into(), topic_id: uuid::Uuid::from_u128(7), index: 0, assignment, config };
    manager.open(open).await.expect("open").0
}

/// Replicas 1 and 2, both in sync, led by `leader` in `leader_epoch`.
fn pair(leader: i32, leader_epoch: i32) -> Assignment {
    Assignment { leader, leader_epoch, partition_epoch: leader_epoch, replicas: vec![1, 2], isr: vec![1, 2] }
}

/// One fetch round of `follower` (broker `id`) from `leader`, as a follower pipeline does it:
/// read from its log end, append what came as it is, wait until durable. Returns how many
/// batches came.
async fn copy_round(leader: &PartitionRef, follower: &PartitionRef, id: i32) -> usize {
    let (offset, _) = follower.fetch_position();
    let outcome = leader
        .read_for_follower(id, offset, follower.status().log_start_offset, 1 << 20, leader.leader_epoch())
        .await
        .expect("follower fetch");
    let mut bytes = BytesMut::new();
    outcome.records.iter().for_each(|b| bytes.extend_from_slice(b));
    let bytes = bytes.freeze();
    let spans = if bytes.is_empty() { Vec::new() } else { validate_all(&bytes, usize::MAX).unwrap() };
    let durable = follower
        .append_replica(follower.leader_epoch(), bytes, &spans, outcome.high_watermark, 0)
        .await
        .expect("replica append");
    durable.wait().await.expect("durable");
    follower.follow_log_start(outcome.log_start_offset).await.expect("follow the log start");
    spans.len()
}

async fn all_batches(partition: &PartitionRef) -> Vec<Bytes> {
    partition.read(0, 1 << 20, Isolation::LogEnd, -1).await.expect("read").records
}

/// A batch of `count` records; idempotent when `producer` is (id, epoch, base sequence).
fn batch(count: usize, producer: Option<(i64, i16, i32)>) -> (BytesMut, Vec<moldau::model::BatchSpan>) {
    let mut builder = BatchBuilder::new(128, 1_000);
    for i in 0..count {
        builder.push(None, format!("v{i}").as_bytes(), 1_000);
    }
    let fields = match producer {
        Some((producer_id, producer_epoch, base_sequence)) => {
            BatchFields { attributes: 0, producer_id, producer_epoch, base_sequence }
        }
        None => BatchFields::default(),
    };
    let bytes = BytesMut::from(&builder.finish_with(&fields)[..]);
    let spans = validate_all(&bytes, usize::MAX).unwrap();
    (bytes, spans)
}

async fn visible(partition: &PartitionRef, isolation: Isolation) -> Vec<Bytes> {
    partition.read(0, 1 << 20, isolation, -1).await.expect("read").records
}

#[test]
fn acks_all_waits_for_the_high_watermark_and_consumers_see_only_what_is_durable() {
    let dir = TempDir::new("partition-hw");
    let faults = Faults::none();
    block_on(async {
        let manager = manager(&dir, &faults);
        let partition = open(&manager, 0, config(FlushPolicy::Always, 1)).await;
        faults.stall_syncs(Duration::from_millis(300));
        let (records, spans) = batch(3, None);
        let replicated = partition.replicate(records, &spans, Acks::All, 0).unwrap();
        assert_eq!(replicated.appended.base_offset, 0);
        assert_eq!(partition.high_watermark(), 0, "not durable yet");
        assert!(visible(&partition, Isolation::HighWatermark).await.is_empty(), "consumers wait for durability");
        assert_eq!(visible(&partition, Isolation::LogEnd).await.len(), 1, "the log itself has the batch");
        let watch = partition.watch(0, Isolation::HighWatermark).expect("nothing visible yet");
        replicated.committed.wait().await.expect("committed");
        assert_eq!(partition.high_watermark(), 3);
        watch.await.expect_err("a fetch watcher is woken (its sender dropped) once data is visible");
        assert_eq!(visible(&partition, Isolation::HighWatermark).await.len(), 1);
        assert_eq!(partition.list_offset(-1, -1, Isolation::HighWatermark).await.unwrap().offset, 3);
        manager.close_all().await;
    });
}

#[test]
fn a_failed_sync_fails_the_acknowledgement_and_the_data_is_never_served() {
    let dir = TempDir::new("partition-failed-sync");
    let faults = Faults::none();
    block_on(async {
        let manager = manager(&dir, &faults);
        let partition = open(&manager, 0, config(FlushPolicy::Always, 1)).await;
        let (records, spans) = batch(1, None);
        partition.replicate(records, &spans, Acks::All, 0).unwrap().committed.wait().await.unwrap();
        faults.fail_next(FaultOp::Sync, libc::EIO);
        let (records, spans) = batch(2, None);
        let err = partition.replicate(records, &spans, Acks::All, 0).unwrap().committed.wait().await.unwrap_err();
        assert!(matches!(err, PartitionError::Storage(_)), "{err}");
        assert_eq!(partition.high_watermark(), 1, "the high watermark stays at what is durable");
        assert_eq!(visible(&partition, Isolation::HighWatermark).await.len(), 1);
        let (records, spans) = batch(1, None);
        assert!(matches!(partition.replicate(records, &spans, Acks::Leader, 0), Err(PartitionError::Storage(_))));
        manager.close_all().await;
    });
}

#[test]
fn retries_answer_the_original_offset_and_fencing_and_gaps_write_nothing() {
    let dir = TempDir::new("partition-idempotence");
    let faults = Faults::none();
    block_on(async {
        let manager = manager(&dir, &faults);
        let partition = open(&manager, 0, config(FlushPolicy::Always, 1)).await;
        for expected in [0, 2] {
            let (records, spans) = batch(2, Some((9, 0, expected as i32)));
            let replicated = partition.replicate(records, &spans, Acks::All, 0).unwrap();
            assert_eq!(replicated.appended.base_offset, expected);
            replicated.committed.wait().await.unwrap();
        }
        // The first batch again, while still remembered: its original offset, nothing appended.
        let (records, spans) = batch(2, Some((9, 0, 0)));
        let retried = partition.replicate(records, &spans, Acks::All, 0).unwrap();
        assert_eq!(retried.appended.base_offset, 0);
        retried.committed.wait().await.unwrap();
        assert_eq!(partition.status().log_end_offset, 4);
        let (records, spans) = batch(1, Some((9, 0, 7)));
        assert!(matches!(
            partition.replicate(records, &spans, Acks::All, 0),
            Err(PartitionError::OutOfOrderSequence { expected: 4, found: 7, .. })
        ));
        let (records, spans) = batch(1, Some((9, 1, 0)));
        partition.replicate(records, &spans, Acks::All, 0).unwrap().committed.wait().await.unwrap();
        let (records, spans) = batch(1, Some((9, 0, 4)));
        assert!(matches!(
            partition.replicate(records, &spans, Acks::All, 0),
            Err(PartitionError::InvalidProducerEpoch { epoch: 0, current: 1, .. })
        ));
        assert_eq!(partition.status().log_end_offset, 5);
        manager.close_all().await;
    });
}

#[test]
fn acks_all_needs_min_insync_replicas_but_acks_one_does_not() {
    let dir = TempDir::new("partition-min-isr");
    let faults = Faults::none();
    block_on(async {
        let manager = manager(&dir, &faults);
        let partition = open(&manager, 0, config(FlushPolicy::Always, 2)).await;
        let (records, spans) = batch(1, None);
        assert!(matches!(
            partition.replicate(records, &spans, Acks::All, 0),
            Err(PartitionError::NotEnoughReplicas { required: 2, in_sync: 1 })
        ));
        assert_eq!(partition.status().log_end_offset, 0, "refused before the append");
        let (records, spans) = batch(1, None);
        partition.replicate(records, &spans, Acks::Leader, 0).unwrap().committed.wait().await.unwrap();
        manager.close_all().await;
    });
}

#[test]
fn leader_epochs_are_stamped_remembered_and_listed() {
    let dir = TempDir::new("partition-epochs");
    let faults = Faults::none();
    block_on(async {
        let manager = manager(&dir, &faults);
        let partition = open(&manager, 0, config(FlushPolicy::Always, 1)).await;
        let (records, spans) = batch(5, None);
        partition.replicate(records, &spans, Acks::All, 0).unwrap().committed.wait().await.unwrap();
        manager.close_all().await;
        // Reopened in a later epoch (a new leadership): new batches carry it.
        let partition = open(&manager, 3, config(FlushPolicy::Always, 1)).await;
        assert!(dir.join("t-0/leader-epoch-checkpoint").exists());
        let (records, spans) = batch(2, None);
        partition.replicate(records, &spans, Acks::All, 0).unwrap().committed.wait().await.unwrap();
        let stored = visible(&partition, Isolation::HighWatermark).await;
        let epochs: Vec<i32> =
            stored.iter().map(|b| moldau::model::BatchHeader::parse(b).unwrap().partition_leader_epoch).collect();
        assert_eq!(epochs, [0, 3]);
        assert_eq!(partition.list_offset(-2, -1, Isolation::HighWatermark).await.unwrap().leader_epoch, 0);
        assert_eq!(partition.list_offset(-1, -1, Isolation::HighWatermark).await.unwrap().leader_epoch, 3);
        assert!(matches!(partition.check_epoch(2), Err(PartitionError::FencedLeaderEpoch { current: 3, .. })));
        assert!(matches!(partition.check_epoch(4), Err(PartitionError::UnknownLeaderEpoch { current: 3, .. })));
        manager.close_all().await;
    });
}

#[test]
fn a_follower_copies_the_leader_which_acknowledges_once_the_isr_has_it_and_a_diverged_tail_is_cut() {
    let (dir1, dir2) = (TempDir::new("partition-leader"), TempDir::new("partition-follower"));
    let faults = Faults::none();
    block_on(async {
        let (broker1, broker2) = (manager_of(&dir1, 1, &faults), manager_of(&dir2, 2, &faults));
        let leader = open_as(&broker1, pair(1, 0), config(FlushPolicy::Always, 2)).await;
        let follower = open_as(&broker2, pair(1, 0), config(FlushPolicy::Always, 2)).await;
        let (records, spans) = batch(3, Some((5, 0, 0)));
        assert!(matches!(follower.replicate(records, &spans, Acks::All, 0), Err(PartitionError::NotLeaderOrFollower)));

        let (records, spans) = batch(3, Some((5, 0, 0)));
        let replicated = leader.replicate(records, &spans, Acks::All, 0).unwrap();
        assert_eq!(copy_round(&leader, &follower, 2).await, 1);
        assert_eq!(leader.high_watermark(), 0, "the follower has not said it holds the batch yet");
        assert!(visible(&leader, Isolation::HighWatermark).await.is_empty());
        // Its next fetch, from offset 3, says it holds offsets 0..3: committed (once the
        // leader's own write is durable too, which this test does not wait for).
        assert_eq!(copy_round(&leader, &follower, 2).await, 0);
        replicated.committed.wait().await.expect("acks=all answered once the ISR holds it");
        assert_eq!(leader.high_watermark(), 3);
        copy_round(&leader, &follower, 2).await;
        assert_eq!(follower.high_watermark(), 3, "the leader's high watermark reaches the follower");
        assert_eq!(all_batches(&leader).await, all_batches(&follower).await, "byte for byte");
        assert!(
            matches!(leader.read_for_follower(9, 0, 0, 1 << 20, 0).await, Err(PartitionError::NotLeaderOrFollower)),
            "not a replica"
        );

        // The leader takes a batch its follower never gets (acks=1), then loses leadership.
        let (records, spans) = batch(2, None);
        leader.replicate(records, &spans, Acks::Leader, 0).unwrap().committed.wait().await.unwrap();
        assert_eq!(leader.status().log_end_offset, 5);
        let (records, spans) = batch(1, None);
        let pending = leader.replicate(records, &spans, Acks::All, 0).unwrap();
        follower.assign(pair(2, 1)).await;
        leader.assign(pair(2, 1)).await;
        assert!(
            matches!(pending.committed.wait().await, Err(PartitionError::NotLeaderOrFollower)),
            "an acks=all append the old leader could not commit fails when it stops leading"
        );
        let (new_leader, old_leader) = (follower, leader);
        let (records, spans) = batch(1, None);
        let replicated = new_leader.replicate(records, &spans, Acks::All, 0).unwrap();
        assert_eq!(replicated.appended.base_offset, 3, "the new leader goes on from its own log end");
        // The old leader asks where its last epoch (0) ended on the new leader, and cuts there.
        let (_, last_epoch) = old_leader.fetch_position();
        let (epoch, end) = new_leader.offset_for_leader_epoch(last_epoch, 1).unwrap();
        assert_eq!((epoch, end), (0, 3));
        old_leader.truncate_to(1, end).await.unwrap();
        assert_eq!(old_leader.status().log_end_offset, 3);
        copy_round(&new_leader, &old_leader, 1).await;
        copy_round(&new_leader, &old_leader, 1).await;
        replicated.committed.wait().await.expect("committed in the new epoch");
        assert_eq!(all_batches(&new_leader).await, all_batches(&old_leader).await, "the diverged tail is gone");
        let epochs: Vec<i32> = all_batches(&old_leader)
            .await
            .iter()
            .map(|b| moldau::model::BatchHeader::parse(b).unwrap().partition_leader_epoch)
            .collect();
        assert_eq!(epochs, [0, 1]);
        // The copied idempotent batch left its producer state on the follower too: a retry of
        // it on the new leader is answered, not stored again.
        let (records, spans) = batch(3, Some((5, 0, 0)));
        let retried = new_leader.replicate(records, &spans, Acks::All, 0).unwrap();
        assert_eq!(retried.appended.base_offset, 0);
        assert_eq!(new_leader.status().log_end_offset, 4);
        broker1.close_all().await;
        broker2.close_all().await;
    });
}

#[test]
fn delete_records_is_answered_once_the_in_sync_follower_deleted_too() {
    use futures_util::FutureExt;
    let (dir1, dir2) = (TempDir::new("partition-delete-leader"), TempDir::new("partition-delete-follower"));
    let faults = Faults::none();
    block_on(async {
        let (broker1, broker2) = (manager_of(&dir1, 1, &faults), manager_of(&dir2, 2, &faults));
        let leader = open_as(&broker1, pair(1, 0), config(FlushPolicy::Always, 1)).await;
        let follower = open_as(&broker2, pair(1, 0), config(FlushPolicy::Always, 1)).await;
        let mut appended = Vec::new();
        for _ in 0..3 {
            let (records, spans) = batch(2, None);
            appended.push(leader.replicate(records, &spans, Acks::Leader, 0).unwrap());
        }
        // The leader's high watermark also waits for its own writes to be durable: copying rounds
        // that find nothing new never wait, so without this the loop below could spin while the
        // leader's writer never gets to run.
        for replicated in appended {
            replicated.committed.wait().await.unwrap();
        }
        for _ in 0..10 {
            if leader.high_watermark() == 6 && follower.high_watermark() == 6 {
                break;
            }
            copy_round(&leader, &follower, 2).await;
        }
        assert_eq!((leader.high_watermark(), follower.high_watermark()), (6, 6));
        assert!(matches!(follower.delete_records(4).await, Err(PartitionError::NotLeaderOrFollower)));
        assert_eq!(leader.delete_records(4).await.unwrap(), 4);
        let mut answer = Box::pin(leader.low_watermark_reached(4));
        assert!(answer.as_mut().now_or_never().is_none(), "the follower still starts at 0");
        // Its next fetch brings the leader's log start; the one after says it moved there.
        copy_round(&leader, &follower, 2).await;
        assert_eq!(follower.status().log_start_offset, 4);
        assert!(answer.as_mut().now_or_never().is_none(), "the leader has not heard yet");
        copy_round(&leader, &follower, 2).await;
        assert_eq!(answer.await.unwrap(), 4);

        // A follower leaving the ISR no longer holds deletions up; one losing leadership fails
        // them.
        assert_eq!(leader.delete_records(6).await.unwrap(), 6);
        let waiting = leader.low_watermark_reached(6);
        let shrink = async {
            leader.assign(Assignment { partition_epoch: 1, isr: vec![1], ..pair(1, 0) }).await;
        };
        let (answer, ()) = futures_util::future::join(waiting, shrink).await;
        assert_eq!(answer.unwrap(), 6);
        let (records, spans) = batch(1, None);
        leader.replicate(records, &spans, Acks::Leader, 0).unwrap().committed.wait().await.unwrap();
        leader.assign(Assignment { partition_epoch: 2, isr: vec![1, 2], ..pair(1, 0) }).await;
        let (waiting, ()) = futures_util::future::join(leader.low_watermark_reached(7), async {
            leader.assign(pair(2, 1)).await;
        })
        .await;
        assert!(matches!(waiting, Err(PartitionError::NotLeaderOrFollower)), "{waiting:?}");
        broker1.close_all().await;
        broker2.close_all().await;
    });
}

#[test]
fn an_isr_shrinking_below_min_insync_fails_the_acknowledgements_it_commits() {
    let dir = TempDir::new("partition-shrink");
    let faults = Faults::none();
    block_on(async {
        let manager = manager(&dir, &faults);
        let leader = open_as(&manager, pair(1, 0), config(FlushPolicy::Always, 2)).await;
        let (records, spans) = batch(2, None);
        let waiting = leader.replicate(records, &spans, Acks::All, 0).unwrap();
        // Follower 2 falls out of the ISR: the high watermark moves on without it, but the write
        // was not replicated to min.insync.replicas (Kafka: NOT_ENOUGH_REPLICAS_AFTER_APPEND).
        leader.assign(Assignment { partition_epoch: 1, isr: vec![1], ..pair(1, 0) }).await;
        assert!(matches!(
            waiting.committed.wait().await,
            Err(PartitionError::NotEnoughReplicasAfterAppend { required: 2, in_sync: 1 })
        ));
        assert_eq!(leader.high_watermark(), 2, "stored and visible all the same");
        let (records, spans) = batch(1, None);
        assert!(matches!(
            leader.replicate(records, &spans, Acks::All, 0),
            Err(PartitionError::NotEnoughReplicas { required: 2, in_sync: 1 })
        ));
        manager.close_all().await;
    });
}

#[test]
fn a_follower_remembers_producers_at_the_offsets_its_leader_gave_them_across_gaps() {
    let dir = TempDir::new("partition-follower-producers");
    let faults = Faults::none();
    block_on(async {
        let manager = manager(&dir, &faults);
        // Broker 1 follows broker 2, whose (compacted) log has a gap between offsets 2 and 10.
        let follower = open_as(&manager, pair(2, 1), config(FlushPolicy::Always, 1)).await;
        let mut copied = BytesMut::new();
        for (base, sequence) in [(0i64, 0), (10, 2)] {
            let (mut records, _) = batch(2, Some((9, 0, sequence)));
            moldau::model::batch::stamp(&mut records, base, 1);
            copied.extend_from_slice(&records);
        }
        let copied = copied.freeze();
        let spans = validate_all(&copied, usize::MAX).unwrap();
        follower.append_replica(1, copied, &spans, 12, 0).await.unwrap().wait().await.unwrap();
        assert_eq!(follower.status().log_end_offset, 12);
        // It takes over; the producer retries its last batch, which must answer where it is.
        follower
            .assign(Assignment { leader: 1, leader_epoch: 2, partition_epoch: 2, replicas: vec![1], isr: vec![1] })
            .await;
        let (records, spans) = batch(2, Some((9, 0, 2)));
        let retried = follower.replicate(records, &spans, Acks::All, 0).unwrap();
        assert_eq!(retried.appended.base_offset, 10, "the retry is answered with the batch's own offset");
        retried.committed.wait().await.unwrap();
        assert_eq!(follower.status().log_end_offset, 12, "nothing appended twice");
        manager.close_all().await;
    });
}
