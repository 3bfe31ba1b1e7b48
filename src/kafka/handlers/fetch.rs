//! Fetch: read from the owning shards in parallel, long-poll until `min_bytes` arrive or
//! `max_wait_ms` passes (woken by the owners as soon as data is appended), and answer with the
//! stored batches placed straight into the response's vectored write.
//!
//! Fetch sessions (KIP-227, see [`fetch_session`]): a full fetch with epoch 0 opens one; an
//! incremental fetch reads only the session's partitions that changed (or that the client moved)
//! and answers only those with news.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::FetchTopic;
use kafka_protocol::messages::{ApiKey, FetchRequest};

use super::{MetadataView, RequestError, by_shard, decode, locate_in, ready, respond, scatter};
use crate::kafka::connection::{Connection, PendingResponse, ResponseBody};
use crate::kafka::errors::partition_error;
use crate::kafka::fetch_response::{self, PartitionOut, TopicOut};
use crate::kafka::fetch_session::{Listening, Reported, SessionError, SessionUse};
use crate::kafka::frame::RequestFrame;
use crate::kafka::server::{KafkaContext, KafkaMetrics};
use crate::model::{BrokerId, TopicPartition};
use crate::partition::{ChangeSignal, Isolation, PartitionError, PartitionManager, ReadOutcome};
use crate::security::acl;
use crate::security::quota::QuotaKind;
use crate::shard::ShardId;

/// Longest a fetch may wait for data, whatever the client asks.
const MAX_WAIT_MS: i32 = 30_000;

/// One partition of a Fetch, as sent to its owning shard.
#[derive(Clone, Debug)]
struct FetchPart {
    partition: TopicPartition,
    offset: i64,
    max_bytes: usize,
    current_leader_epoch: i32,
    isolation: Isolation,
    /// The follower fetching, for a replica's fetch.
    follower: Option<BrokerId>,
    /// The follower's log start (-1 when not said).
    log_start_offset: i64,
    /// For a session's partition: the signal to mark when it changes, and its slot there.
    listen: Option<(Arc<ChangeSignal>, u32)>,
}

impl FetchPart {
    /// Where the client reads: the fetch offset, under its leader epoch.
    fn position(&self) -> (i64, i32) {
        (self.offset, self.current_leader_epoch)
    }
}

struct Wanted {
    shard: ShardId,
    part: FetchPart,
}

/// What a fetch asks, from its request and its connection, as planning reads needs it.
struct Asked<'a> {
    version: i16,
    follower: Option<BrokerId>,
    /// A follower allowed to replicate.
    replicating: bool,
    isolation: Isolation,
    fetch_max_bytes: usize,
    rack_aware: bool,
    consumer_rack: Option<&'a str>,
}

/// What a fetch answers and reads: the response's topics (one per topic asked, in order, with
/// the partitions answered without a read already final) and the partitions to read, each with
/// its place there (topic index, partition index within the topic).
struct Plan {
    topics: Vec<TopicOut>,
    wanted: Vec<((usize, usize), Wanted)>,
}

/// Plans a fetch of `asked_topics`. In a session (`listening`), a partition known to answer as
/// it did is neither read nor answered (a partition that changes is marked, and planned again).
fn plan(
    conn: &Connection,
    metadata: &MetadataView,
    asked_topics: &[FetchTopic],
    asked: &Asked<'_>,
    mut listening: Option<&mut Listening>,
) -> Plan {
    let version = asked.version;
    let mut topics: Vec<TopicOut> = Vec::with_capacity(asked_topics.len());
    let mut wanted: Vec<((usize, usize), Wanted)> = Vec::new();
    let mut unread = 0u64;
    for topic in asked_topics {
        let found =
            if version >= 13 { metadata.topic_by_id(&topic.topic_id) } else { metadata.topic(topic.topic.as_str()) };
        let authorized = match asked.follower {
            Some(_) => asked.replicating,
            None => {
                let name = found.map_or_else(|| topic.topic.as_str().to_owned(), |t| t.name.clone());
                conn.allowed(acl::op::READ, acl::resource::TOPIC, &name)
            }
        };
        let t = topics.len();
        topics.push(TopicOut {
            name: topic.topic.as_str().to_owned(),
            topic_id: topic.topic_id,
            partitions: Vec::new(),
        });
        for p in &topic.partitions {
            let listen = match listening.as_deref_mut() {
                Some(listening) if authorized && found.is_some() => {
                    let slot = listening.slot(t, p.partition);
                    if listening.unchanged(slot, (p.fetch_offset, p.current_leader_epoch)) {
                        unread += 1;
                        continue;
                    }
                    Some((listening.signal().clone(), slot))
                }
                _ => None,
            };
            let mut out = PartitionOut {
                index: p.partition,
                high_watermark: -1,
                last_stable_offset: -1,
                log_start_offset: -1,
                ..PartitionOut::default()
            };
            let located = match found {
                _ if !authorized => Err(ResponseError::TopicAuthorizationFailed),
                None if version >= 13 => Err(ResponseError::UnknownTopicId),
                None => Err(ResponseError::UnknownTopicOrPartition),
                Some(meta) => locate_in(metadata, meta, p.partition),
            };
            let leads = located.is_ok();
            let located = match (found, located) {
                // A follower serves consumers (v11+) up to the high watermark it knows.
                (Some(meta), Err(ResponseError::NotLeaderOrFollower)) if asked.follower.is_none() && version >= 11 => {
                    metadata.replica_shard(meta, p.partition).map_err(|_| ResponseError::NotLeaderOrFollower)
                }
                (_, other) => other,
            };
            // The leader sends a consumer in another rack to an in-sync replica there (KIP-392):
            // no records, the replica to ask instead.
            let redirect = match (found, asked.consumer_rack) {
                (Some(meta), Some(rack)) if leads && asked.rack_aware => {
                    metadata.preferred_read_replica(meta, p.partition, rack)
                }
                _ => None,
            };
            if redirect.is_some() {
                out.preferred_read_replica = redirect;
                topics[t].partitions.push(out);
                continue;
            }
            match located {
                Ok((key, shard)) => wanted.push((
                    (t, topics[t].partitions.len()),
                    Wanted {
                        shard,
                        part: FetchPart {
                            partition: key,
                            offset: p.fetch_offset,
                            max_bytes: (p.partition_max_bytes.max(0) as usize).min(asked.fetch_max_bytes),
                            current_leader_epoch: p.current_leader_epoch,
                            isolation: asked.isolation,
                            follower: asked.follower,
                            log_start_offset: p.log_start_offset,
                            listen,
                        },
                    },
                )),
                Err(code) => out.error_code = code.code(),
            }
            topics[t].partitions.push(out);
        }
    }
    if listening.is_some() {
        KafkaMetrics::add(&conn.ctx.metrics.session_partitions_unread, unread);
    }
    Plan { topics, wanted }
}

/// Handles a Fetch request.
pub async fn handle(conn: &Rc<Connection>, frame: RequestFrame) -> Result<PendingResponse, RequestError> {
    let version = frame.header.api_version;
    let correlation_id = frame.header.correlation_id;
    let request: FetchRequest = decode(ApiKey::Fetch, version, frame.body.freeze())?;
    let metadata = conn.ctx.view();
    let fetch_max_bytes = conn.ctx.config.fetch_max_bytes;
    // A follower's fetch names its broker id (v15+: in the replica state): it reads up to the
    // log end, and its fetch offset tells the leader how far it has come.
    let replica_id = if version >= 15 { request.replica_state.replica_id.0 } else { request.replica_id.0 };
    let follower = (replica_id >= 0).then_some(replica_id);
    let isolation =
        if follower.is_some() { Isolation::LogEnd } else { Isolation::for_consumer(request.isolation_level) };
    // Followers need CLUSTER_ACTION on the cluster; consumers READ on each topic.
    let replicating = follower.is_some() && conn.cluster_allowed(acl::op::CLUSTER_ACTION);
    if replicating {
        conn.replica.set(true);
    }
    let asked = Asked {
        version,
        follower,
        replicating,
        isolation,
        fetch_max_bytes,
        rack_aware: conn.ctx.config.rack_aware_reads() && version >= 11,
        consumer_rack: Some(request.rack_id.as_str()).filter(|r| follower.is_none() && !r.is_empty()),
    };

    // The session this fetch belongs to, if any, and what it asks for.
    let session = conn.fetch_sessions.borrow_mut().begin(version, &request);
    let session = match session {
        Ok(session) => session,
        Err(err) => {
            let code = match err {
                SessionError::NotFound => ResponseError::FetchSessionIdNotFound,
                SessionError::InvalidEpoch => ResponseError::InvalidFetchSessionEpoch,
            };
            let body = fetch_response::encode(version, 0, code.code(), 0, &[]);
            return Ok(ready(Some(respond(ApiKey::Fetch, version, correlation_id, ResponseBody::Parts(body)))));
        }
    };
    let in_session = match session {
        SessionUse::Incremental { id } => Some(id),
        SessionUse::Sessionless | SessionUse::Open => None,
    };
    // Plans the reads: an incremental fetch over its session's partitions (taking their marks
    // first, so each change after this is heard), a full one over the request's.
    let plan_now = || match in_session {
        Some(id) => {
            let mut sessions = conn.fetch_sessions.borrow_mut();
            let session = sessions.get_mut(id).expect("begun");
            let (topics, listening) = session.parts();
            listening.take_marks();
            let signal = listening.signal().clone();
            (plan(conn, &metadata, topics, &asked, Some(listening)), Some(signal))
        }
        None => (plan(conn, &metadata, &request.topics, &asked, None), None),
    };
    if in_session.is_some() {
        KafkaMetrics::add(&conn.ctx.metrics.incremental_fetches, 1);
    }
    let (Plan { mut topics, mut wanted }, signal) = plan_now();

    // A consumer under a fetch quota gets at most what its quota allows over the measured span
    // in one response (followers are not bound by client quotas).
    let quota = if follower.is_none() { conn.quota(QuotaKind::Fetch) } else { None };
    let asked_bytes = if request.max_bytes <= 0 { usize::MAX } else { request.max_bytes as usize };
    let by_quota = quota.as_ref().map_or(usize::MAX, |(_, bound)| conn.ctx.security.quotas.most_per_window(*bound));
    let max_bytes = fetch_max_bytes.min(asked_bytes).min(by_quota);
    let min_bytes = request.min_bytes.max(0) as usize;
    let deadline = Instant::now() + Duration::from_millis(request.max_wait_ms.clamp(0, MAX_WAIT_MS) as u64);
    let ctx = conn.ctx.clone();
    let mut held = ctx.fetch_memory.permit();
    // What each partition read last, and which the next round reads: all of them at first;
    // after a wake-up only the partition that woke the fetch (the others' answers stand: a
    // fetch answers a moment's view).
    let mut results: Vec<Result<ReadOutcome, PartitionError>> = Vec::new();
    let mut reading: Vec<bool> = Vec::new();
    let mut planned = true;
    loop {
        if planned {
            results = (0..wanted.len()).map(|_| Err(PartitionError::NotLeaderOrFollower)).collect();
            reading = vec![true; wanted.len()];
            planned = false;
        }
        // What one read may bring back at most: each shard stops reading its partitions once
        // it holds `max_bytes` (the rest answer with no records, as past a full response). The
        // shard's fetches hold at most its share of fetch_read_budget_bytes between reading and
        // writing: this read waits for room for that.
        let shards = by_shard(
            wanted.iter().zip(&reading).filter(|(_, r)| **r).map(|((_, w), _)| (w.shard, 0, w.part.max_bytes)),
        );
        let most: usize =
            shards.values().map(|parts| parts.iter().map(|(_, b)| *b).sum::<usize>().min(max_bytes)).sum();
        held.grow(most.saturating_sub(held.bytes())).await;
        read_all(&ctx, &wanted, max_bytes, &reading, &mut results).await;
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
                    if let PartitionError::OffsetOutOfRange { log_start_offset, log_end_offset, .. } = err {
                        out.log_start_offset = *log_start_offset;
                        out.high_watermark = *log_end_offset;
                        out.last_stable_offset = *log_end_offset;
                    }
                }
            }
        }
        // Only what the response keeps stays held (while waiting, too).
        held.shrink_to(total);
        let now = Instant::now();
        if total >= min_bytes.max(1) || any_error || (wanted.is_empty() && signal.is_none()) || now >= deadline {
            break;
        }
        let timer = crate::io::sleep(deadline - now).fuse();
        futures_util::pin_mut!(timer);
        // A session waits for any of its partitions to change, then plans again: what changed
        // is read, what did not is left out.
        if let Some(signal) = &signal {
            let changed = signal.changed().fuse();
            futures_util::pin_mut!(changed);
            futures_util::select! {
                () = changed => {},
                _ = timer => {},
            }
            Plan { topics, wanted } = plan_now().0;
            planned = true;
            continue;
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
                        .and_then(|b| crate::model::batch::BatchHeader::parse(b).ok())
                        .map_or(w.part.offset, |h| h.last_offset() + 1),
                    Err(_) => w.part.offset,
                };
                (w.shard, 0, (w.part.partition, next))
            })
            .collect();
        let mut watches = Vec::new();
        for (target, items) in by_shard(watch_from) {
            let parts: Vec<(TopicPartition, i64)> = items.into_iter().map(|(_, part)| part).collect();
            let watch = ctx.partitions.submit_cancellable_on(target, move |pm| watch_any(pm, parts, isolation));
            watches.push(watch.await.wait().boxed_local());
        }
        let any = futures_util::future::select_all(watches).fuse();
        futures_util::pin_mut!(any);
        let woken = futures_util::select! {
            (fired, _, _) = any => fired.ok().flatten(),
            _ = timer => None,
        };
        for ((_, w), read) in wanted.iter().zip(reading.iter_mut()) {
            *read = woken.is_none_or(|key| w.part.partition == key);
        }
    }
    let errors = topics.iter().flat_map(|t| &t.partitions).filter(|p| p.error_code != 0).count();
    KafkaMetrics::add(&ctx.metrics.partition_errors, errors as u64);
    if errors > 0 {
        let client = conn.client_id.borrow();
        for partition in topics.iter().flat_map(|t| &t.partitions) {
            ctx.error_stats.record(ApiKey::Fetch, partition.error_code, None, client.as_deref().unwrap_or(""));
        }
    }
    if let Some((sensor, bound)) = quota {
        let bytes: usize = topics.iter().flat_map(|t| &t.partitions).flat_map(|p| &p.records).map(|b| b.len()).sum();
        let quotas = &ctx.security.quotas;
        let wait = quotas.record(&sensor, bound, bytes as f64);
        if !wait.is_zero() {
            // Over the quota: nothing is sent (so nothing counts), the client is told to back off
            // and muted that long, as Kafka does.
            quotas.unrecord(&sensor, bytes as f64);
            let throttle_ms = conn.mute_for(wait).max(conn.request_throttle_ms.get());
            // A session goes on (its epoch moved) with nothing answered (what this fetch read is
            // read again next time); none is opened.
            let session_id = match session {
                SessionUse::Incremental { id } => id,
                SessionUse::Sessionless | SessionUse::Open => 0,
            };
            let body = fetch_response::encode(version, throttle_ms, 0, session_id, &[]);
            return Ok(ready(Some(respond(ApiKey::Fetch, version, correlation_id, ResponseBody::Parts(body)))));
        }
    }
    let session_id = match session {
        SessionUse::Sessionless => 0,
        SessionUse::Open => {
            let reported = topics
                .iter()
                .enumerate()
                .flat_map(|(t, topic)| topic.partitions.iter().map(move |p| ((t, p.index), reported(p))))
                .collect();
            KafkaMetrics::add(&ctx.metrics.fetch_sessions_opened, 1);
            conn.fetch_sessions.borrow_mut().open(request.topics.clone(), reported)
        }
        SessionUse::Incremental { id } => {
            // Only partitions with news: records, an error, or offsets that moved. A partition
            // answered at the end of what its client may see is not read again until it changes.
            if let Some(session) = conn.fetch_sessions.borrow_mut().get_mut(id) {
                let listening = session.listening();
                for ((_, w), result) in wanted.iter().zip(&results) {
                    let quiet = result
                        .as_ref()
                        .is_ok_and(|r| r.records.is_empty() && w.part.offset >= visible_end(r, isolation));
                    let (_, slot) = w.part.listen.as_ref().expect("set in a session");
                    listening.was_read(*slot, w.part.position(), quiet);
                }
                for (t, topic) in topics.iter_mut().enumerate() {
                    topic.partitions.retain(|p| {
                        session.report(t, p.index, reported(p), !p.records.is_empty() || p.error_code != 0)
                    });
                }
            }
            topics.retain(|t| !t.partitions.is_empty());
            id
        }
    };
    let body = fetch_response::encode(version, conn.request_throttle_ms.get(), 0, session_id, &topics);
    let mut response = respond(ApiKey::Fetch, version, correlation_id, ResponseBody::Parts(body));
    response.held = Some(held);
    Ok(ready(Some(response)))
}

/// What an answer tells the client of a partition's offsets.
fn reported(p: &PartitionOut) -> Reported {
    Reported {
        high_watermark: p.high_watermark,
        last_stable_offset: p.last_stable_offset,
        log_start_offset: p.log_start_offset,
        preferred_read_replica: p.preferred_read_replica.unwrap_or(-1),
    }
}

/// Where what a read under `isolation` may see ends.
fn visible_end(read: &ReadOutcome, isolation: Isolation) -> i64 {
    match isolation {
        Isolation::HighWatermark => read.high_watermark,
        Isolation::Committed => read.last_stable_offset,
        Isolation::LogEnd => read.log_end_offset,
    }
}

/// Reads the wanted partitions marked in `reading` into `results` (a partition no longer there
/// answers as not led here). A session's partitions start or go on listening to its signal.
async fn read_all(
    ctx: &KafkaContext,
    wanted: &[((usize, usize), Wanted)],
    max_bytes: usize,
    reading: &[bool],
    results: &mut [Result<ReadOutcome, PartitionError>],
) {
    if !reading.contains(&true) {
        return;
    }
    let routed = wanted.iter().enumerate().filter(|(i, _)| reading[*i]).map(|(i, (_, w))| (w.shard, i, w.part.clone()));
    let read = move |partitions, parts| read_parts(partitions, parts, max_bytes);
    for (position, answer) in scatter(&ctx.partitions, routed, read).await.answers().await {
        results[position] = answer.unwrap_or(Err(PartitionError::NotLeaderOrFollower));
    }
}

/// On the owning shard: reads the parts in order until they hold `max_bytes` (the response's
/// limit); those after that are read for their offsets only.
async fn read_parts(
    partitions: Rc<PartitionManager>,
    parts: Vec<FetchPart>,
    max_bytes: usize,
) -> Vec<Result<ReadOutcome, PartitionError>> {
    let mut results = Vec::with_capacity(parts.len());
    let mut read = 0usize;
    for part in &parts {
        if let Some((signal, slot)) = &part.listen
            && let Some(p) = partitions.get(&part.partition)
        {
            p.listen(signal, *slot);
        }
        let limit = if read >= max_bytes { 0 } else { part.max_bytes };
        let result = match part.follower {
            Some(follower) => match partitions.get(&part.partition) {
                Some(p) => {
                    p.read_for_follower(follower, part.offset, part.log_start_offset, limit, part.current_leader_epoch)
                        .await
                }
                None => Err(PartitionError::NotLeaderOrFollower),
            },
            None => {
                partitions.read(&part.partition, part.offset, limit, part.isolation, part.current_leader_epoch).await
            }
        };
        if let Ok(outcome) = &result {
            read += outcome.records.iter().map(|b| b.len()).sum::<usize>();
        }
        results.push(result);
    }
    results
}

/// On the owning shard: completes once any of the partitions has data at or past its offset,
/// with that partition (`None`, read everything again: one is gone or already had data).
async fn watch_any(
    partitions: Rc<PartitionManager>,
    parts: Vec<(TopicPartition, i64)>,
    isolation: Isolation,
) -> Option<TopicPartition> {
    let mut receivers = Vec::with_capacity(parts.len());
    for (key, offset) in &parts {
        match partitions.get(key).map(|p| p.watch(*offset, isolation)) {
            Some(Some(rx)) => receivers.push(rx),
            // Already visible, or the partition left this shard: read again at once.
            Some(None) | None => return None,
        }
    }
    if receivers.is_empty() {
        return None;
    }
    let (_, fired, _) = futures_util::future::select_all(receivers).await;
    Some(parts[fired].0)
}
