//! Making a new metadata image take effect on this broker: a new view (placement of new replicas,
//! configs resolved), then on every shard, on its control lane, the partitions it should no
//! longer host deleted, the new ones opened and changed configs applied, and once every shard has
//! done that, each shard's view replaced (its listeners, such as the group coordinator, hear what
//! changed).
//!
//! Ownership: the [`Publisher`] lives with the controller on shard 0. The work for each shard
//! travels there as a `Send` job carrying the new view (`Arc`, shared read-only) and that shard's
//! list of changes.

use std::collections::BTreeSet;
use std::rc::Rc;
use std::sync::Arc;

use super::image::MetadataImage;
use super::view::{LocalChange, LocalMetadata, MetadataView};
use crate::config::BrokerConfig;
use crate::model::TopicPartition;
use crate::partition::{Assignment, PartitionManager, PartitionOpen};
use crate::shard::{ShardId, Sharded};

/// Publishes images to this broker's shards.
pub struct Publisher {
    view: Arc<MetadataView>,
    config: Arc<BrokerConfig>,
    metadata: Sharded<LocalMetadata>,
    partitions: Sharded<PartitionManager>,
    /// Partitions a shard failed to open, tried again on the next publish or retry.
    failed: BTreeSet<TopicPartition>,
}

impl Publisher {
    /// A publisher whose shards currently hold `view`.
    /// `failed`: partitions the shards could not open at start, tried again later.
    pub fn new(
        view: Arc<MetadataView>,
        config: Arc<BrokerConfig>,
        metadata: Sharded<LocalMetadata>,
        partitions: Sharded<PartitionManager>,
        failed: BTreeSet<TopicPartition>,
    ) -> Self {
        Self { view, config, metadata, partitions, failed }
    }

    /// True when some partition failed to open and waits for [`Publisher::retry`].
    pub fn has_failures(&self) -> bool {
        !self.failed.is_empty()
    }

    /// Whether some shard hosts a partition whose log went offline (a disk error).
    pub async fn any_offline(&self) -> bool {
        let mut asked = Vec::new();
        for shard in 0..self.partitions.shards().count() {
            asked.push(self.partitions.control_on(shard, |partitions| async move { partitions.any_offline() }));
        }
        futures_util::future::join_all(asked).await.into_iter().any(|offline| offline.unwrap_or(false))
    }

    /// Opens again the partitions that failed to open, and reopens (recovering from disk) those
    /// whose logs went offline: the disk may work again (space freed on a full one).
    pub async fn retry(&mut self) {
        let view = self.view.clone();
        self.apply(view, None).await;
    }

    /// Whether the views published let this broker lead (see [`MetadataView::leading`]).
    pub fn leading(&self) -> bool {
        self.view.leading
    }

    /// Publishes the current image again with this broker leading or not.
    pub async fn set_leading(&mut self, leading: bool) {
        let mut next = MetadataView::build(self.view.image.clone(), Some(&self.view), &self.config);
        next.leading = leading;
        let previous = self.view.clone();
        self.apply(Arc::new(next), Some(previous)).await;
    }

    /// Applies `image` on every shard and returns once all of them have.
    pub async fn publish(&mut self, image: Arc<MetadataImage>) {
        let mut next = MetadataView::build(image, Some(&self.view), &self.config);
        next.leading = self.view.leading;
        let next = Arc::new(next);
        let previous = self.view.clone();
        self.apply(next, Some(previous)).await;
    }

    /// Makes every shard match `next` (coming from `previous`, or re-applying `next` itself to
    /// retry failed opens when there is none).
    async fn apply(&mut self, next: Arc<MetadataView>, previous: Option<Arc<MetadataView>>) {
        // Two rounds: every shard opens and deletes its partitions, and only then does any shard
        // take the new view, so a request routed by a view at an index finds every partition that
        // index created open on its shard.
        let mut prepared = Vec::new();
        for shard in 0..self.metadata.shards().count() {
            let mut opens = match &previous {
                Some(previous) => opens_for_shard(&next, Some(previous), shard),
                None => Vec::new(),
            };
            for key in &self.failed {
                if next.placement.shard_of(key) == Some(shard) && !opens.iter().any(|o| (o.topic_id, o.index) == *key) {
                    opens.extend(open_of(&next, key));
                }
            }
            let removes = previous.as_ref().map(|p| removed_from_shard(p, &next, shard)).unwrap_or_default();
            let partitions = self.partitions.clone();
            let retrying = previous.is_none().then(|| next.clone());
            prepared.push(self.metadata.shards().control_on(shard, move || async move {
                let partitions = partitions.local();
                let mut opens = opens;
                // A retry also reopens what went offline, from what is on disk.
                if let Some(view) = retrying {
                    for key in partitions.close_offline().await {
                        tracing::info!(partition = ?key, "reopening a partition whose log went offline");
                        if !opens.iter().any(|o| (o.topic_id, o.index) == key) {
                            opens.extend(open_of(&view, &key));
                        }
                    }
                }
                prepare_on_shard(&partitions, opens, removes).await
            }));
        }
        self.failed.clear();
        let mut changes = Vec::new();
        for result in futures_util::future::join_all(prepared).await {
            match result {
                Ok((change, failed)) => {
                    self.failed.extend(failed);
                    changes.push(Some(change));
                }
                Err(gone) => {
                    tracing::warn!(error = %gone, "a shard stopped before applying metadata");
                    changes.push(None);
                }
            }
        }
        let published = changes.into_iter().enumerate().filter_map(|(shard, change)| {
            let (metadata, view) = (self.metadata.clone(), next.clone());
            let change = change?;
            Some(
                self.metadata
                    .shards()
                    .control_on(shard, move || async move { metadata.local().publish(view, &change) }),
            )
        });
        futures_util::future::join_all(published).await;
        self.view = next;
    }
}

/// The partition layer's form of a partition's replicas.
pub fn assignment_of(partition: &crate::cluster::PartitionImage) -> Assignment {
    Assignment {
        leader: partition.leader,
        leader_epoch: partition.leader_epoch,
        partition_epoch: partition.partition_epoch,
        replicas: partition.replicas.clone(),
        isr: partition.isr.clone(),
    }
}

/// What opening `key` takes under `view`, if the view knows it.
fn open_of(view: &MetadataView, key: &TopicPartition) -> Option<PartitionOpen> {
    let topic = view.topic_by_id(&key.0)?;
    let partition = view.partition(topic, key.1).ok()?;
    Some(PartitionOpen {
        topic: topic.name.clone(),
        topic_id: topic.id,
        index: key.1,
        assignment: assignment_of(partition),
        config: view.config_of(&topic.id)?.partition.clone(),
    })
}

/// The partitions `shard` must open (or reconfigure) to match `view`: those placed on it that
/// `previous` did not have there, or whose config or leader epoch changed since.
pub fn opens_for_shard(view: &MetadataView, previous: Option<&MetadataView>, shard: ShardId) -> Vec<PartitionOpen> {
    let mut opens = Vec::new();
    for (key, owner) in view.placement.iter() {
        if *owner != shard {
            continue;
        }
        let Some(topic) = view.topic_by_id(&key.0) else { continue };
        let Ok(partition) = view.partition(topic, key.1) else { continue };
        let Some(config) = view.config_of(&topic.id) else { continue };
        let unchanged = previous.is_some_and(|p| {
            p.placement.shard_of(key) == Some(shard)
                && p.config_of(&topic.id).is_some_and(|c| Arc::ptr_eq(c, config))
                && p.topic_by_id(&topic.id).and_then(|t| p.partition(t, key.1).ok()).is_some_and(|old| {
                    old.leader_epoch == partition.leader_epoch && old.partition_epoch == partition.partition_epoch
                })
        });
        if !unchanged {
            opens.extend(open_of(view, key));
        }
    }
    opens
}

/// The partitions `shard` hosted under `previous` that `next` no longer places there.
fn removed_from_shard(previous: &MetadataView, next: &MetadataView, shard: ShardId) -> Vec<TopicPartition> {
    previous
        .placement
        .iter()
        .filter(|(key, owner)| **owner == shard && next.placement.shard_of(key) != Some(shard))
        .map(|(key, _)| *key)
        .collect()
}

/// On a shard: deletes `removes` and opens `opens`; returns what changed and the partitions that
/// failed to open (logged; the rest carry on).
async fn prepare_on_shard(
    partitions: &Rc<PartitionManager>,
    opens: Vec<PartitionOpen>,
    removes: Vec<TopicPartition>,
) -> (LocalChange, Vec<TopicPartition>) {
    let mut change = LocalChange::default();
    for key in removes {
        if partitions.delete(&key).await.is_some() {
            change.removed.push(key);
        }
    }
    let mut failed = Vec::new();
    for open in opens {
        let (name, key) = (format!("{}-{}", open.topic, open.index), (open.topic_id, open.index));
        match partitions.open(open).await {
            Ok((partition, true)) => change.opened.push(partition.key()),
            Ok((_, false)) => {}
            Err(err) => {
                tracing::error!(partition = %name, error = %err, "cannot open partition");
                failed.push(key);
            }
        }
    }
    (change, failed)
}

/// On a shard: deletes `removes`, opens `opens`, then makes `view` the shard's view and tells its
/// listeners. A partition that fails to open is logged and returned, and the rest carry on.
pub async fn apply_on_shard(
    local: &Rc<LocalMetadata>,
    partitions: &Rc<PartitionManager>,
    view: Arc<MetadataView>,
    opens: Vec<PartitionOpen>,
    removes: Vec<TopicPartition>,
) -> Result<(), Vec<TopicPartition>> {
    let (change, failed) = prepare_on_shard(partitions, opens, removes).await;
    local.publish(view, &change);
    if failed.is_empty() { Ok(()) } else { Err(failed) }
}
