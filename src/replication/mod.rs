//! Replication between brokers, per shard: the follower pipelines that copy leaders' logs, and
//! the leader's upkeep of its in-sync replicas.
//!
//! **Follower pipelines.** A shard runs one pipeline per leader broker it follows partitions
//! from: one connection to that broker's inter-broker listener (`inter_broker_listener_name`:
//! TLS and SASL when it is secured, `security::inter_broker_client`), and Kafka's own Fetch (with this
//! broker's replica id, each partition's current leader epoch and the epoch of its last batch)
//! covering every partition the shard follows from it. What comes back is appended as the leader
//! stamped it (`Partition::append_replica`: no record is decoded, the batches are checked and
//! copied once into the write buffer). Under `flush = always` a pipeline asks for more only once
//! what it appended is durable, so the offset it fetches from (which is what the leader counts
//! for the high watermark) is on its disk. After a leader change, a follower first asks the new
//! leader where its last epoch ended (OffsetForLeaderEpoch, KIP-101/279) and cuts its log there,
//! so no divergent tail survives.
//!
//! **ISR upkeep.** On each shard, every partition it leads is looked at a few times a second: a
//! follower lagging for longer than `replica_lag_time_max_ms` leaves the ISR, one that caught up
//! joins, through the controller (AlterPartition, carrying the leader and partition epochs so a
//! stale change is refused).
//!
//! Ownership: one [`Replication`] per shard (`Rc`), driven by the shard's metadata view; each
//! pipeline is a task of that shard holding only `Rc`s of it.

mod pipeline;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use crate::cluster::{
    ControllerError, ControllerHandle, ControllerRequest, ControllerResponse, IsrChange, LocalMetadata, MetadataView,
};
use crate::config::BrokerConfig;
use crate::io;
use crate::model::{BrokerId, NO_BROKER, TopicPartition};
use crate::partition::PartitionManager;
use crate::shard::ShardId;

use pipeline::{Followed, Pipeline};

/// How often each shard looks at the ISRs of what it leads.
const ISR_CHECK_EVERY: Duration = Duration::from_millis(250);

/// How often a broker asks again to move the lead of partitions whose log is offline.
const OFFLINE_REPORT_EVERY: Duration = Duration::from_secs(2);

/// The replication service of one shard.
pub struct Replication {
    shard: ShardId,
    partitions: Rc<PartitionManager>,
    metadata: Rc<LocalMetadata>,
    controller: ControllerHandle,
    config: Arc<BrokerConfig>,
    /// Pipelines by leader broker.
    pipelines: RefCell<HashMap<BrokerId, Rc<Pipeline>>>,
}

impl Replication {
    /// Starts the calling shard's replication: pipelines follow the shard's view from its first
    /// publish on, and the ISR upkeep runs until the shard stops.
    pub fn start(
        shard: ShardId,
        partitions: Rc<PartitionManager>,
        metadata: Rc<LocalMetadata>,
        controller: ControllerHandle,
        config: Arc<BrokerConfig>,
    ) -> Rc<Self> {
        let replication = Rc::new(Self {
            shard,
            partitions,
            metadata: metadata.clone(),
            controller,
            config,
            pipelines: RefCell::new(HashMap::new()),
        });
        let weak = Rc::downgrade(&replication);
        metadata.subscribe(move |view, _| {
            if let Some(replication) = weak.upgrade() {
                replication.follow(view);
            }
        });
        io::spawn_detached(keep_isrs(Rc::downgrade(&replication)));
        replication
    }

    /// Stops every pipeline (at shutdown).
    pub fn stop(&self) {
        for (_, pipeline) in self.pipelines.borrow_mut().drain() {
            pipeline.stop();
        }
    }

    /// Matches the pipelines to `view`: every partition this shard hosts whose leader is another
    /// live broker is followed from that broker.
    fn follow(&self, view: &MetadataView) {
        let me = view.broker_id;
        let mut wanted: HashMap<BrokerId, HashMap<TopicPartition, Followed>> = HashMap::new();
        for (key, shard) in view.placement.iter() {
            if *shard != self.shard {
                continue;
            }
            let Some(topic) = view.topic_by_id(&key.0) else { continue };
            let Ok(p) = view.partition(topic, key.1) else { continue };
            if p.leader == me || p.leader == NO_BROKER || !p.replicas.contains(&me) {
                continue;
            }
            let followed = Followed { topic: topic.name.clone(), leader_epoch: p.leader_epoch };
            wanted.entry(p.leader).or_default().insert(*key, followed);
        }
        let mut pipelines = self.pipelines.borrow_mut();
        pipelines.retain(|leader, pipeline| {
            let keep = wanted.contains_key(leader);
            if !keep {
                pipeline.stop();
            }
            keep
        });
        for (leader, partitions) in wanted {
            match pipelines.get(&leader) {
                Some(pipeline) => pipeline.set_partitions(partitions),
                None => {
                    let pipeline = Pipeline::new(leader, partitions);
                    io::spawn_detached(pipeline::run(
                        pipeline.clone(),
                        self.partitions.clone(),
                        self.metadata.clone(),
                        self.config.clone(),
                    ));
                    pipelines.insert(leader, pipeline);
                }
            }
        }
    }
}

/// The ISR upkeep of one shard: asks the controller for the ISR changes its led partitions want,
/// and to move the lead of those whose log went offline to another in-sync replica (Kafka moves
/// a failed log directory's leaderships too), every [`OFFLINE_REPORT_EVERY`] while it lasts.
async fn keep_isrs(replication: std::rc::Weak<Replication>) {
    let mut offline_reported = None::<std::time::Instant>;
    loop {
        io::sleep(ISR_CHECK_EVERY).await;
        let Some(replication) = replication.upgrade() else { return };
        let lag = replication.config.replica_lag_time_max_ms as i64;
        let mut changes = Vec::new();
        let mut asked = Vec::new();
        let mut offline = Vec::new();
        for partition in replication.partitions.all() {
            if partition.is_offline() && partition.is_leader() {
                offline.push((partition.topic_id, partition.index));
                continue;
            }
            if let Some((assignment, isr)) = partition.wanted_isr(lag) {
                tracing::info!(partition = ?partition, from = ?assignment.isr, to = ?isr, "asking for a new ISR");
                partition.isr_change_sent(isr.clone());
                changes.push(IsrChange {
                    topic_id: partition.topic_id,
                    partition: partition.index,
                    leader_epoch: assignment.leader_epoch,
                    partition_epoch: assignment.partition_epoch,
                    isr,
                });
                asked.push((partition, assignment.partition_epoch));
            }
        }
        if !offline.is_empty() && offline_reported.is_none_or(|at| at.elapsed() >= OFFLINE_REPORT_EVERY) {
            offline_reported = Some(std::time::Instant::now());
            report_offline(&replication, offline);
        }
        if changes.is_empty() {
            continue;
        }
        let view = replication.metadata.view();
        let Some(broker_epoch) = view.this_broker().map(|b| b.epoch) else {
            asked.iter().for_each(|(p, epoch)| p.isr_change_refused(*epoch));
            continue;
        };
        let request = ControllerRequest::AlterPartition { broker_id: view.broker_id, broker_epoch, changes };
        let controller = replication.controller.clone();
        drop(replication);
        // The answer is awaited off the loop, so a slow controller does not stop the checks of
        // other partitions (each asks once until its change is answered).
        io::spawn_detached(async move {
            let answer = controller.call(request).await;
            let results = match answer.response {
                Ok(ControllerResponse::Done(results)) => results.into_iter().map(Some).collect(),
                other => {
                    tracing::warn!(answer = ?other, "AlterPartition failed");
                    vec![None; asked.len()]
                }
            };
            for ((partition, epoch), result) in asked.iter().zip(results) {
                match result {
                    // Committed: the metadata brings it. Unknown (no answer): it stays in flight
                    // until the metadata settles it or it is asked again.
                    Some(Ok(())) | None => {}
                    // Sent against an epoch the controller has moved past: the metadata on its
                    // way settles it.
                    Some(Err(ControllerError::InvalidUpdateVersion(_))) => {}
                    Some(Err(err)) => {
                        tracing::info!(partition = ?partition, error = %err, "ISR change refused");
                        partition.isr_change_refused(*epoch);
                    }
                }
            }
        });
    }
}

/// Asks the controller to take the replicas in `offline` (led here, their logs offline) out of
/// their ISRs and give their lead to another in-sync replica; once the log is back, the replica
/// follows, catches up and rejoins like any other.
fn report_offline(replication: &Replication, offline: Vec<(uuid::Uuid, i32)>) {
    let view = replication.metadata.view();
    let Some(broker_epoch) = view.this_broker().map(|b| b.epoch) else { return };
    tracing::warn!(
        partitions = offline.len(),
        "asking the controller to move the lead of partitions whose log is offline"
    );
    let request = ControllerRequest::OfflineReplicas { broker_id: view.broker_id, broker_epoch, partitions: offline };
    let controller = replication.controller.clone();
    io::spawn_detached(async move {
        if let Err(err) = controller.call(request).await.response {
            tracing::warn!(error = %err, "could not move the lead of offline partitions");
        }
    });
}
