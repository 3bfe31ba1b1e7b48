//! `moldau bench-sink`: a Kafka-protocol endpoint that acknowledges every produce at once and
//! keeps nothing. It exists to measure the load tool itself: `moldau bench` against it shows the
//! most the tool can generate on this machine, so a benchmark can be judged not to be limited by
//! its own client. Not a broker: it only answers what the load tool sends.

use std::collections::HashMap;
use std::net::SocketAddr;

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::io::net::{FrameRules, FramedReader, Stream};
use crate::model::wire::parse_request_header;

/// Arguments of `moldau bench-sink`.
#[derive(clap::Args, Debug)]
pub struct SinkArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9093")]
    pub listen: SocketAddr,
    /// Partitions every topic appears to have.
    #[arg(long, default_value_t = 16)]
    pub partitions: i32,
    /// Threads (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Runs the sink until the process is stopped.
pub fn run(args: SinkArgs) -> Result<(), String> {
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let probe = crate::io::net::reuseport_std_listener(args.listen).map_err(|e| format!("{}: {e}", args.listen))?;
    let addr = probe.local_addr().map_err(|e| e.to_string())?;
    let mut handles = Vec::new();
    for _ in 0..threads {
        let partitions = args.partitions;
        handles.push(std::thread::spawn(move || {
            crate::io::block_on(async move {
                let listener = crate::io::net::reuseport_listener(addr, 1024).expect("sink listener");
                while let Ok((stream, _)) = listener.accept().await {
                    crate::io::spawn_detached(serve(stream, addr, partitions));
                }
            })
        }));
    }
    drop(probe);
    println!("moldau bench-sink listening on {addr}");
    for h in handles {
        let _ = h.join();
    }
    Ok(())
}

fn topic_id(name: &str) -> uuid::Uuid {
    uuid::Uuid::from_u128(u128::from(crate::client::murmur2(name.as_bytes())) + 1)
}

/// Largest request the sink reads (what a broker allows a Produce by default).
const MAX_REQUEST_BYTES: usize = 100 << 20;

async fn serve(stream: Stream, addr: SocketAddr, partitions: i32) {
    let mut reader = FramedReader::new(stream.clone());
    let mut writer = stream;
    let mut offsets: HashMap<(String, i32), i64> = HashMap::new();
    let rules = FrameRules { min_bytes: 8, peek_bytes: 0 };
    while let Ok(Some(mut frame)) = reader.next(rules, |_| MAX_REQUEST_BYTES).await {
        let Ok((h, header_len, _)) = parse_request_header(&frame) else { return };
        let body_bytes = frame.split_off(header_len);
        let Ok(key) = ApiKey::try_from(h.api_key) else { return };
        let version = h.api_version;
        let mut body = bytes::BytesMut::new();
        let encoded = match key {
            ApiKey::ApiVersions => ApiVersionsResponse::default()
                .with_api_keys(
                    [
                        (0i16, 3i16, 12i16),
                        (1, 4, 12),
                        (2, 1, 10),
                        (3, 0, 12),
                        (18, 0, 3),
                        (19, 2, 7),
                        (20, 1, 6),
                        (22, 0, 5),
                    ]
                    .iter()
                    .map(|(k, min, max)| {
                        ApiVersion::default().with_api_key(*k).with_min_version(*min).with_max_version(*max)
                    })
                    .collect(),
                )
                .encode(&mut body, version),
            ApiKey::Metadata => {
                let Ok(request) = MetadataRequest::decode(&mut body_bytes.freeze(), version) else { return };
                let names: Vec<String> = request
                    .topics
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|t| t.name.as_ref().map(|n| n.as_str().to_owned()))
                    .collect();
                MetadataResponse::default()
                    .with_brokers(vec![
                        MetadataResponseBroker::default()
                            .with_node_id(BrokerId(0))
                            .with_host(StrBytes::from_string(addr.ip().to_string()))
                            .with_port(i32::from(addr.port())),
                    ])
                    .with_cluster_id(Some(StrBytes::from_static_str("bench-sink")))
                    .with_controller_id(BrokerId(0))
                    .with_topics(
                        names
                            .iter()
                            .map(|n| {
                                MetadataResponseTopic::default()
                                    .with_name(Some(TopicName(StrBytes::from_string(n.clone()))))
                                    .with_topic_id(if version >= 10 { topic_id(n) } else { uuid::Uuid::nil() })
                                    .with_partitions(
                                        (0..partitions)
                                            .map(|p| {
                                                MetadataResponsePartition::default()
                                                    .with_partition_index(p)
                                                    .with_leader_id(BrokerId(0))
                                                    .with_replica_nodes(vec![BrokerId(0)])
                                                    .with_isr_nodes(vec![BrokerId(0)])
                                            })
                                            .collect(),
                                    )
                            })
                            .collect(),
                    )
                    .encode(&mut body, version)
            }
            ApiKey::CreateTopics => {
                let Ok(request) = CreateTopicsRequest::decode(&mut body_bytes.freeze(), version) else { return };
                CreateTopicsResponse::default()
                    .with_topics(
                        request
                            .topics
                            .iter()
                            .map(|t| CreatableTopicResult::default().with_name(t.name.clone()))
                            .collect(),
                    )
                    .encode(&mut body, version)
            }
            ApiKey::DeleteTopics => DeleteTopicsResponse::default().encode(&mut body, version),
            ApiKey::ListOffsets => {
                let Ok(request) = ListOffsetsRequest::decode(&mut body_bytes.freeze(), version) else { return };
                ListOffsetsResponse::default()
                    .with_topics(
                        request
                            .topics
                            .iter()
                            .map(|t| {
                                ListOffsetsTopicResponse::default().with_name(t.name.clone()).with_partitions(
                                    t.partitions
                                        .iter()
                                        .map(|p| {
                                            ListOffsetsPartitionResponse::default()
                                                .with_partition_index(p.partition_index)
                                        })
                                        .collect(),
                                )
                            })
                            .collect(),
                    )
                    .encode(&mut body, version)
            }
            ApiKey::Produce => {
                let Ok(request) = ProduceRequest::decode(&mut body_bytes.freeze(), version) else { return };
                if request.acks == 0 {
                    continue;
                }
                ProduceResponse::default()
                    .with_responses(
                        request
                            .topic_data
                            .iter()
                            .map(|t| {
                                let name = t.name.as_str().to_owned();
                                TopicProduceResponse::default()
                                    .with_name(TopicName(StrBytes::from_string(name.clone())))
                                    .with_partition_responses(
                                        t.partition_data
                                            .iter()
                                            .map(|p| {
                                                let next = offsets.entry((name.clone(), p.index)).or_default();
                                                let base = *next;
                                                *next += 1;
                                                PartitionProduceResponse::default()
                                                    .with_index(p.index)
                                                    .with_base_offset(base)
                                            })
                                            .collect(),
                                    )
                            })
                            .collect(),
                    )
                    .encode(&mut body, version)
            }
            ApiKey::InitProducerId => {
                InitProducerIdResponse::default().with_producer_id(ProducerId(1)).encode(&mut body, version)
            }
            _ => return,
        };
        if encoded.is_err() {
            return;
        }
        let mut frame_out = bytes::BytesMut::with_capacity(body.len() + 9);
        let flexible_header = key.response_header_version(version) >= 1;
        let size = body.len() + if flexible_header { 5 } else { 4 };
        frame_out.extend_from_slice(&(size as i32).to_be_bytes());
        frame_out.extend_from_slice(&h.correlation_id.to_be_bytes());
        if flexible_header {
            frame_out.extend_from_slice(&[0]);
        }
        frame_out.extend_from_slice(&body);
        if writer.write_all(vec![frame_out.freeze()]).await.is_err() {
            return;
        }
    }
}
