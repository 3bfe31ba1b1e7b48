//! Protocol fuzzing against the real broker: valid requests of every API and version it
//! speaks, mutated (bits flipped, bytes replaced, cut short, lengthened, lengths made huge),
//! sent over real sockets. The broker must neither panic nor stop serving: a healthy client
//! checks in between, and at the end the process is still the one that started.
//!
//! Bounded: MOLDAU_FUZZ_CASES mutated frames (3000 by default), seed MOLDAU_FUZZ_SEED (printed).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use common::Broker;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Request, StrBytes};
use moldau::client::KafkaClient;
use moldau::io::block_on;
use moldau::model::records::{EncodeOptions, KeyValue, encode_batch};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// One valid request: api key, version, header version, body.
struct Seed {
    key: i16,
    version: i16,
    header_version: i16,
    body: Vec<u8>,
}

/// `request` encoded at every version of its range that it encodes at.
fn seeds_of<R: Request>(request: &R, out: &mut Vec<Seed>) {
    for version in R::VERSIONS.min..=R::VERSIONS.max {
        let mut body = BytesMut::new();
        if request.encode(&mut body, version).is_ok() {
            out.push(Seed { key: R::KEY, version, header_version: R::header_version(version), body: body.to_vec() });
        }
    }
}

/// The group the group APIs' seeds name.
fn group() -> GroupId {
    GroupId(StrBytes::from_static_str("fuzz-group"))
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_owned()))
}

/// A request of every API the broker lists, most with some content, at every version.
fn corpus() -> Vec<Seed> {
    use kafka_protocol::messages::alter_user_scram_credentials_request::ScramCredentialUpsertion;
    use kafka_protocol::messages::create_acls_request::AclCreation;
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    let values: Vec<KeyValue> = (0..3).map(|i| (Some(Bytes::from(format!("k{i}"))), Some(Bytes::from("v")))).collect();
    let batch = encode_batch(&values, &EncodeOptions::default()).freeze();
    let mut out = Vec::new();
    seeds_of(
        &ProduceRequest::default().with_acks(-1).with_timeout_ms(1000).with_topic_data(vec![
            TopicProduceData::default()
                .with_name(name("fuzz"))
                .with_partition_data(vec![PartitionProduceData::default().with_index(0).with_records(Some(batch))]),
        ]),
        &mut out,
    );
    seeds_of(
        &FetchRequest::default().with_max_wait_ms(10).with_max_bytes(1 << 20).with_topics(vec![
            FetchTopic::default()
                .with_topic(name("fuzz"))
                .with_partitions(vec![FetchPartition::default().with_partition(0).with_partition_max_bytes(1 << 20)]),
        ]),
        &mut out,
    );
    seeds_of(
        &ListOffsetsRequest::default().with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(name("fuzz"))
                .with_partitions(vec![ListOffsetsPartition::default().with_timestamp(-1)]),
        ]),
        &mut out,
    );
    seeds_of(
        &MetadataRequest::default()
            .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(name("fuzz")))])),
        &mut out,
    );
    seeds_of(&ApiVersionsRequest::default(), &mut out);
    seeds_of(
        &CreateTopicsRequest::default().with_timeout_ms(1000).with_topics(vec![
            CreatableTopic::default().with_name(name("fuzz-new")).with_num_partitions(1).with_replication_factor(1),
        ]),
        &mut out,
    );
    seeds_of(&DeleteTopicsRequest::default(), &mut out);
    seeds_of(&DeleteRecordsRequest::default(), &mut out);
    seeds_of(&DescribeConfigsRequest::default(), &mut out);
    seeds_of(&AlterConfigsRequest::default(), &mut out);
    seeds_of(&CreatePartitionsRequest::default(), &mut out);
    seeds_of(&IncrementalAlterConfigsRequest::default(), &mut out);
    seeds_of(&DescribeClusterRequest::default(), &mut out);
    seeds_of(&InitProducerIdRequest::default().with_transaction_timeout_ms(1000), &mut out);
    seeds_of(&FindCoordinatorRequest::default().with_key(StrBytes::from_static_str("fuzz-group")), &mut out);
    seeds_of(
        &JoinGroupRequest::default()
            .with_group_id(group())
            .with_session_timeout_ms(6000)
            .with_rebalance_timeout_ms(100)
            .with_protocol_type(StrBytes::from_static_str("consumer")),
        &mut out,
    );
    seeds_of(&SyncGroupRequest::default().with_group_id(group()), &mut out);
    seeds_of(&HeartbeatRequest::default().with_group_id(group()), &mut out);
    seeds_of(&LeaveGroupRequest::default().with_group_id(group()), &mut out);
    seeds_of(
        &OffsetCommitRequest::default().with_group_id(group()).with_topics(vec![
            OffsetCommitRequestTopic::default()
                .with_name(name("fuzz"))
                .with_partitions(vec![OffsetCommitRequestPartition::default().with_committed_offset(1)]),
        ]),
        &mut out,
    );
    seeds_of(&OffsetFetchRequest::default().with_group_id(group()), &mut out);
    seeds_of(&ListGroupsRequest::default(), &mut out);
    seeds_of(&DescribeGroupsRequest::default(), &mut out);
    seeds_of(&DeleteGroupsRequest::default(), &mut out);
    seeds_of(&OffsetDeleteRequest::default().with_group_id(group()), &mut out);
    seeds_of(&OffsetForLeaderEpochRequest::default(), &mut out);
    seeds_of(&ElectLeadersRequest::default(), &mut out);
    seeds_of(&DescribeQuorumRequest::default(), &mut out);
    seeds_of(&AlterPartitionReassignmentsRequest::default(), &mut out);
    seeds_of(&ListPartitionReassignmentsRequest::default(), &mut out);
    seeds_of(&DescribeLogDirsRequest::default(), &mut out);
    {
        use kafka_protocol::messages::alter_replica_log_dirs_request::{AlterReplicaLogDir, AlterReplicaLogDirTopic};
        use kafka_protocol::messages::describe_producers_request::TopicRequest as ProducersTopic;
        use kafka_protocol::messages::describe_topic_partitions_request::TopicRequest as PartitionsTopic;
        seeds_of(
            &AlterReplicaLogDirsRequest::default().with_dirs(vec![
                AlterReplicaLogDir::default().with_path(StrBytes::from_static_str("/nowhere")).with_topics(vec![
                    AlterReplicaLogDirTopic::default().with_name(name("fuzz")).with_partitions(vec![0]),
                ]),
            ]),
            &mut out,
        );
        seeds_of(
            &DescribeProducersRequest::default()
                .with_topics(vec![ProducersTopic::default().with_name(name("fuzz")).with_partition_indexes(vec![0])]),
            &mut out,
        );
        seeds_of(
            &DescribeTopicPartitionsRequest::default()
                .with_topics(vec![PartitionsTopic::default().with_name(name("fuzz"))])
                .with_response_partition_limit(10),
            &mut out,
        );
        seeds_of(&ListConfigResourcesRequest::default().with_resource_types(vec![2, 4]), &mut out);
        seeds_of(
            &ConsumerGroupHeartbeatRequest::default()
                .with_group_id(GroupId(StrBytes::from_static_str("fuzz-848")))
                .with_member_id(StrBytes::from_static_str("fuzz-member"))
                .with_rebalance_timeout_ms(10_000)
                .with_subscribed_topic_names(Some(vec![name("fuzz")]))
                .with_topic_partitions(Some(Vec::new())),
            &mut out,
        );
        seeds_of(
            &ConsumerGroupDescribeRequest::default()
                .with_group_ids(vec![GroupId(StrBytes::from_static_str("fuzz-848"))])
                .with_include_authorized_operations(true),
            &mut out,
        );
    }
    seeds_of(&SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN")), &mut out);
    seeds_of(&SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from_static(b"\0u\0p")), &mut out);
    seeds_of(
        &CreateAclsRequest::default().with_creations(vec![
            AclCreation::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str("fuzz"))
                .with_resource_pattern_type(3)
                .with_principal(StrBytes::from_static_str("User:fuzz"))
                .with_host(StrBytes::from_static_str("*"))
                .with_operation(3)
                .with_permission_type(3),
        ]),
        &mut out,
    );
    seeds_of(&DescribeAclsRequest::default().with_resource_type_filter(1).with_pattern_type_filter(1), &mut out);
    seeds_of(&DeleteAclsRequest::default(), &mut out);
    seeds_of(
        &AlterUserScramCredentialsRequest::default().with_upsertions(vec![
            ScramCredentialUpsertion::default()
                .with_name(StrBytes::from_static_str("fuzz"))
                .with_mechanism(1)
                .with_iterations(4096)
                .with_salt(Bytes::from_static(b"salt"))
                .with_salted_password(Bytes::from_static(b"salted")),
        ]),
        &mut out,
    );
    seeds_of(&DescribeUserScramCredentialsRequest::default(), &mut out);
    seeds_of(&AlterClientQuotasRequest::default(), &mut out);
    seeds_of(&DescribeClientQuotasRequest::default(), &mut out);
    // Only versions the broker serves (SaslHandshake v0 is not: its tokens come unframed).
    let served = moldau::kafka::handlers::supported_apis();
    out.retain(|s| served.iter().any(|(k, min, max)| *k as i16 == s.key && (*min..=*max).contains(&s.version)));
    out
}

/// A mutated copy of `body`.
fn mutate(body: &[u8], rng: &mut StdRng) -> Vec<u8> {
    let mut b = body.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        match rng.random_range(0..7) {
            0 if !b.is_empty() => {
                let i = rng.random_range(0..b.len());
                b[i] ^= 1 << rng.random_range(0..8);
            }
            1 if !b.is_empty() => {
                let i = rng.random_range(0..b.len());
                b[i] = [0x00, 0xff, 0x7f, 0x80][rng.random_range(0..4)];
            }
            2 if !b.is_empty() => {
                let cut = rng.random_range(0..b.len());
                b.truncate(cut);
            }
            3 => {
                let at = rng.random_range(0..=b.len());
                let extra: Vec<u8> = (0..rng.random_range(1..16)).map(|_| rng.random()).collect();
                b.splice(at..at, extra);
            }
            // A length or count made huge (an i32 or a varint where one may be).
            4 if b.len() >= 4 => {
                let i = rng.random_range(0..b.len() - 3);
                b[i..i + 4].copy_from_slice(&[0x7f, 0xff, 0xff, 0xff]);
            }
            5 if !b.is_empty() => {
                let i = rng.random_range(0..b.len());
                b.splice(i..i, [0xff, 0xff, 0xff, 0xff, 0x0f]);
            }
            _ => b.extend_from_slice(&[0u8; 8]),
        }
    }
    b
}

/// The frame of `seed` with `body`: size, header (its version's shape), body.
fn frame(seed: &Seed, body: &[u8], correlation_id: i32) -> Vec<u8> {
    let mut f = BytesMut::new();
    f.put_i16(seed.key);
    f.put_i16(seed.version);
    f.put_i32(correlation_id);
    f.put_i16(4);
    f.put_slice(b"fuzz");
    if seed.header_version >= 2 {
        f.put_u8(0);
    }
    f.put_slice(body);
    let mut out = (f.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&f);
    out
}

/// Sends one frame; reads whatever comes back within a moment. False when the connection is
/// done (closed by the broker, which is its right after a malformed request).
fn exchange(stream: &mut TcpStream, bytes: &[u8]) -> bool {
    if stream.write_all(bytes).is_err() {
        return false;
    }
    let mut buf = [0u8; 64 << 10];
    loop {
        match stream.read(&mut buf) {
            Ok(n) => return n > 0,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

fn healthy(broker: &Broker) {
    block_on(async {
        let client = KafkaClient::connect(&broker.addr, "fuzz-health").await.expect("the broker still accepts");
        client.metadata(None, false).await.expect("the broker still answers");
        let values: Vec<KeyValue> = vec![(None, Some(Bytes::from("healthy")))];
        let batch = encode_batch(&values, &EncodeOptions::default()).freeze();
        client.produce("health", 0, batch, -1, 10_000).await.expect("the broker still takes writes");
    });
}

#[test]
fn mutated_requests_of_every_api_neither_crash_the_broker_nor_stop_it_serving() {
    let cases: usize = std::env::var("MOLDAU_FUZZ_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(3000);
    let seed: u64 = std::env::var("MOLDAU_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    println!("fuzz: {cases} cases, MOLDAU_FUZZ_SEED={seed}");
    let broker = Broker::start("fuzz", &["--set", "request_read_timeout_ms=2000"]);
    block_on(async {
        let client = KafkaClient::connect(&broker.addr, "fuzz").await.unwrap();
        for topic in ["fuzz", "health"] {
            client.create_topic(topic, 1, 1, &std::collections::BTreeMap::new()).await.unwrap();
        }
    });
    let pid = broker.pid();
    let corpus = corpus();
    let apis: std::collections::BTreeSet<i16> = corpus.iter().map(|s| s.key).collect();
    let listed: std::collections::BTreeSet<i16> =
        moldau::kafka::handlers::supported_apis().iter().map(|(k, _, _)| *k as i16).collect();
    assert_eq!(apis, listed, "the corpus covers every API the broker lists");
    // The unmutated seeds are answered (they are valid requests).
    for s in &corpus {
        let mut stream = TcpStream::connect(&broker.addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert!(exchange(&mut stream, &frame(s, &s.body, 1)), "api {} v{} unanswered", s.key, s.version);
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut stream: Option<TcpStream> = None;
    let mut previous = String::new();
    for case in 0..cases {
        let s = &corpus[rng.random_range(0..corpus.len())];
        let body = mutate(&s.body, &mut rng);
        let started = std::time::Instant::now();
        let conn = stream.get_or_insert_with(|| {
            let c = TcpStream::connect(&broker.addr).expect("the broker still accepts connections");
            c.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
            c
        });
        if !exchange(conn, &frame(s, &body, case as i32)) {
            stream = None;
        }
        // What stalls the broker shows here (with the case before, which may be the cause).
        let this = format!("case {case}: api {} v{} body {:02x?}", s.key, s.version, &body[..body.len().min(96)]);
        if started.elapsed() > Duration::from_secs(2) {
            println!("slow ({:?}): {this}\n  after {previous}", started.elapsed());
        }
        if std::env::var_os("MOLDAU_FUZZ_TRACE").is_some() {
            eprintln!("{:?} {this}", std::time::SystemTime::now());
        }
        previous = this;
        if case % 250 == 249 {
            healthy(&broker);
        }
    }
    drop(stream);
    healthy(&broker);
    assert_eq!(broker.pid(), pid);
    let log = broker.log();
    assert!(!log.contains("panicked"), "the broker panicked (MOLDAU_FUZZ_SEED={seed}):\n{log}");
}
