//! Fetch: read from the owning shards in parallel, long-poll until `min_bytes` arrive or
//! `max_wait_ms` passes (woken by the owners as soon as data is appended), and answer with the
//! stored batches placed straight into the response's vectored write.
//!
//! Fetch sessions (KIP-227): this broker answers every fetch as a full, sessionless fetch
//! (session id 0), which the protocol allows; clients then keep sending full fetch requests.

use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_channel::oneshot;
use futures_util::FutureExt;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{ApiKey, FetchRequest};

use super::{RequestError, by_shard, decode, locate_in, ready, respond, scatter};
use crate::kafka::connection::{Connection, PendingResponse, ResponseBody};
use crate::kafka::errors::partition_error;
use crate::kafka::fetch_response::{self, PartitionOut, TopicOut};
use crate::kafka::frame::RequestFrame;
use crate::shard::{FetchCall, FetchPart, PartitionError, ShardMessage, ShardMetrics, WatchCall};

/// Longest a fetch may wait for data, whatever the client asks.
const MAX_WAIT_MS: i32 = 30_000;

struct Wanted {
    shard: usize,
    part: FetchPart,
}

/// Handles a Fetch request.
pub async fn handle(conn: &Rc<Connection>, frame: RequestFrame) -> Result<PendingResponse, RequestError> {
    let version = frame.header.api_version;
    let correlation_id = frame.header.correlation_id;
    let request: FetchRequest = decode(ApiKey::Fetch, version, frame.body.freeze())?;
    let metadata = conn.shard.metadata();

    // Sessionless only: an incremental fetch for a session we never created is refused.
    if version >= 7 && (request.session_id != 0 || request.session_epoch > 0) {
        let body = fetch_response::encode(version, 0, ResponseError::FetchSessionIdNotFound.code(), 0, &[]);
        return Ok(ready(Some(respond(ApiKey::Fetch, version, correlation_id, ResponseBody::Parts(body)))));
    }

    let mut topics: Vec<TopicOut> = Vec::new();
    // (topic index, partition index within topic) → what to read, for partitions that resolve.
    let mut wanted: Vec<((usize, usize), Wanted)> = Vec::new();
    for topic in &request.topics {
        let found =
            if version >= 13 { metadata.topic_by_id(&topic.topic_id) } else { metadata.topic(topic.topic.as_str()) };
        let t = topics.len();
        topics.push(TopicOut {
            name: topic.topic.as_str().to_owned(),
            topic_id: topic.topic_id,
            partitions: Vec::new(),
        });
        for p in &topic.partitions {
            let mut out = PartitionOut {
                index: p.partition,
                high_watermark: -1,
                last_stable_offset: -1,
                log_start_offset: -1,
                ..PartitionOut::default()
            };
            let located = match found {
                None if version >= 13 => Err(ResponseError::UnknownTopicId),
                None => Err(ResponseError::UnknownTopicOrPartition),
                Some(meta) => locate_in(meta, p.partition),
            };
            match located {
                Ok((key, shard)) => wanted.push((
                    (t, topics[t].partitions.len()),
                    Wanted {
                        shard,
                        part: FetchPart {
                            partition: key,
                            offset: p.fetch_offset,
                            max_bytes: p.partition_max_bytes.max(0) as usize,
                            current_leader_epoch: p.current_leader_epoch,
                        },
                    },
                )),
                Err(code) => out.error_code = code.code(),
            }
            topics[t].partitions.push(out);
        }
    }

    let max_bytes = if request.max_bytes <= 0 { i32::MAX as usize } else { request.max_bytes as usize };
    let min_bytes = request.min_bytes.max(0) as usize;
    let deadline = Instant::now() + Duration::from_millis(request.max_wait_ms.clamp(0, MAX_WAIT_MS) as u64);
    let shard = conn.shard.clone();
    loop {
        let results = read_all(&shard, &wanted).await;
        let mut total = 0usize;
        let mut any_error = false;
        for (((t, p), _), result) in wanted.iter().zip(&results) {
            let out = &mut topics[*t].partitions[*p];
            match result {
                Ok(fetched) => {
                    out.error_code = 0;
                    out.high_watermark = fetched.high_watermark;
                    out.last_stable_offset = fetched.last_stable_offset;
                    out.log_start_offset = fetched.log_start_offset;
                    // The response's overall byte limit: the first batch is always served.
                    let bytes: usize = fetched.records.iter().map(|b| b.len()).sum();
                    if total > 0 && total + bytes > max_bytes {
                        out.records.clear();
                    } else {
                        out.records = fetched.records.clone();
                        total += bytes;
                    }
                }
                Err(err) => {
                    any_error = true;
                    out.records.clear();
                    out.error_code = partition_error(err).code();
                    if let PartitionError::Storage(crate::storage::StorageError::OffsetOutOfRange {
                        log_start_offset,
                        log_end_offset,
                        ..
                    }) = err
                    {
                        out.log_start_offset = *log_start_offset;
                        out.high_watermark = *log_end_offset;
                        out.last_stable_offset = *log_end_offset;
                    }
                }
            }
        }
        let now = Instant::now();
        if total >= min_bytes.max(1) || any_error || wanted.is_empty() || now >= deadline {
            break;
        }
        // Wait until any partition gets data past what was just read, or the deadline.
        let watch_from: Vec<_> = wanted
            .iter()
            .zip(&results)
            .map(|((_, w), result)| {
                let next = match result {
                    Ok(fetched) => fetched
                        .records
                        .last()
                        .and_then(|b| crate::storage::BatchHeader::parse(b).ok())
                        .map_or(w.part.offset, |h| h.last_offset() + 1),
                    Err(_) => w.part.offset,
                };
                (w.shard, 0, (w.part.partition, next))
            })
            .collect();
        let mut watches = Vec::new();
        for (target, items) in by_shard(watch_from) {
            let (reply, rx) = oneshot::channel();
            let parts = items.into_iter().map(|(_, part)| part).collect();
            shard.router.send(target, ShardMessage::Watch(WatchCall { parts, reply })).await;
            watches.push(rx);
        }
        let any = futures_util::future::select_all(watches.into_iter().map(|rx| rx.boxed_local())).fuse();
        let timer = crate::io::sleep(deadline - now).fuse();
        futures_util::pin_mut!(any, timer);
        futures_util::select! {
            _ = any => {},
            _ = timer => {},
        }
    }
    let errors = topics.iter().flat_map(|t| &t.partitions).filter(|p| p.error_code != 0).count();
    ShardMetrics::add(&shard.metrics.partition_errors, errors as u64);
    let body = fetch_response::encode(version, 0, 0, 0, &topics);
    Ok(ready(Some(respond(ApiKey::Fetch, version, correlation_id, ResponseBody::Parts(body)))))
}

async fn read_all(
    shard: &crate::shard::Shard,
    wanted: &[((usize, usize), Wanted)],
) -> Vec<Result<crate::shard::Fetched, PartitionError>> {
    let routed = wanted.iter().enumerate().map(|(i, (_, w))| (w.shard, i, w.part.clone()));
    let message = |parts, reply| ShardMessage::Fetch(FetchCall { parts, reply });
    let mut results: Vec<Result<crate::shard::Fetched, PartitionError>> =
        (0..wanted.len()).map(|_| Err(PartitionError::UnknownTopicOrPartition)).collect();
    for (position, answer) in scatter(&shard.router, routed, message).await.answers().await {
        if let Some(result) = answer {
            results[position] = result;
        }
    }
    results
}
