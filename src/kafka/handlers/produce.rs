//! Produce: validate batches on the receiving shard, split the request buffer into per-partition
//! pieces without copying, send each piece to the shard that owns its partition, and answer once
//! every owner has appended (and, for acks=1/-1 under `flush = always`, made it durable).

use std::rc::Rc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ApiKey, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::{RequestError, encode, locate_in, respond, scatter};
use crate::kafka::connection::{Connection, PendingResponse, ResponseBody};
use crate::kafka::errors::{batch_error, partition_error};
use crate::kafka::frame::RequestFrame;
use crate::kafka::produce_request;
use crate::shard::{ProduceCall, ProducePart, ShardMessage, ShardMetrics};
use crate::storage::batch;

/// Longest a Produce waits for its acknowledgement, whatever the client asks.
const MAX_PRODUCE_TIMEOUT_MS: i32 = 300_000;

/// In-sync replicas of every partition: this broker does not replicate yet.
const IN_SYNC_REPLICAS: i32 = 1;

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
    let metadata = conn.shard.metadata();
    let acks = request.acks;
    let mut slots: Vec<Slot> = Vec::new();
    let mut shape: Vec<(Option<String>, uuid::Uuid, usize)> = Vec::new();
    // (owning shard, slot, records range, spans)
    let mut accepted = Vec::new();
    for topic in &request.topics {
        shape.push((topic.name.clone(), topic.topic_id, topic.partitions.len()));
        let found = match &topic.name {
            Some(name) => metadata.topic(name),
            None => metadata.topic_by_id(&topic.topic_id),
        };
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
            if !matches!(acks, -1..=1) {
                slot_ref.fail(ResponseError::InvalidRequiredAcks, None);
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
            // One node: the in-sync replica set is this broker alone. acks=all needs at least
            // min.insync.replicas of them, as Kafka checks before appending.
            if acks == -1 && topic_meta.config.min_insync_replicas > IN_SYNC_REPLICAS {
                slot_ref.fail(
                    ResponseError::NotEnoughReplicas,
                    Some(format!(
                        "min.insync.replicas is {} but {IN_SYNC_REPLICAS} replica is in sync",
                        topic_meta.config.min_insync_replicas
                    )),
                );
                continue;
            }
            let (key, shard) = match locate_in(topic_meta, partition.index) {
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
            match batch::validate_all(&body[range.clone()], topic_meta.config.log.max_message_bytes) {
                Ok(spans) => accepted.push((shard, slot, (key, range, spans))),
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
    accepted.sort_by_key(|(_, _, (_, range, _))| range.start);
    let mut rest: BytesMut = body;
    let mut consumed = 0usize;
    let mut routed = Vec::with_capacity(accepted.len());
    for (shard, slot, (key, range, spans)) in accepted {
        rest.advance(range.start - consumed);
        let records = rest.split_to(range.len());
        consumed = range.end;
        routed.push((shard, slot, ProducePart { partition: key, records, spans }));
    }
    let timeout = Duration::from_millis(request.timeout_ms.clamp(0, MAX_PRODUCE_TIMEOUT_MS) as u64);
    let message = |parts, reply| ShardMessage::Produce(ProduceCall { parts, wait_durable: acks != 0, timeout, reply });
    let gather = scatter(&conn.shard.router, routed, message).await;
    let guard = conn.produce_started();
    let shard = conn.shard.clone();
    let correlation_id = header.correlation_id;
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
        ShardMetrics::add(&shard.metrics.partition_errors, errors);
        if acks == 0 {
            return None;
        }
        let mut slots = slots.into_iter();
        let responses = shape
            .into_iter()
            .map(|(name, topic_id, count)| {
                TopicProduceResponse::default()
                    .with_name(TopicName(StrBytes::from_string(name.unwrap_or_default())))
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
                                r
                            })
                            .collect(),
                    )
            })
            .collect();
        let response = ProduceResponse::default().with_responses(responses);
        match encode(ApiKey::Produce, version, &response) {
            Ok(body) => Some(respond(ApiKey::Produce, version, correlation_id, ResponseBody::Bytes(body))),
            Err(err) => {
                tracing::error!(error = %err, "dropping a Produce response that does not encode");
                None
            }
        }
    }))
}
