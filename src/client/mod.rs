//! A small Kafka client for the command line and the load tools: cluster metadata, leader
//! routing, produce, fetch, offsets and admin calls, against any Kafka-compatible broker.

pub mod admin;
pub mod connection;
pub mod groups;
pub mod member;
pub mod partitioner;

use std::cell::RefCell;
use std::collections::HashMap;

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    BrokerId, FetchRequest, ListOffsetsRequest, MetadataRequest, MetadataResponse, ProduceRequest,
};

/// Where the tools look for a broker unless told otherwise (the broker's default listener).
pub const DEFAULT_BOOTSTRAP: &str = "127.0.0.1:9092";

pub use connection::{BrokerConnection, ClientError, ClientSecurity, SaslClient};
pub use partitioner::{murmur2, partition_for_key};

/// Highest Produce version used (v13 names topics by id).
const PRODUCE_MAX_VERSION: i16 = 12;
/// Highest Fetch version used (v13 names topics by id).
const FETCH_MAX_VERSION: i16 = 12;

pub use crate::model::wire::topic_name;

/// A topic as described by Metadata.
#[derive(Clone, Debug)]
pub struct TopicInfo {
    /// Name.
    pub name: String,
    /// Topic id.
    pub id: uuid::Uuid,
    /// Internal topic.
    pub internal: bool,
    /// (partition, leader broker id, replicas, isr).
    pub partitions: Vec<(i32, i32, Vec<i32>, Vec<i32>)>,
}

/// One topic's part of a produce request: the topic and its (input index, partition, records).
type TopicBatches = (String, Vec<(usize, i32, Bytes)>);

/// What a fetch returned for one partition.
#[derive(Clone, Debug, Default)]
pub struct FetchedPartition {
    /// Record batches.
    pub records: Bytes,
    /// High watermark.
    pub high_watermark: i64,
    /// Log start offset.
    pub log_start_offset: i64,
}

/// How often [`KafkaClient::list_offset`] asks again after a retriable error (200 ms apart).
const LIST_OFFSET_ATTEMPTS: usize = 50;

/// A client for a cluster reached through bootstrap addresses.
pub struct KafkaClient {
    bootstrap: Vec<String>,
    client_id: String,
    security: ClientSecurity,
    connections: RefCell<HashMap<String, BrokerConnection>>,
    brokers: RefCell<HashMap<i32, String>>,
    leaders: RefCell<HashMap<(String, i32), i32>>,
    controller: RefCell<Option<i32>>,
}

impl KafkaClient {
    /// A client for the brokers in `bootstrap` (comma-separated host:port list).
    pub async fn connect(bootstrap: &str, client_id: &str) -> Result<Self, ClientError> {
        Self::connect_secured(bootstrap, client_id, ClientSecurity::default()).await
    }

    /// [`KafkaClient::connect`] with every connection secured by `security` (TLS, SASL).
    pub async fn connect_secured(
        bootstrap: &str,
        client_id: &str,
        security: ClientSecurity,
    ) -> Result<Self, ClientError> {
        let client = Self {
            bootstrap: bootstrap.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect(),
            client_id: client_id.to_owned(),
            security,
            connections: RefCell::new(HashMap::new()),
            brokers: RefCell::new(HashMap::new()),
            leaders: RefCell::new(HashMap::new()),
            controller: RefCell::new(None),
        };
        client.any().await?;
        Ok(client)
    }

    async fn connection_to(&self, addr: &str) -> Result<BrokerConnection, ClientError> {
        let existing = self.connections.borrow().get(addr).cloned();
        if let Some(conn) = existing.filter(|c| !c.is_closed()) {
            return Ok(conn);
        }
        let conn = BrokerConnection::connect_from(addr, &self.client_id, None, &self.security).await?;
        self.connections.borrow_mut().insert(addr.to_owned(), conn.clone());
        Ok(conn)
    }

    /// A connection to any reachable broker.
    pub async fn any(&self) -> Result<BrokerConnection, ClientError> {
        let known: Vec<String> = self.brokers.borrow().values().cloned().collect();
        let mut last = None;
        for addr in self.bootstrap.iter().chain(known.iter()) {
            match self.connection_to(addr).await {
                Ok(conn) => return Ok(conn),
                Err(err) => last = Some(err),
            }
        }
        Err(last.unwrap_or_else(|| ClientError::Unavailable("no bootstrap address".into())))
    }

    /// A connection to broker `id` (from the last metadata).
    pub async fn broker(&self, id: i32) -> Result<BrokerConnection, ClientError> {
        let addr = self.brokers.borrow().get(&id).cloned();
        match addr {
            Some(addr) => self.connection_to(&addr).await,
            None => Err(ClientError::Unavailable(format!("unknown broker {id}"))),
        }
    }

    /// Fetches metadata for `topics` (all topics when `None`), remembering brokers and leaders.
    pub async fn metadata(
        &self,
        topics: Option<&[String]>,
        auto_create: bool,
    ) -> Result<MetadataResponse, ClientError> {
        let request = MetadataRequest::default()
            .with_topics(topics.map(|names| {
                names.iter().map(|n| MetadataRequestTopic::default().with_name(Some(topic_name(n)))).collect()
            }))
            .with_allow_auto_topic_creation(auto_create);
        let response = self.any().await?.send(request).await?;
        let mut brokers = self.brokers.borrow_mut();
        for b in &response.brokers {
            brokers.insert(b.node_id.0, format!("{}:{}", b.host.as_str(), b.port));
        }
        let mut leaders = self.leaders.borrow_mut();
        for t in &response.topics {
            let Some(name) = &t.name else { continue };
            for p in &t.partitions {
                leaders.insert((name.as_str().to_owned(), p.partition_index), p.leader_id.0);
            }
        }
        *self.controller.borrow_mut() = Some(response.controller_id.0);
        Ok(response)
    }

    /// Describes one topic (an error if it does not exist).
    pub async fn topic(&self, name: &str, auto_create: bool) -> Result<TopicInfo, ClientError> {
        let response = self.metadata(Some(&[name.to_owned()]), auto_create).await?;
        let topic = response.topics.into_iter().next().ok_or_else(|| ClientError::Protocol("empty metadata".into()))?;
        if let Some(err) = ClientError::from_code(format!("topic {name}"), topic.error_code, None) {
            return Err(err);
        }
        Ok(TopicInfo {
            name: name.to_owned(),
            id: topic.topic_id,
            internal: topic.is_internal,
            partitions: topic
                .partitions
                .iter()
                .map(|p| {
                    (
                        p.partition_index,
                        p.leader_id.0,
                        p.replica_nodes.iter().map(|b| b.0).collect(),
                        p.isr_nodes.iter().map(|b| b.0).collect(),
                    )
                })
                .collect(),
        })
    }

    /// The id of a partition's leader (refreshing metadata when unknown).
    pub async fn leader_id(&self, topic: &str, partition: i32) -> Result<i32, ClientError> {
        let key = (topic.to_owned(), partition);
        let mut leader = self.leaders.borrow().get(&key).copied();
        if leader.is_none() {
            self.metadata(Some(&[topic.to_owned()]), false).await?;
            leader = self.leaders.borrow().get(&key).copied();
        }
        match leader {
            Some(id) if id >= 0 => Ok(id),
            _ => Err(ClientError::Unavailable(format!("no leader for {topic}-{partition}"))),
        }
    }

    /// A connection to the leader of a partition (refreshing metadata when unknown).
    pub async fn leader(&self, topic: &str, partition: i32) -> Result<BrokerConnection, ClientError> {
        let id = self.leader_id(topic, partition).await?;
        let conn = self.broker(id).await;
        if conn.is_err() {
            // Unreachable: it may have died and led over; ask again next time.
            self.forget_leaders();
        }
        conn
    }

    /// Forgets cached leaders (after a NOT_LEADER error).
    pub fn forget_leaders(&self) {
        self.leaders.borrow_mut().clear();
    }

    /// A connection to the controller (for admin calls).
    pub async fn controller(&self) -> Result<BrokerConnection, ClientError> {
        if self.controller.borrow().is_none() {
            self.metadata(Some(&[]), false).await?;
        }
        let id = *self.controller.borrow();
        match id {
            Some(id) if id >= 0 => self.broker(id).await,
            _ => self.any().await,
        }
    }

    /// Produces `records` (one or more v2 batches) to a partition; returns the base offset
    /// (-1 with acks=0).
    pub async fn produce(
        &self,
        topic: &str,
        partition: i32,
        records: Bytes,
        acks: i16,
        timeout_ms: i32,
    ) -> Result<i64, ClientError> {
        let mut results = self.produce_batches(vec![(topic.to_owned(), partition, records)], acks, timeout_ms).await;
        results.pop().unwrap_or_else(|| Err(ClientError::Protocol("empty produce response".into())))
    }

    /// Produces several partitions' records at once, in one request per leader (as Kafka's Java
    /// producer drains all of a broker's ready batches into one request); the requests to
    /// different leaders run side by side. One result per input, in order: the base offset (-1
    /// with acks=0) or that partition's error.
    pub async fn produce_batches(
        &self,
        batches: Vec<(String, i32, Bytes)>,
        acks: i16,
        timeout_ms: i32,
    ) -> Vec<Result<i64, ClientError>> {
        let mut results: Vec<Option<Result<i64, ClientError>>> = (0..batches.len()).map(|_| None).collect();
        let mut by_leader: HashMap<i32, Vec<TopicBatches>> = HashMap::new();
        for (index, (topic, partition, records)) in batches.into_iter().enumerate() {
            match self.leader_id(&topic, partition).await {
                Ok(leader) => {
                    let topics = by_leader.entry(leader).or_default();
                    match topics.iter_mut().find(|(name, _)| *name == topic) {
                        Some((_, parts)) => parts.push((index, partition, records)),
                        None => topics.push((topic, vec![(index, partition, records)])),
                    }
                }
                Err(err) => results[index] = Some(Err(err)),
            }
        }
        let sends = by_leader.into_iter().map(|(leader, topics)| self.produce_to(leader, topics, acks, timeout_ms));
        for answers in futures_util::future::join_all(sends).await {
            for (index, result) in answers {
                results[index] = Some(result);
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(ClientError::Protocol("partition missing from produce response".into()))))
            .collect()
    }

    /// One Produce request to broker `leader`; answers (input index, result) per partition.
    async fn produce_to(
        &self,
        leader: i32,
        topics: Vec<TopicBatches>,
        acks: i16,
        timeout_ms: i32,
    ) -> Vec<(usize, Result<i64, ClientError>)> {
        let indexes: Vec<(String, i32, usize)> = topics
            .iter()
            .flat_map(|(topic, parts)| {
                parts.iter().map(move |(index, partition, _)| (topic.clone(), *partition, *index))
            })
            .collect();
        let fail_all = |err: ClientError| -> Vec<(usize, Result<i64, ClientError>)> {
            indexes.iter().map(|(_, _, index)| (*index, Err(err.clone()))).collect()
        };
        let conn = match self.broker(leader).await {
            Ok(conn) => conn,
            Err(err) => {
                // Unreachable: it may have died and led over; ask again next time.
                self.forget_leaders();
                return fail_all(err);
            }
        };
        let topic_data = topics
            .into_iter()
            .map(|(topic, parts)| {
                TopicProduceData::default().with_name(topic_name(&topic)).with_partition_data(
                    parts
                        .into_iter()
                        .map(|(_, partition, records)| {
                            PartitionProduceData::default().with_index(partition).with_records(Some(records))
                        })
                        .collect(),
                )
            })
            .collect();
        let request = ProduceRequest::default().with_acks(acks).with_timeout_ms(timeout_ms).with_topic_data(topic_data);
        let version = match conn.version_for::<ProduceRequest>(PRODUCE_MAX_VERSION) {
            Ok(version) => version,
            Err(err) => return fail_all(err),
        };
        if acks == 0 {
            return match conn.send_without_response(request, version).await {
                Ok(()) => indexes.iter().map(|(_, _, index)| (*index, Ok(-1))).collect(),
                Err(err) => fail_all(err),
            };
        }
        let response = match conn.send_version(request, version).await {
            Ok(response) => response,
            Err(err) => {
                self.forget_leaders();
                return fail_all(err);
            }
        };
        let mut answers = Vec::with_capacity(indexes.len());
        for (topic, partition, index) in &indexes {
            let answer = response
                .responses
                .iter()
                .filter(|t| t.name.as_str() == topic)
                .flat_map(|t| t.partition_responses.iter())
                .find(|p| p.index == *partition);
            let result = match answer {
                None => Err(ClientError::Protocol(format!("no produce answer for {topic}-{partition}"))),
                Some(p) => match ClientError::from_code(
                    format!("produce to {topic}-{partition}"),
                    p.error_code,
                    p.error_message.as_ref().map(|m| m.as_str().to_owned()),
                ) {
                    Some(err) => {
                        if matches!(p.error_code, 6 | 3) {
                            self.forget_leaders();
                        }
                        Err(err)
                    }
                    None => Ok(p.base_offset),
                },
            };
            answers.push((*index, result));
        }
        answers
    }

    /// Fetches from one partition.
    pub async fn fetch(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: i32,
        max_wait_ms: i32,
    ) -> Result<FetchedPartition, ClientError> {
        let conn = self.leader(topic, partition).await?;
        let request = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(max_wait_ms)
            .with_min_bytes(1)
            .with_max_bytes(max_bytes.max(1))
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default().with_topic(topic_name(topic)).with_partitions(vec![
                        FetchPartition::default()
                            .with_partition(partition)
                            .with_fetch_offset(offset)
                            .with_partition_max_bytes(max_bytes.max(1)),
                    ])]);
        let (response, _) = conn.send_capped(request, FETCH_MAX_VERSION).await?;
        if let Some(err) = ClientError::from_code("fetch", response.error_code, None) {
            return Err(err);
        }
        let p = response
            .responses
            .into_iter()
            .next()
            .and_then(|t| t.partitions.into_iter().next())
            .ok_or_else(|| ClientError::Protocol("empty fetch response".into()))?;
        if let Some(err) = ClientError::from_code(format!("fetch {topic}-{partition}@{offset}"), p.error_code, None) {
            if matches!(p.error_code, 6 | 3) {
                self.forget_leaders();
            }
            return Err(err);
        }
        Ok(FetchedPartition {
            records: p.records.unwrap_or_default(),
            high_watermark: p.high_watermark,
            log_start_offset: p.log_start_offset,
        })
    }

    /// Fetches several partitions (grouped by leader, one request per leader), each from its own
    /// offset. Returns one result per input, in order.
    pub async fn fetch_many(
        &self,
        wanted: &[(String, i32, i64)],
        partition_max_bytes: i32,
        max_wait_ms: i32,
    ) -> Result<Vec<Result<FetchedPartition, ClientError>>, ClientError> {
        let mut by_leader: Vec<(BrokerConnection, Vec<usize>)> = Vec::new();
        for (i, (topic, partition, _)) in wanted.iter().enumerate() {
            let conn = self.leader(topic, *partition).await?;
            match by_leader.iter_mut().find(|(c, _)| c.addr() == conn.addr()) {
                Some((_, list)) => list.push(i),
                None => by_leader.push((conn, vec![i])),
            }
        }
        let mut results: Vec<Result<FetchedPartition, ClientError>> =
            wanted.iter().map(|_| Err(ClientError::Unavailable("not fetched".into()))).collect();
        for (conn, indexes) in by_leader {
            let mut topics: Vec<FetchTopic> = Vec::new();
            for &i in &indexes {
                let (topic, partition, offset) = &wanted[i];
                let part = FetchPartition::default()
                    .with_partition(*partition)
                    .with_fetch_offset(*offset)
                    .with_partition_max_bytes(partition_max_bytes.max(1));
                match topics.iter_mut().find(|t| t.topic.as_str() == topic) {
                    Some(t) => t.partitions.push(part),
                    None => {
                        topics.push(FetchTopic::default().with_topic(topic_name(topic)).with_partitions(vec![part]))
                    }
                }
            }
            let request = FetchRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_max_wait_ms(max_wait_ms)
                .with_min_bytes(1)
                .with_max_bytes(i32::MAX)
                .with_session_epoch(-1)
                .with_topics(topics);
            let (response, _) = conn.send_capped(request, FETCH_MAX_VERSION).await?;
            if let Some(err) = ClientError::from_code("fetch", response.error_code, None) {
                return Err(err);
            }
            for t in response.responses {
                for p in t.partitions {
                    let Some(&i) =
                        indexes.iter().find(|&&i| wanted[i].0 == t.topic.as_str() && wanted[i].1 == p.partition_index)
                    else {
                        continue;
                    };
                    results[i] = match ClientError::from_code(
                        format!("fetch {}-{}", t.topic.as_str(), p.partition_index),
                        p.error_code,
                        None,
                    ) {
                        Some(err) => Err(err),
                        None => Ok(FetchedPartition {
                            records: p.records.unwrap_or_default(),
                            high_watermark: p.high_watermark,
                            log_start_offset: p.log_start_offset,
                        }),
                    };
                }
            }
        }
        Ok(results)
    }

    /// ListOffsets for one partition: `timestamp` or -1 (latest) / -2 (earliest) / -3 (max
    /// timestamp). Returns (offset, timestamp).
    pub async fn list_offset(&self, topic: &str, partition: i32, timestamp: i64) -> Result<(i64, i64), ClientError> {
        // In a cluster a new topic reaches every broker a moment apart, and leaders move:
        // retriable errors are asked again with fresh metadata for a while.
        let mut attempts = 0;
        loop {
            match self.list_offset_once(topic, partition, timestamp).await {
                Err(err) if err.is_retriable() && attempts < LIST_OFFSET_ATTEMPTS => {
                    attempts += 1;
                    self.forget_leaders();
                    crate::io::sleep(std::time::Duration::from_millis(200)).await;
                }
                other => return other,
            }
        }
    }

    async fn list_offset_once(&self, topic: &str, partition: i32, timestamp: i64) -> Result<(i64, i64), ClientError> {
        let conn = self.leader(topic, partition).await?;
        let request = ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![
            ListOffsetsTopic::default().with_name(topic_name(topic)).with_partitions(vec![
                ListOffsetsPartition::default().with_partition_index(partition).with_timestamp(timestamp),
            ]),
        ]);
        let response = conn.send(request).await?;
        let p = response
            .topics
            .first()
            .and_then(|t| t.partitions.first())
            .ok_or_else(|| ClientError::Protocol("empty list offsets response".into()))?;
        if let Some(err) = ClientError::from_code(format!("list offsets {topic}-{partition}"), p.error_code, None) {
            return Err(err);
        }
        Ok((p.offset, p.timestamp))
    }
}
