//! Shards: one pinned, single-threaded io_uring executor per core. Each shard owns a set of
//! partitions outright (their logs, indexes, cache and durability waits), accepts connections on
//! its own SO_REUSEPORT listener, and reaches partitions of other shards only by messages over
//! their bounded inboxes. Nothing on the Produce or Fetch path takes a lock.

pub mod messages;
pub mod partition;
pub mod producers;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_channel::oneshot;
use futures_util::FutureExt;

pub use messages::*;
pub use partition::{Partition, PartitionRef, partition_dir};

use crate::cluster::{ClusterMetadata, ControllerCall};
use crate::config::BrokerConfig;
use crate::io::{self, Faults};
use crate::storage::{FlushPolicy, LogContext, ReadCache};
use crate::util::now_ms;

/// Senders to every shard's inbox. Cloned freely; `Send + Sync`.
#[derive(Clone)]
pub struct Router {
    inboxes: Arc<Vec<flume::Sender<ShardMessage>>>,
}

impl Router {
    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        self.inboxes.len()
    }

    /// Sends `message` to `shard`, waiting while its inbox is full (back-pressure). A message to
    /// a shard that has stopped is dropped, which drops its reply sender: the caller sees the
    /// reply channel canceled.
    pub async fn send(&self, shard: usize, message: ShardMessage) {
        let _ = self.inboxes[shard].send_async(message).await;
    }

    /// Sends from a thread outside the shards (the broker's main thread, the metrics server).
    pub fn send_blocking(&self, shard: usize, message: ShardMessage) {
        let _ = self.inboxes[shard].send(message);
    }
}

/// Per-shard counters (plain cells: only the shard's thread touches them).
#[derive(Default)]
pub struct ShardMetrics {
    /// Requests read from connections.
    pub requests: Cell<u64>,
    /// Requests that closed their connection.
    pub request_errors: Cell<u64>,
    /// Partition-level errors returned.
    pub partition_errors: Cell<u64>,
    /// Record bytes appended to this shard's partitions.
    pub produce_bytes: Cell<u64>,
    /// Record bytes read from this shard's partitions.
    pub fetch_bytes: Cell<u64>,
    /// Open connections.
    pub connections: Cell<u64>,
}

impl ShardMetrics {
    /// Adds `n` to a counter.
    pub fn add(cell: &Cell<u64>, n: u64) {
        cell.set(cell.get() + n);
    }
}

/// Everything a shard owns. Lives behind an `Rc` on the shard's thread.
pub struct Shard {
    /// Shard index.
    pub id: usize,
    /// CPU this shard is pinned to.
    pub core: Option<usize>,
    /// Kernel thread id of the shard's thread.
    pub thread_id: i32,
    /// Broker configuration.
    pub config: Arc<BrokerConfig>,
    /// Inboxes of all shards.
    pub router: Router,
    /// Counters.
    pub metrics: ShardMetrics,
    metadata: RefCell<Arc<ClusterMetadata>>,
    partitions: RefCell<HashMap<TopicPartition, PartitionRef>>,
    log_context: LogContext,
    controller: RefCell<Option<flume::Sender<ControllerCall>>>,
    connection_stops: RefCell<HashMap<u64, oneshot::Sender<()>>>,
    next_connection_id: Cell<u64>,
    stopping: Cell<bool>,
    /// This shard's block of producer ids: next to hand out, and the end of the block.
    producer_ids: Cell<(i64, i64)>,
    /// Consumer groups coordinated by this shard.
    pub(crate) groups: RefCell<crate::group::GroupCoordinator>,
}

impl Shard {
    /// The current metadata snapshot.
    pub fn metadata(&self) -> Arc<ClusterMetadata> {
        self.metadata.borrow().clone()
    }

    /// A partition owned by this shard.
    pub fn partition(&self, key: &TopicPartition) -> Option<PartitionRef> {
        self.partitions.borrow().get(key).cloned()
    }

    /// Number of partitions owned.
    pub fn partition_count(&self) -> usize {
        self.partitions.borrow().len()
    }

    /// The broker's flush policy.
    pub fn flush_policy(&self) -> FlushPolicy {
        self.config.flush_policy()
    }

    /// True once shutdown has begun.
    pub fn is_stopping(&self) -> bool {
        self.stopping.get()
    }

    /// Registers a connection; the receiver completes when the shard shuts down.
    pub fn register_connection(&self) -> Option<(u64, oneshot::Receiver<()>)> {
        if self.stopping.get() || self.connection_stops.borrow().len() >= self.config.max_connections_per_shard {
            return None;
        }
        let id = self.next_connection_id.get();
        self.next_connection_id.set(id + 1);
        let (tx, rx) = oneshot::channel();
        self.connection_stops.borrow_mut().insert(id, tx);
        ShardMetrics::add(&self.metrics.connections, 1);
        Some((id, rx))
    }

    /// Forgets a finished connection.
    pub fn unregister_connection(&self, id: u64) {
        if self.connection_stops.borrow_mut().remove(&id).is_some() {
            self.metrics.connections.set(self.metrics.connections.get() - 1);
        }
    }

    /// A producer id never handed out before (blocks of ids come from the controller).
    pub async fn next_producer_id(&self) -> Result<i64, crate::cluster::ControllerError> {
        const BLOCK: i64 = 1000;
        let (next, end) = self.producer_ids.get();
        if next < end {
            self.producer_ids.set((next + 1, end));
            return Ok(next);
        }
        let (reply, rx) = oneshot::channel();
        self.router
            .send(0, ShardMessage::Controller(ControllerCall::AllocateProducerIds { count: BLOCK, reply }))
            .await;
        let first =
            rx.await.map_err(|_| crate::cluster::ControllerError::Storage("controller unavailable".into()))??;
        self.producer_ids.set((first + 1, first + BLOCK));
        Ok(first)
    }

    fn stats(&self) -> ShardStats {
        let cache = self.log_context.cache.borrow().stats();
        ShardStats {
            shard: self.id,
            core: self.core,
            thread_id: self.thread_id,
            partitions: self.partition_count(),
            connections: self.metrics.connections.get(),
            requests: self.metrics.requests.get(),
            request_errors: self.metrics.request_errors.get(),
            partition_errors: self.metrics.partition_errors.get(),
            produce_bytes: self.metrics.produce_bytes.get(),
            fetch_bytes: self.metrics.fetch_bytes.get(),
            cache_bytes: cache.used_bytes,
            cache_hits: cache.hits,
            cache_misses: cache.misses,
        }
    }
}

/// What a shard thread is started with.
pub struct ShardStart {
    /// Shard index.
    pub id: usize,
    /// CPU to pin to.
    pub core: Option<core_affinity::CoreId>,
    /// Broker configuration.
    pub config: Arc<BrokerConfig>,
    /// All inboxes.
    pub router: Router,
    /// This shard's inbox.
    pub inbox: flume::Receiver<ShardMessage>,
    /// Metadata replayed at start.
    pub metadata: Arc<ClusterMetadata>,
    /// Failure injection for this shard's files.
    pub faults: Faults,
    /// Told once the shard has opened its partitions and is listening (or failed to).
    pub ready: std::sync::mpsc::Sender<Result<usize, String>>,
    /// For shard 0, which runs the controller: the metadata log.
    pub controller: Option<crate::cluster::MetadataLog>,
}

/// Creates the inboxes for `count` shards.
pub fn inboxes(count: usize, capacity: usize) -> (Router, Vec<flume::Receiver<ShardMessage>>) {
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..count).map(|_| flume::bounded(capacity)).unzip();
    (Router { inboxes: Arc::new(senders) }, receivers)
}

/// Body of a shard thread: pins itself, builds its executor and runs until shutdown.
pub fn run_shard_thread(start: ShardStart) {
    let pinned = start.core.filter(|core| core_affinity::set_for_current(*core)).map(|c| c.id);
    let runtime = match io::new_runtime() {
        Ok(rt) => rt,
        Err(err) => {
            let _ = start.ready.send(Err(format!("shard {}: cannot start io_uring runtime: {err}", start.id)));
            return;
        }
    };
    runtime.block_on(run_shard(start, pinned));
}

async fn run_shard(start: ShardStart, pinned: Option<usize>) {
    let ShardStart { id, config, router, inbox, metadata, faults, ready, controller, .. } = start;
    let shard = Rc::new(Shard {
        id,
        core: pinned,
        // SAFETY: gettid has no preconditions.
        thread_id: unsafe { libc::gettid() },
        config: config.clone(),
        router: router.clone(),
        metrics: ShardMetrics::default(),
        metadata: RefCell::new(metadata.clone()),
        partitions: RefCell::new(HashMap::new()),
        log_context: LogContext { cache: Rc::new(RefCell::new(ReadCache::new(config.cache_bytes_per_shard))), faults },
        controller: RefCell::new(None),
        connection_stops: RefCell::new(HashMap::new()),
        next_connection_id: Cell::new(0),
        stopping: Cell::new(false),
        producer_ids: Cell::new((0, 0)),
        groups: RefCell::new(crate::group::GroupCoordinator::default()),
    });
    if let Err(err) = apply_metadata(&shard, metadata).await {
        let _ = ready.send(Err(format!("shard {id}: {err}")));
        return;
    }
    if let Some(log) = controller {
        // Controller calls are handled one at a time, in arrival order, by one task.
        let (calls, inbox) = flume::unbounded();
        *shard.controller.borrow_mut() = Some(calls);
        let current = shard.metadata();
        io::spawn_detached(crate::cluster::run_controller(inbox, log, current, config.clone(), router.clone()));
    }
    let listener = match io::net::reuseport_listener(config.listen, 1024) {
        Ok(listener) => listener,
        Err(err) => {
            let _ = ready.send(Err(format!("shard {id}: cannot listen on {}: {err}", config.listen)));
            return;
        }
    };
    let accept = io::spawn(accept_loop(shard.clone(), listener));
    let retention = io::spawn(retention_loop(shard.clone()));
    io::spawn_detached(crate::group::run_group_ticker(shard.clone()));
    let _ = ready.send(Ok(shard.partition_count()));
    tracing::debug!(shard = id, core = ?pinned, "shard ready");
    message_loop(&shard, inbox, accept, retention).await;
}

async fn accept_loop(shard: Rc<Shard>, listener: io::net::TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let Some((conn_id, stop)) = shard.register_connection() else {
                    tracing::warn!(shard = shard.id, %peer, "connection refused: shard at max_connections_per_shard");
                    drop(stream);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let shard = shard.clone();
                io::spawn_detached(async move {
                    crate::kafka::connection::serve(shard.clone(), stream, peer, stop).await;
                    shard.unregister_connection(conn_id);
                });
            }
            Err(err) => {
                tracing::warn!(shard = shard.id, error = %err, "accept failed");
                io::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn retention_loop(shard: Rc<Shard>) {
    let interval = Duration::from_millis(shard.config.log_retention_check_interval_ms.max(10));
    loop {
        io::sleep(interval).await;
        let partitions: Vec<PartitionRef> = shard.partitions.borrow().values().cloned().collect();
        for partition in partitions {
            partition.maybe_snapshot_producers(now_ms());
            match partition.log.enforce_retention(now_ms()).await {
                Ok(outcome) if outcome.segments_deleted > 0 => {
                    tracing::info!(
                        partition = ?partition,
                        segments = outcome.segments_deleted,
                        bytes = outcome.bytes_deleted,
                        log_start_offset = outcome.log_start_offset,
                        "retention"
                    );
                    // The next partition's unlinks wait too (see `UNLINK_PACE`).
                    io::sleep(crate::storage::UNLINK_PACE).await;
                }
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(partition = ?partition, error = %err, "retention failed")
                }
            }
        }
    }
}

async fn message_loop(
    shard: &Rc<Shard>,
    inbox: flume::Receiver<ShardMessage>,
    accept: io::Task<()>,
    retention: io::Task<()>,
) {
    let mut accept = Some(accept);
    let mut retention = Some(retention);
    while let Ok(message) = inbox.recv_async().await {
        match message {
            ShardMessage::Produce(call) => produce_local(shard, call),
            ShardMessage::Fetch(call) => io::spawn_detached(fetch_local(shard.clone(), call)),
            ShardMessage::Watch(call) => watch_local(shard, call),
            ShardMessage::ListOffsets(call) => io::spawn_detached(list_offsets_local(shard.clone(), call)),
            ShardMessage::DeleteRecords(call) => io::spawn_detached(delete_records_local(shard.clone(), call)),
            ShardMessage::Status { parts, reply } => {
                let status = parts.iter().map(|key| shard.partition(key).map(|p| p.status())).collect();
                let _ = reply.send(status);
            }
            ShardMessage::Metadata { snapshot, reply } => {
                if let Err(err) = apply_metadata(shard, snapshot).await {
                    tracing::error!(shard = shard.id, error = %err, "applying metadata failed");
                }
                let _ = reply.send(());
            }
            ShardMessage::Controller(call) => {
                let controller = shard.controller.borrow().clone();
                match controller {
                    Some(controller) => {
                        let _ = controller.send_async(call).await;
                    }
                    None => tracing::error!(shard = shard.id, "controller call sent to a shard without the controller"),
                }
            }
            ShardMessage::Group(call) => io::spawn_detached(crate::group::handle_call(shard.clone(), call)),
            ShardMessage::Stats(reply) => {
                let _ = reply.send(shard.stats());
            }
            ShardMessage::Shutdown(reply) => {
                drop(accept.take());
                drop(retention.take());
                shutdown(shard).await;
                let _ = reply.send(());
                break;
            }
        }
    }
}

/// Stops accepting, lets connections finish what they are doing (up to the grace period), then
/// flushes and closes every log.
async fn shutdown(shard: &Rc<Shard>) {
    shard.stopping.set(true);
    let stops: Vec<oneshot::Sender<()>> = shard.connection_stops.borrow_mut().drain().map(|(_, s)| s).collect();
    for stop in stops {
        let _ = stop.send(());
    }
    let deadline = std::time::Instant::now() + Duration::from_millis(shard.config.shutdown_grace_ms);
    while shard.metrics.connections.get() > 0 && std::time::Instant::now() < deadline {
        io::sleep(Duration::from_millis(10)).await;
    }
    let partitions: Vec<PartitionRef> = shard.partitions.borrow_mut().drain().map(|(_, p)| p).collect();
    for partition in partitions {
        if let Err(err) = partition.close().await {
            tracing::error!(partition = ?partition, error = %err, "closing log failed");
        }
    }
    tracing::debug!(shard = shard.id, "shard stopped");
}

/// Opens partitions this shard now owns, deletes those whose topic is gone, and passes config
/// changes to open logs.
async fn apply_metadata(shard: &Rc<Shard>, snapshot: Arc<ClusterMetadata>) -> Result<(), String> {
    let mut wanted = HashMap::new();
    for topic in snapshot.topics.values() {
        for p in &topic.partitions {
            if p.shard == shard.id {
                wanted.insert((topic.id, p.index), (topic.clone(), p.leader_epoch));
            }
        }
    }
    let existing: Vec<TopicPartition> = shard.partitions.borrow().keys().copied().collect();
    for key in existing {
        if !wanted.contains_key(&key) {
            let partition = shard.partitions.borrow_mut().remove(&key);
            if let Some(partition) = partition {
                if partition.topic == crate::cluster::CONSUMER_OFFSETS_TOPIC {
                    crate::group::unload_partition(shard, key.1);
                }
                tracing::info!(partition = ?partition, "deleting partition");
                if let Err(err) = partition.log.delete().await {
                    tracing::error!(partition = ?partition, error = %err, "deleting partition log failed");
                }
            }
        }
    }
    let mut opened_offsets: Vec<TopicPartition> = Vec::new();
    for (key, (topic, epoch)) in wanted {
        if let Some(partition) = shard.partition(&key) {
            partition.set_config(topic.config.clone());
            continue;
        }
        let partition = Partition::open(
            &shard.config.data_dir,
            &topic.name,
            topic.id,
            key.1,
            epoch,
            topic.config.clone(),
            &shard.log_context,
        )
        .await
        .map_err(|e| format!("opening {}-{}: {e}", topic.name, key.1))?;
        shard.partitions.borrow_mut().insert(key, Rc::new(partition));
        if topic.name == crate::cluster::CONSUMER_OFFSETS_TOPIC {
            opened_offsets.push(key);
        }
    }
    *shard.metadata.borrow_mut() = snapshot;
    for key in opened_offsets {
        // Groups of this partition answer COORDINATOR_LOAD_IN_PROGRESS until it is loaded.
        shard.groups.borrow_mut().begin_load(key.1);
        io::spawn_detached(crate::group::load_partition(shard.clone(), key));
    }
    Ok(())
}

fn produce_local(shard: &Rc<Shard>, call: ProduceCall) {
    let ProduceCall { parts, wait_durable, timeout, reply } = call;
    let now = now_ms();
    let mut results = Vec::with_capacity(parts.len());
    let mut waits = Vec::new();
    for part in parts {
        let Some(partition) = shard.partition(&part.partition) else {
            results.push(Err(PartitionError::UnknownTopicOrPartition));
            continue;
        };
        let bytes = part.records.len() as u64;
        match partition.log.append(part.records, &part.spans, partition.leader_epoch, now) {
            Ok(info) => {
                ShardMetrics::add(&shard.metrics.produce_bytes, bytes);
                waits.push((results.len(), partition.log.clone(), info.durable));
                results.push(Ok(Appended {
                    base_offset: info.base_offset,
                    log_append_time_ms: info.log_append_time_ms.unwrap_or(-1),
                    log_start_offset: info.log_start_offset,
                }));
            }
            Err(err) => results.push(Err(err.into())),
        }
    }
    let wait_durable = wait_durable && shard.flush_policy() == FlushPolicy::Always;
    io::spawn_detached(async move {
        for (i, log, durable) in waits {
            log.wait_for_write_room().await;
            if wait_durable {
                match io::timeout(timeout, durable.wait()).await {
                    None => results[i] = Err(PartitionError::Timeout),
                    Some(Err(err)) => results[i] = Err(err.into()),
                    Some(Ok(())) => {}
                }
            }
        }
        let _ = reply.send(results);
    });
}

async fn fetch_local(shard: Rc<Shard>, call: FetchCall) {
    let mut results = Vec::with_capacity(call.parts.len());
    for part in &call.parts {
        let result = match shard.partition(&part.partition) {
            None => Err(PartitionError::UnknownTopicOrPartition),
            Some(partition) => partition.fetch(part.offset, part.max_bytes, part.current_leader_epoch).await,
        };
        if let Ok(fetched) = &result {
            let bytes: usize = fetched.records.iter().map(|b| b.len()).sum();
            ShardMetrics::add(&shard.metrics.fetch_bytes, bytes as u64);
        }
        results.push(result);
    }
    let _ = call.reply.send(results);
}

fn watch_local(shard: &Rc<Shard>, call: WatchCall) {
    let mut receivers = Vec::new();
    for (key, offset) in &call.parts {
        match shard.partition(key) {
            // A partition that vanished counts as "something happened": the fetch re-reads.
            None => {
                let _ = call.reply.send(());
                return;
            }
            Some(partition) => match partition.watch(*offset) {
                None => {
                    let _ = call.reply.send(());
                    return;
                }
                Some(rx) => receivers.push(rx),
            },
        }
    }
    let mut reply = call.reply;
    if receivers.is_empty() {
        let _ = reply.send(());
        return;
    }
    io::spawn_detached(async move {
        let any_data = futures_util::future::select_all(receivers.into_iter().map(|r| r.boxed_local()));
        let canceled = reply.cancellation();
        futures_util::pin_mut!(canceled);
        futures_util::future::select(any_data, canceled).await;
        let _ = reply.send(());
    });
}

async fn list_offsets_local(shard: Rc<Shard>, call: ListOffsetsCall) {
    let mut results = Vec::with_capacity(call.parts.len());
    for (key, timestamp, epoch) in &call.parts {
        results.push(match shard.partition(key) {
            None => Err(PartitionError::UnknownTopicOrPartition),
            Some(partition) => partition.list_offset(*timestamp, *epoch).await,
        });
    }
    let _ = call.reply.send(results);
}

async fn delete_records_local(shard: Rc<Shard>, call: DeleteRecordsCall) {
    let mut results = Vec::with_capacity(call.parts.len());
    for (key, offset) in &call.parts {
        results.push(match shard.partition(key) {
            None => Err(PartitionError::UnknownTopicOrPartition),
            Some(partition) => partition.delete_records(*offset).await,
        });
    }
    let _ = call.reply.send(results);
}
