//! One follower pipeline: this shard's partitions led by one broker, copied over one connection.
//!
//! Each round: partitions with a new leader epoch are first truncated where the leader says
//! their last epoch ended (OffsetForLeaderEpoch); then one Fetch asks for all of them from their
//! log ends, the leader long-polling until there is something (`replica_fetch_wait_max_ms`); what
//! comes back is checked batch by batch (CRC and framing) and appended as it is; under
//! `flush = always` the round ends only once those appends are durable.
//!
//! Ownership: a task on the follower shard; the partition set is replaced by the shard's
//! replication service when the metadata changes.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{OffsetForLeaderPartition, OffsetForLeaderTopic};
use kafka_protocol::messages::{BrokerId as WireBrokerId, FetchRequest, OffsetForLeaderEpochRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::client::{BrokerConnection, ClientError};
use crate::cluster::LocalMetadata;
use crate::config::BrokerConfig;
use crate::io::{self, LocalSignal};
use crate::model::{BrokerId, TopicPartition, batch};
use crate::partition::{PartitionManager, PartitionRef};
use crate::security;
use crate::storage::FlushPolicy;

/// Fetch version the pipelines speak (replica id in the request, last fetched epoch per
/// partition, topics by name).
const FETCH_VERSION: i16 = 12;
/// Pause after a failed connection or request before trying again.
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// How long a refused or failed partition is left out of requests.
const BACKOFF: Duration = Duration::from_millis(100);
/// How long past its long-poll wait a leader may take to answer before the pipeline reconnects.
const ANSWER_MARGIN: Duration = Duration::from_secs(5);
/// Kafka error codes the pipeline reacts to.
const OFFSET_OUT_OF_RANGE: i16 = 1;

/// A partition a pipeline follows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Followed {
    /// Topic name (Fetch v12 names topics).
    pub topic: String,
    /// The leader epoch the metadata gives it.
    pub leader_epoch: i32,
}

struct State {
    followed: Followed,
    /// Truncation is due (a new leader epoch, or the leader said the fetch offset is past its
    /// log).
    truncate: bool,
    /// Refused or failed lately: left out of requests until then (ms), so one broken partition
    /// does not turn the pipeline into a busy loop (Kafka's replica.fetch.backoff.ms).
    backoff_until_ms: i64,
    /// Its log is offline (a disk error), so it is not fetched: logged once each time.
    offline: bool,
}

/// The partitions followed from one leader.
pub struct Pipeline {
    leader: BrokerId,
    partitions: RefCell<HashMap<TopicPartition, State>>,
    changed: LocalSignal,
    stopped: Cell<bool>,
}

impl Pipeline {
    /// A pipeline following `partitions` from `leader`.
    pub fn new(leader: BrokerId, partitions: HashMap<TopicPartition, Followed>) -> Rc<Self> {
        let pipeline = Rc::new(Self {
            leader,
            partitions: RefCell::new(HashMap::new()),
            changed: LocalSignal::new(),
            stopped: Cell::new(false),
        });
        pipeline.set_partitions(partitions);
        pipeline
    }

    /// Follows `partitions` from now on (a partition whose leader epoch changed is truncated
    /// first).
    pub fn set_partitions(&self, partitions: HashMap<TopicPartition, Followed>) {
        let mut current = self.partitions.borrow_mut();
        current.retain(|key, _| partitions.contains_key(key));
        for (key, followed) in partitions {
            match current.get_mut(&key) {
                Some(state) if state.followed == followed => {}
                Some(state) => {
                    state.truncate |= state.followed.leader_epoch != followed.leader_epoch;
                    state.followed = followed;
                }
                None => {
                    current.insert(key, State { followed, truncate: true, backoff_until_ms: 0, offline: false });
                }
            }
        }
        self.changed.notify();
    }

    /// Ends the pipeline.
    pub fn stop(&self) {
        self.stopped.set(true);
        self.changed.notify();
    }
}

/// What one partition of a round needs.
struct Part {
    key: TopicPartition,
    topic: String,
    leader_epoch: i32,
    partition: PartitionRef,
}

/// The pipeline's life: connect to the leader, and run rounds until stopped.
pub async fn run(
    pipeline: Rc<Pipeline>,
    partitions: Rc<PartitionManager>,
    metadata: Rc<LocalMetadata>,
    config: Arc<BrokerConfig>,
) {
    let me = config.broker_id;
    let source = Some(config.listen.ip());
    let listener = config.inter_broker_listener_name.trim().to_ascii_uppercase();
    let mut conn: Option<BrokerConnection> = None;
    // The last reason the leader could not be reached, said once at warn when it is one an
    // operator must fix (a certificate, a password, an ACL), not on every retry.
    let mut said: Option<String> = None;
    while !pipeline.stopped.get() {
        let now = io::now_ms();
        let parts: Vec<Part> = pipeline
            .partitions
            .borrow_mut()
            .iter_mut()
            .filter(|(_, state)| state.backoff_until_ms <= now)
            .filter_map(|(key, state)| {
                let partition = partitions.get(key)?;
                // A replica whose disk failed stops fetching: the leader then takes it out of the
                // ISR after replica_lag_time_max_ms, and every other partition goes on. The
                // publisher reopens it from disk later, and the reopened one follows again.
                let offline = partition.is_offline();
                if offline && !state.offline {
                    tracing::error!(partition = ?partition, "the replica's log is offline after a disk error; it stops following");
                }
                state.offline = offline;
                if offline {
                    return None;
                }
                // Follow only once the partition itself holds this leadership.
                let assignment = partition.assignment();
                (assignment.leader == pipeline.leader && assignment.leader_epoch == state.followed.leader_epoch).then(
                    || Part {
                        key: *key,
                        topic: state.followed.topic.clone(),
                        leader_epoch: state.followed.leader_epoch,
                        partition,
                    },
                )
            })
            .collect();
        if parts.is_empty() {
            let _ = io::timeout(BACKOFF, pipeline.changed.notified()).await;
            continue;
        }
        let connection = match conn.as_ref().filter(|c| !c.is_closed()) {
            Some(c) => c.clone(),
            None => {
                let view = metadata.view();
                let Some(endpoint) = view.image.broker(pipeline.leader).and_then(|b| b.endpoint(&listener)).cloned()
                else {
                    let _ = io::timeout(RETRY_PAUSE, pipeline.changed.notified()).await;
                    continue;
                };
                let addr = format!("{}:{}", endpoint.host, endpoint.port);
                let connected = match security::inter_broker_client(&config).await {
                    Ok(secured) => io::timeout(
                        Duration::from_secs(3),
                        BrokerConnection::connect_from(&addr, "moldau-replica", source, &secured),
                    )
                    .await
                    .unwrap_or_else(|| Err(ClientError::Unavailable("timed out".into()))),
                    Err(reason) => Err(ClientError::Security { addr: addr.clone(), reason }),
                };
                match connected {
                    Ok(c) => {
                        said = None;
                        conn = Some(c.clone());
                        c
                    }
                    Err(err) => {
                        let error = err.to_string();
                        let operator = matches!(err, ClientError::Security { .. } | ClientError::Kafka { .. });
                        if operator && said.as_ref() != Some(&error) {
                            tracing::warn!(leader = pipeline.leader, %addr, %listener, %error, "cannot connect to the leader's inter-broker listener");
                        } else {
                            tracing::debug!(leader = pipeline.leader, %addr, %error, "cannot reach the leader; trying again");
                        }
                        said = Some(error);
                        io::sleep(RETRY_PAUSE).await;
                        continue;
                    }
                }
            }
        };
        if let Err(err) = round(&pipeline, &connection, me, &parts, &config).await {
            tracing::debug!(leader = pipeline.leader, error = %err, "replica fetch failed; reconnecting");
            conn = None;
            io::sleep(RETRY_PAUSE).await;
        }
    }
}

/// One round: truncations due, then one fetch for every partition.
async fn round(
    pipeline: &Pipeline,
    conn: &BrokerConnection,
    me: BrokerId,
    parts: &[Part],
    config: &BrokerConfig,
) -> Result<(), String> {
    let due: Vec<&Part> =
        parts.iter().filter(|p| pipeline.partitions.borrow().get(&p.key).is_some_and(|s| s.truncate)).collect();
    if !due.is_empty() {
        truncate(pipeline, conn, me, &due).await?;
    }
    let fetching: Vec<&Part> =
        parts.iter().filter(|p| pipeline.partitions.borrow().get(&p.key).is_some_and(|s| !s.truncate)).collect();
    if fetching.is_empty() {
        return Ok(());
    }
    let mut by_topic = Vec::new();
    let mut asked: HashMap<(String, i32), &Part> = HashMap::new();
    for part in &fetching {
        let (fetch_offset, last_epoch) = part.partition.fetch_position();
        let request = FetchPartition::default()
            .with_partition(part.key.1)
            .with_current_leader_epoch(part.leader_epoch)
            .with_fetch_offset(fetch_offset)
            .with_last_fetched_epoch(last_epoch)
            .with_log_start_offset(part.partition.status().log_start_offset)
            .with_partition_max_bytes(config.replica_fetch_max_bytes.min(i32::MAX as usize) as i32);
        by_topic.push((part.topic.clone(), request));
        asked.insert((part.topic.clone(), part.key.1), part);
    }
    let request = FetchRequest::default()
        .with_replica_id(WireBrokerId(me))
        .with_max_wait_ms(config.replica_fetch_wait_max_ms.min(i32::MAX as u64) as i32)
        .with_min_bytes(1)
        .with_max_bytes(config.replica_fetch_response_max_bytes.min(i32::MAX as usize) as i32)
        .with_isolation_level(0)
        .with_session_epoch(-1)
        .with_topics(
            group_by_topic(by_topic)
                .into_iter()
                .map(|(name, partitions)| FetchTopic::default().with_topic(name).with_partitions(partitions))
                .collect(),
        );
    // Bounded by the long-poll wait and a margin: over a cut link the connection would wait
    // for ever, and the pipeline must notice a leader change meanwhile.
    let limit = Duration::from_millis(config.replica_fetch_wait_max_ms) + ANSWER_MARGIN;
    let response = io::timeout(limit, conn.send_version(request, FETCH_VERSION))
        .await
        .ok_or("the leader did not answer in time")?
        .map_err(|e| e.to_string())?;
    let now = io::now_ms();
    let mut durable: Vec<(&Part, _)> = Vec::new();
    for topic in response.responses {
        for data in topic.partitions {
            let Some(part) = asked.get(&(topic.topic.as_str().to_owned(), data.partition_index)) else { continue };
            match data.error_code {
                0 => {}
                OFFSET_OUT_OF_RANGE => {
                    let (fetch_offset, _) = part.partition.fetch_position();
                    if data.log_start_offset > fetch_offset {
                        // Before the leader's log start: what is missing is gone there too.
                        if let Err(err) = part.partition.start_at(part.leader_epoch, data.log_start_offset).await {
                            tracing::warn!(partition = ?part.partition, error = %err, "could not start over");
                        }
                    } else if data.high_watermark >= 0 && fetch_offset > data.high_watermark {
                        // Past the leader's log end (its answer carries it): cut there.
                        if let Err(err) = part.partition.truncate_to(part.leader_epoch, data.high_watermark).await {
                            tracing::warn!(partition = ?part.partition, error = %err, "truncation failed");
                        }
                    } else if let Some(state) = pipeline.partitions.borrow_mut().get_mut(&part.key) {
                        state.truncate = true;
                    }
                    back_off(pipeline, part);
                    continue;
                }
                code => {
                    back_off(pipeline, part);
                    // Not (or no longer) its leader, or an epoch either side has not seen yet:
                    // the metadata will say what to do.
                    tracing::debug!(partition = ?part.partition, code, "replica fetch refused");
                    continue;
                }
            }
            let records = data.records.unwrap_or_default();
            let spans = if records.is_empty() {
                Vec::new()
            } else {
                match batch::validate_all_stored(&records, usize::MAX) {
                    Ok(spans) => spans,
                    Err(err) => {
                        tracing::warn!(partition = ?part.partition, error = %err, "leader sent a damaged batch; fetching it again");
                        back_off(pipeline, part);
                        continue;
                    }
                }
            };
            match part.partition.append_replica(part.leader_epoch, records, &spans, data.high_watermark, now).await {
                Ok(done) => {
                    if part.partition.config().log.flush == FlushPolicy::Always && !spans.is_empty() {
                        durable.push((part, done));
                    }
                }
                Err(err) => {
                    tracing::warn!(partition = ?part.partition, error = %err, "replica append failed");
                    back_off(pipeline, part);
                }
            }
            if let Err(err) = part.partition.follow_log_start(data.log_start_offset).await {
                tracing::warn!(partition = ?part.partition, error = %err, "could not follow the leader's log start");
            }
        }
    }
    // Under flush = always the next fetch offset (what the leader counts as replicated) is on
    // this broker's disk.
    // A partition whose write failed (its log is then offline) stops following in the next
    // round; the others' rounds go on.
    for (part, done) in durable {
        if let Err(err) = done.wait().await {
            tracing::warn!(partition = ?part.partition, error = %err, "replica write failed");
        }
    }
    Ok(())
}

/// Truncates the partitions in `due` where the leader says their last epoch ended.
async fn truncate(pipeline: &Pipeline, conn: &BrokerConnection, me: BrokerId, due: &[&Part]) -> Result<(), String> {
    let asked = due.iter().map(|part| {
        let (_, last_epoch) = part.partition.fetch_position();
        let asked = OffsetForLeaderPartition::default()
            .with_partition(part.key.1)
            .with_current_leader_epoch(part.leader_epoch)
            .with_leader_epoch(last_epoch);
        (part.topic.clone(), asked)
    });
    let topics = group_by_topic(asked)
        .into_iter()
        .map(|(name, partitions)| OffsetForLeaderTopic::default().with_topic(name).with_partitions(partitions))
        .collect();
    let request = OffsetForLeaderEpochRequest::default().with_replica_id(WireBrokerId(me)).with_topics(topics);
    let response = io::timeout(ANSWER_MARGIN, conn.send_capped(request, 4))
        .await
        .ok_or("the leader did not answer in time")?
        .map_err(|e| e.to_string())?
        .0;
    for topic in response.topics {
        for answer in topic.partitions {
            let Some(part) = due.iter().find(|p| p.topic == topic.topic.as_str() && p.key.1 == answer.partition) else {
                continue;
            };
            if answer.error_code != 0 {
                tracing::debug!(partition = ?part.partition, code = answer.error_code, "epoch end not answered yet");
                back_off(pipeline, part);
                continue;
            }
            let (log_end, last_epoch) = part.partition.fetch_position();
            let cut = if last_epoch < 0 {
                // Nothing local to compare: nothing to cut.
                log_end
            } else if answer.leader_epoch == last_epoch {
                answer.end_offset.min(log_end)
            } else if answer.leader_epoch >= 0 {
                // The leader's last epoch at or below ours is older: ours diverged where that
                // one ended, on either side.
                let (_, local_end) = part.partition.local_end_of_epoch(answer.leader_epoch);
                answer.end_offset.min(local_end).min(log_end)
            } else {
                // The leader knows no epoch this old or older: keep what it has committed.
                part.partition.high_watermark().min(log_end)
            };
            if cut < log_end
                && let Err(err) = part.partition.truncate_to(part.leader_epoch, cut.max(0)).await
            {
                tracing::warn!(partition = ?part.partition, error = %err, "truncation failed");
                back_off(pipeline, part);
                continue;
            }
            // Done, unless a newer leader epoch came meanwhile (it truncates again).
            if let Some(state) = pipeline.partitions.borrow_mut().get_mut(&part.key)
                && state.followed.leader_epoch == part.leader_epoch
            {
                state.truncate = false;
            }
        }
    }
    Ok(())
}

/// Leaves `part` out of requests for a while (see [`State::backoff_until_ms`]).
fn back_off(pipeline: &Pipeline, part: &Part) {
    if let Some(state) = pipeline.partitions.borrow_mut().get_mut(&part.key) {
        state.backoff_until_ms = io::now_ms() + BACKOFF.as_millis() as i64;
    }
}

/// Requests name each topic once with its partitions: groups `(topic, partition)` pairs by
/// topic, in the order topics first appear.
fn group_by_topic<P>(items: impl IntoIterator<Item = (String, P)>) -> Vec<(TopicName, Vec<P>)> {
    let mut topics: Vec<(TopicName, Vec<P>)> = Vec::new();
    for (topic, partition) in items {
        match topics.iter_mut().find(|(name, _)| name.as_str() == topic) {
            Some((_, partitions)) => partitions.push(partition),
            None => topics.push((TopicName(StrBytes::from_string(topic)), vec![partition])),
        }
    }
    topics
}
