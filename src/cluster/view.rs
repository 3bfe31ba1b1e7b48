//! This broker's view of the cluster: the latest metadata image, which of its partitions this
//! broker hosts and on which shard, and each topic's configuration resolved against this broker's
//! defaults. Request handlers read it on every request, so it is built once per change.
//!
//! Ownership: a [`MetadataView`] is immutable and shared as an `Arc` by every shard. Each shard
//! holds the current one in its [`LocalMetadata`] (shard-local, `!Send`), replaced by the
//! publisher on the shard's control lane.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_channel::oneshot;

use uuid::Uuid;

use super::image::{MetadataImage, PartitionImage, TopicImage};
use super::topic_config::TopicConfig;
use crate::config::BrokerConfig;
use crate::io;
use crate::model::{BrokerId, TopicPartition};
use crate::shard::{Placement, ShardId};

/// Why a partition could not be located on this broker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocateError {
    /// No such topic or partition.
    Unknown,
    /// The partition exists but this broker does not host it (or is not its leader).
    NotHere,
}

/// This broker's view of the cluster at one point.
#[derive(Debug)]
pub struct MetadataView {
    /// The cluster's metadata.
    pub image: Arc<MetadataImage>,
    /// Which shard hosts each replica this broker holds.
    pub placement: Arc<Placement>,
    /// This broker's id.
    pub broker_id: BrokerId,
    /// False while this broker fences itself (cut off from the active controller for longer than
    /// its session): it then leads nothing, whatever the image says.
    pub leading: bool,
    configs: HashMap<Uuid, Arc<TopicConfig>>,
    /// This broker's configuration with the cluster's dynamic broker configs applied (the
    /// defaults topics are resolved against).
    broker_config: Arc<BrokerConfig>,
    /// The dynamic broker configs applied, cluster-wide then this broker's own.
    dynamic: Vec<(String, String)>,
}

impl MetadataView {
    /// The view of `image` for broker `broker`: its replicas placed over `shards` shards starting
    /// from `previous` (replicas already placed keep their shard), and topic configs resolved
    /// against `config` (reusing `previous`'s when a topic's overrides did not change).
    pub fn build(image: Arc<MetadataImage>, previous: Option<&MetadataView>, config: &BrokerConfig) -> Self {
        let broker = config.broker_id;
        let dynamic: Vec<(String, String)> =
            image.dynamic_broker_configs(broker).into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
        let same_defaults = previous.filter(|p| p.dynamic == dynamic);
        let broker_config = match same_defaults {
            Some(previous) => previous.broker_config.clone(),
            None => match config.with_dynamic(dynamic.iter().map(|(k, v)| (k.as_str(), v.as_str()))) {
                Ok(effective) => Arc::new(effective),
                // The controller checked them; a broker of another version may still refuse one.
                Err(err) => {
                    tracing::warn!(error = %err, "dynamic broker configs not applied");
                    Arc::new(config.clone())
                }
            },
        };
        let mut hosted: Vec<(&str, TopicPartition)> = Vec::new();
        let mut configs = HashMap::with_capacity(image.topic_count());
        for topic in image.topics() {
            let reused =
                same_defaults.and_then(|p| p.configs.get(&topic.id)).filter(|c| c.overrides == topic.configs).cloned();
            configs.insert(
                topic.id,
                reused.unwrap_or_else(|| {
                    Arc::new(TopicConfig::resolve(topic.configs.clone(), &broker_config, topic.internal))
                }),
            );
            for p in &topic.partitions {
                if p.replicas.contains(&broker) {
                    hosted.push((&topic.name, (topic.id, p.index)));
                }
            }
        }
        // New replicas are placed in name order, so a topic's partitions spread round-robin.
        hosted.sort_unstable_by(|a, b| (a.0, a.1.1).cmp(&(b.0, b.1.1)));
        let shards = config.shard_count();
        let placement = match previous {
            Some(p) => p.placement.reconciled(hosted.into_iter().map(|(_, tp)| tp)),
            None => Placement::new(shards).reconciled(hosted.into_iter().map(|(_, tp)| tp)),
        };
        Self {
            image,
            placement: Arc::new(placement),
            broker_id: broker,
            leading: true,
            configs,
            broker_config,
            dynamic,
        }
    }

    /// This broker's configuration as it stands: as started, with the dynamic broker configs
    /// applied.
    pub fn broker_config(&self) -> &Arc<BrokerConfig> {
        &self.broker_config
    }

    /// Where a dynamic broker config's value comes from, if one is set: this broker's own
    /// (`true`) or the cluster-wide default (`false`).
    pub fn dynamic_source(&self, name: &str) -> Option<bool> {
        let own = self.broker_id.to_string();
        if self.image.broker_configs.get(&own).is_some_and(|c| c.contains_key(name)) {
            Some(true)
        } else if self.image.broker_configs.get("").is_some_and(|c| c.contains_key(name)) {
            Some(false)
        } else {
            None
        }
    }

    /// The controller id told to clients: this broker, which forwards whatever a controller
    /// must do to the active one (as Kafka's brokers in KRaft mode answer with a live broker).
    pub fn controller_id(&self) -> BrokerId {
        self.broker_id
    }

    /// This broker's registration, once the controller has recorded it.
    pub fn this_broker(&self) -> Option<&crate::cluster::BrokerRegistration> {
        self.image.broker(self.broker_id)
    }

    /// A topic by name.
    pub fn topic(&self, name: &str) -> Option<&Arc<TopicImage>> {
        self.image.topic(name)
    }

    /// A topic by id.
    pub fn topic_by_id(&self, id: &Uuid) -> Option<&Arc<TopicImage>> {
        self.image.topic_by_id(id)
    }

    /// A topic's configuration on this broker.
    pub fn config_of(&self, topic_id: &Uuid) -> Option<&Arc<TopicConfig>> {
        self.configs.get(topic_id)
    }

    /// The shard hosting `partition` here, when this broker leads it.
    pub fn leader_shard(&self, topic: &TopicImage, index: i32) -> Result<(TopicPartition, ShardId), LocateError> {
        let partition = self.partition(topic, index)?;
        let key = (topic.id, index);
        match self.placement.shard_of(&key) {
            Some(shard) if partition.leader == self.broker_id && self.leading => Ok((key, shard)),
            _ => Err(LocateError::NotHere),
        }
    }

    /// The shard hosting `partition` here when this broker holds a replica of it, leading or
    /// following (a consumer sent to a follower, KIP-392).
    pub fn replica_shard(&self, topic: &TopicImage, index: i32) -> Result<(TopicPartition, ShardId), LocateError> {
        let partition = self.partition(topic, index)?;
        let key = (topic.id, index);
        match self.placement.shard_of(&key) {
            Some(shard) if partition.replicas.contains(&self.broker_id) => Ok((key, shard)),
            _ => Err(LocateError::NotHere),
        }
    }

    /// The replica a consumer in `rack` should read `partition` from, when that is not this
    /// leader: a live in-sync follower in that rack (Kafka's RackAwareReplicaSelector), unless
    /// this broker is in the rack itself.
    pub fn preferred_read_replica(&self, topic: &TopicImage, index: i32, rack: &str) -> Option<BrokerId> {
        if rack.is_empty() || self.image.broker(self.broker_id).and_then(|b| b.rack.as_deref()) == Some(rack) {
            return None;
        }
        let partition = self.partition(topic, index).ok()?;
        partition.isr.iter().copied().find(|b| {
            *b != self.broker_id
                && self.image.is_live(*b)
                && self.image.broker(*b).and_then(|r| r.rack.as_deref()) == Some(rack)
        })
    }

    /// Partition `index` of `topic`.
    pub fn partition<'a>(&self, topic: &'a TopicImage, index: i32) -> Result<&'a PartitionImage, LocateError> {
        topic.partition(index).ok_or(LocateError::Unknown)
    }

    /// [`MetadataView::leader_shard`] by topic name.
    pub fn locate(&self, name: &str, index: i32) -> Result<(TopicPartition, ShardId), LocateError> {
        let topic = self.topic(name).ok_or(LocateError::Unknown)?;
        self.leader_shard(topic, index)
    }
}

/// What changed on this shard when a new view was applied.
#[derive(Debug, Default)]
pub struct LocalChange {
    /// Partitions this shard opened.
    pub opened: Vec<TopicPartition>,
    /// Partitions this shard stopped hosting.
    pub removed: Vec<TopicPartition>,
}

type Listener = Box<dyn Fn(&MetadataView, &LocalChange)>;

/// A shard's current view, and the shard-local services told when it changes.
pub struct LocalMetadata {
    view: RefCell<Arc<MetadataView>>,
    listeners: RefCell<Vec<Listener>>,
    /// Tasks waiting for the view to reach a metadata index.
    waiters: RefCell<Vec<(u64, oneshot::Sender<()>)>>,
}

impl LocalMetadata {
    /// Starts from `view`.
    pub fn new(view: Arc<MetadataView>) -> Self {
        Self { view: RefCell::new(view), listeners: RefCell::new(Vec::new()), waiters: RefCell::new(Vec::new()) }
    }

    /// Waits until this shard's view holds metadata log entry `index` (a change this broker
    /// asked for), or `timeout`; true once it does.
    pub async fn wait_for(&self, index: u64, timeout: Duration) -> bool {
        if self.view().image.applied_index >= index {
            return true;
        }
        let (tx, rx) = oneshot::channel();
        self.waiters.borrow_mut().push((index, tx));
        matches!(io::timeout(timeout, rx).await, Some(Ok(())))
    }

    /// The current view.
    pub fn view(&self) -> Arc<MetadataView> {
        self.view.borrow().clone()
    }

    /// Calls `listener` after every change applied on this shard (with the new view).
    pub fn subscribe(&self, listener: impl Fn(&MetadataView, &LocalChange) + 'static) {
        self.listeners.borrow_mut().push(Box::new(listener));
    }

    /// Replaces the view and tells the listeners what changed here.
    pub fn publish(&self, view: Arc<MetadataView>, change: &LocalChange) {
        *self.view.borrow_mut() = view.clone();
        for listener in self.listeners.borrow().iter() {
            listener(&view, change);
        }
        let applied = view.image.applied_index;
        let reached: Vec<_> = {
            let mut waiters = self.waiters.borrow_mut();
            let (reached, waiting) = waiters.drain(..).partition(|(index, tx)| *index <= applied || tx.is_canceled());
            *waiters = waiting;
            reached
        };
        for (_, tx) in reached {
            let _ = tx.send(());
        }
    }
}
