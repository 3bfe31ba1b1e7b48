//! Produce: validate batches on the receiving shard, split the request buffer into per-partition
//! pieces without copying, send each piece to the shard that owns its partition, and answer once
//! every owner has appended (and, for acks=1/-1 under `flush = always`, made it durable).

use std::rc::Rc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, LeaderIdAndEpoch, NodeEndpoint, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ApiKey, BrokerId as BrokerIdWire, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::{RequestError, encode, locate_in, respond, scatter};
use crate::kafka::connection::{Connection, PendingResponse, ResponseBody};
use crate::kafka::errors::{batch_error, partition_error};
use crate::kafka::frame::RequestFrame;
use crate::kafka::produce_request;
use crate::kafka::server::KafkaMetrics;
use crate::model::batch;
use crate::model::batch::BatchError;
use crate::model::records::recompress;
use crate::model::validate::{RecordRules, check_records};
use crate::model::{BatchSpan, TopicPartition};
use crate::partition::{Acks, Appended, PartitionError, PartitionManager};
use crate::security::acl;
use crate::security::quota::QuotaKind;

/// Longest a Produce waits for its acknowledgement, whatever the client asks.
const MAX_PRODUCE_TIMEOUT_MS: i32 = 300_000;

thread_local! {
    /// This shard's buffer for decompressing produced batches to check their records.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

struct Slot {
    response: PartitionProduceResponse,
}

impl Slot {
    fn fail(&mut self, code: ResponseError, message: Option<String>) {
        self.response.error_code = code.code();
        self.response.base_offset = -1;
        self.response.error_message = message.map(StrBytes::from_string);
    }
}

/// Handles a Produce request; the returned future completes with the response (or nothing for
/// acks=0) once the owning shards have answered.
pub async fn handle(conn: &Rc<Connection>, frame: RequestFrame) -> Result<PendingResponse, RequestError> {
    let RequestFrame { header, body, .. } = frame;
    let version = header.api_version;
    let request = produce_request::parse(&body, version).map_err(|e| RequestError::Malformed {
        key: ApiKey::Produce,
        version,
        reason: e.to_string(),
    })?;
    // The request's size counts against the client's produce quota (KIP-13); over it, the
    // response says how long to back off and the connection is muted that long.
    let throttle_ms = conn.charge(QuotaKind::Produce, body.len() as f64).max(conn.request_throttle_ms.get());
    let metadata = conn.ctx.view();
    let acks = Acks::from_wire(request.acks);
    let mut slots: Vec<Slot> = Vec::new();
    let mut shape: Vec<(Option<String>, uuid::Uuid, usize)> = Vec::new();
    // (owning shard, slot, records range, spans)
    let mut accepted = Vec::new();
    // One clock reading for the request's record-timestamp checks.
    let now = crate::io::now_ms();
    for topic in &request.topics {
        shape.push((topic.name.clone(), topic.topic_id, topic.partitions.len()));
        let found = match &topic.name {
            Some(name) => metadata.topic(name),
            None => metadata.topic_by_id(&topic.topic_id),
        };
        // WRITE on the topic, checked once per topic (before whether it exists, as Kafka does).
        let name = topic.name.clone().or_else(|| found.map(|t| t.name.clone()));
        let authorized = name.is_none_or(|name| conn.allowed(acl::op::WRITE, acl::resource::TOPIC, &name));
        for partition in &topic.partitions {
            let slot = slots.len();
            slots.push(Slot {
                response: PartitionProduceResponse::default()
                    .with_index(partition.index)
                    .with_base_offset(-1)
                    .with_log_append_time_ms(-1)
                    .with_log_start_offset(-1),
            });
            let slot_ref = &mut slots[slot];
            if acks.is_none() {
                slot_ref.fail(ResponseError::InvalidRequiredAcks, None);
                continue;
            }
            if !authorized {
                slot_ref.fail(ResponseError::TopicAuthorizationFailed, None);
                continue;
            }
            if request.transactional_id.is_some() {
                slot_ref.fail(
                    ResponseError::TransactionalIdAuthorizationFailed,
                    Some("transactions are not supported by this broker".into()),
                );
                continue;
            }
            let Some(topic_meta) = found else {
                let code = if topic.name.is_some() {
                    ResponseError::UnknownTopicOrPartition
                } else {
                    ResponseError::UnknownTopicId
                };
                slot_ref.fail(code, None);
                continue;
            };
            if topic_meta.internal {
                slot_ref.fail(
                    ResponseError::InvalidTopicException,
                    Some(format!("cannot produce to internal topic {}", topic_meta.name)),
                );
                continue;
            }
            let (key, shard) = match locate_in(&metadata, topic_meta, partition.index) {
                Ok(found) => found,
                Err(code) => {
                    slot_ref.fail(code, None);
                    continue;
                }
            };
            let Some(range) = partition.records.clone() else {
                slot_ref.fail(ResponseError::InvalidRecord, Some("null records".into()));
                continue;
            };
            let config = metadata.config_of(&topic_meta.id);
            let max_message_bytes = config.map_or(usize::MAX, |c| c.log().max_message_bytes);
            let rules = RecordRules {
                require_keys: config.is_some_and(|c| c.compacted()),
                timestamps: config.and_then(|c| c.timestamp_window(now)),
            };
            let target_codec = config.and_then(|c| c.compression);
            let checked = batch::validate_all(&body[range.clone()], max_message_bytes).and_then(|spans| {
                let [span] = spans.as_slice() else { return Ok((spans, None)) };
                let bytes = &body[range.start + span.start..range.start + span.end()];
                SCRATCH.with_borrow_mut(|scratch| check_records(bytes, &span.header, &rules, scratch))?;
                // compression.type names another codec than the producer's: stored recompressed.
                match target_codec.filter(|codec| *codec != span.header.compression()) {
                    Some(codec) => {
                        let rewritten = recompress(bytes, codec)
                            .map_err(|e| BatchError::Corrupt(format!("cannot recompress the batch: {e}")))?;
                        let spans = batch::validate_all(&rewritten, max_message_bytes)?;
                        Ok((spans, Some(rewritten)))
                    }
                    None => Ok((spans, None)),
                }
            });
            match checked {
                Ok((spans, _)) if spans.len() > 1 => slot_ref.fail(
                    ResponseError::InvalidRecord,
                    Some(format!("{} record batches for one partition; Produce v3+ allows exactly one", spans.len())),
                ),
                Ok((spans, rewritten)) => accepted.push((shard, slot, (key, range, spans, rewritten))),
                Err(err) => {
                    slot_ref.response.record_errors = if version >= 8 {
                        vec![BatchIndexAndErrorMessage::default().with_batch_index(0)]
                    } else {
                        Vec::new()
                    };
                    slot_ref.fail(batch_error(&err), Some(err.to_string()));
                }
            }
        }
    }
    // Split the request buffer into the partitions' record pieces (no copy: each piece is a
    // disjoint view of the same allocation, moved to its owning shard).
    // A recompressed batch travels in its own buffer.
    accepted.sort_by_key(|(_, _, (_, range, _, _))| range.start);
    let mut rest: BytesMut = body;
    let mut consumed = 0usize;
    let mut routed = Vec::with_capacity(accepted.len());
    for (shard, slot, (key, range, spans, rewritten)) in accepted {
        rest.advance(range.start - consumed);
        let records = rest.split_to(range.len());
        consumed = range.end;
        let records = rewritten.unwrap_or(records);
        routed.push((shard, slot, ProducePart { partition: key, records, spans }));
    }
    let timeout = Duration::from_millis(request.timeout_ms.clamp(0, MAX_PRODUCE_TIMEOUT_MS) as u64);
    let acks = acks.unwrap_or(Acks::All);
    let gather =
        scatter(&conn.ctx.partitions, routed, move |partitions, parts| append(&partitions, parts, acks, timeout)).await;
    let guard = conn.produce_started();
    let ctx = conn.ctx.clone();
    let listener = conn.listener.name.clone();
    let view = metadata.clone();
    let correlation_id = header.correlation_id;
    let client = conn.client_id.borrow().clone().unwrap_or_default();
    Ok(Box::pin(async move {
        let _guard = guard;
        for (slot, answer) in gather.answers().await {
            match answer {
                Some(Ok(appended)) => {
                    let response = &mut slots[slot].response;
                    response.base_offset = appended.base_offset;
                    response.log_append_time_ms = appended.log_append_time_ms;
                    response.log_start_offset = appended.log_start_offset;
                }
                Some(Err(err)) => slots[slot].fail(partition_error(&err), Some(err.to_string())),
                None => slots[slot].fail(ResponseError::NotLeaderOrFollower, None),
            }
        }
        let errors = slots.iter().filter(|s| s.response.error_code != 0).count() as u64;
        KafkaMetrics::add(&ctx.metrics.partition_errors, errors);
        for slot in slots.iter().filter(|s| s.response.error_code != 0) {
            let message = slot.response.error_message.as_deref();
            ctx.error_stats.record(ApiKey::Produce, slot.response.error_code, message, &client);
        }
        if acks == Acks::None {
            return None;
        }
        let mut slots = slots.into_iter();
        let mut endpoints = Vec::new();
        let responses = shape
            .into_iter()
            .map(|(name, topic_id, count)| {
                TopicProduceResponse::default()
                    .with_name(TopicName(StrBytes::from_string(name.clone().unwrap_or_default())))
                    .with_topic_id(topic_id)
                    .with_partition_responses(
                        slots
                            .by_ref()
                            .take(count)
                            .map(|s| {
                                let mut r = s.response;
                                if version < 8 {
                                    r.error_message = None;
                                    r.record_errors.clear();
                                }
                                if version >= 10 && r.error_code == ResponseError::NotLeaderOrFollower.code() {
                                    // KIP-951: where the partition is led now, so the client
                                    // need not ask Metadata first.
                                    if let Some((leader, epoch)) =
                                        current_leader(&view, name.as_deref(), topic_id, r.index)
                                    {
                                        r.current_leader = LeaderIdAndEpoch::default()
                                            .with_leader_id(BrokerIdWire(leader))
                                            .with_leader_epoch(epoch);
                                        endpoints.push(leader);
                                    }
                                }
                                r
                            })
                            .collect(),
                    )
            })
            .collect();
        endpoints.sort_unstable();
        endpoints.dedup();
        let node_endpoints = endpoints
            .into_iter()
            .filter_map(|id| {
                let broker = view.image.broker(id)?;
                let endpoint = broker.endpoint(&listener)?;
                Some(
                    NodeEndpoint::default()
                        .with_node_id(BrokerIdWire(id))
                        .with_host(StrBytes::from_string(endpoint.host.clone()))
                        .with_port(i32::from(endpoint.port))
                        .with_rack(broker.rack.clone().map(StrBytes::from_string)),
                )
            })
            .collect();
        let response = ProduceResponse::default()
            .with_responses(responses)
            .with_node_endpoints(node_endpoints)
            .with_throttle_time_ms(throttle_ms);
        match encode(ApiKey::Produce, version, &response) {
            Ok(body) => Some(respond(ApiKey::Produce, version, correlation_id, ResponseBody::Bytes(body))),
            Err(err) => {
                tracing::error!(error = %err, "dropping a Produce response that does not encode");
                None
            }
        }
    }))
}

/// The live leader of a partition and its epoch, as this broker's view has it (named by topic name,
/// or by topic id from Produce v13).
fn current_leader(
    view: &crate::cluster::MetadataView,
    name: Option<&str>,
    topic_id: uuid::Uuid,
    index: i32,
) -> Option<(i32, i32)> {
    let topic = match name {
        Some(name) if !name.is_empty() => view.topic(name)?,
        _ => view.topic_by_id(&topic_id)?,
    };
    let partition = view.partition(topic, index).ok()?;
    (partition.leader != view.broker_id && view.image.is_live(partition.leader))
        .then_some((partition.leader, partition.leader_epoch))
}

/// One partition's records in a Produce, validated on the receiving shard and moved, as a slice of
/// the request buffer, to the shard that owns the partition.
struct ProducePart {
    partition: TopicPartition,
    records: BytesMut,
    spans: Vec<BatchSpan>,
}

/// On the owning shard: appends every part now (in the order the requests came), then waits for
/// each append's acknowledgement condition, at most `timeout`.
fn append(
    partitions: &PartitionManager,
    parts: Vec<ProducePart>,
    acks: Acks,
    timeout: Duration,
) -> impl std::future::Future<Output = Vec<Result<Appended, PartitionError>>> + use<> {
    let now = crate::io::now_ms();
    let mut results = Vec::with_capacity(parts.len());
    let mut waits = Vec::new();
    for part in parts {
        match partitions.replicate(&part.partition, part.records, &part.spans, acks, now) {
            Ok(replicated) => {
                waits.push((results.len(), replicated.committed));
                results.push(Ok(replicated.appended));
            }
            Err(err) => results.push(Err(err)),
        }
    }
    async move {
        for (i, committed) in waits {
            match crate::io::timeout(timeout, committed.wait()).await {
                None => results[i] = Err(PartitionError::Timeout),
                Some(Err(err)) => results[i] = Err(err),
                Some(Ok(())) => {}
            }
        }
        results
    }
}
