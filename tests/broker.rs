//! The broker through its wire protocol: our client for the happy paths, raw sockets for bad
//! input, SIGKILL and SIGTERM for durability, and /proc plus the metrics endpoint for shards.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use common::{Broker, SmallDisk, TempDir, http_get};
use moldau::client::{ClientError, KafkaClient};
use moldau::io::block_on;
use moldau::model::records::{EncodeOptions, KeyValue, decode_records, encode_batch};

fn records(n: usize, tag: &str) -> Bytes {
    let values: Vec<KeyValue> =
        (0..n).map(|i| (Some(Bytes::from(format!("k{i}"))), Some(Bytes::from(format!("{tag}-{i}"))))).collect();
    encode_batch(&values, &EncodeOptions::default()).freeze()
}

fn code_of(err: ClientError) -> i16 {
    err.code().unwrap_or_else(|| panic!("expected a Kafka error code, got {err}"))
}

/// Sends a raw request frame and returns the response body after the correlation id, or None
/// when the broker closed the connection.
fn raw_request(stream: &mut TcpStream, api_key: i16, version: i16, body: &[u8]) -> Option<Vec<u8>> {
    stream.write_all(&common::request_frame(api_key, version, body)).ok()?;
    read_response(stream)
}

fn read_response(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).ok()?;
    let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
    stream.read_exact(&mut body).ok()?;
    assert_eq!(i32::from_be_bytes(body[..4].try_into().unwrap()), 77, "correlation id echoed");
    Some(body[4..].to_vec())
}

fn closed(stream: &mut TcpStream) -> bool {
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 1];
    matches!(stream.read(&mut buf), Ok(0) | Err(_))
}

fn connect(broker: &Broker) -> TcpStream {
    let stream = TcpStream::connect(&broker.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream
}

/// The broker still answers a healthy client.
fn still_serves(broker: &Broker) {
    block_on(async {
        let client = KafkaClient::connect(&broker.addr, "health").await.expect("broker still serves");
        client.metadata(None, false).await.expect("metadata after bad input");
    });
}

#[test]
fn api_versions_answers_unknown_versions_in_v0_form() {
    let broker = Broker::start("apiversions", &[]);
    let mut stream = connect(&broker);
    let body = raw_request(&mut stream, 18, 99, &[]).expect("answered");
    assert_eq!(i16::from_be_bytes([body[0], body[1]]), 35, "UNSUPPORTED_VERSION");
    let count = i32::from_be_bytes(body[2..6].try_into().unwrap());
    assert!(count > 10, "the v0 answer lists our APIs ({count})");
    // And the connection stays usable for the client's retry at a version we speak.
    let body = raw_request(&mut stream, 18, 0, &[]).expect("answered");
    assert_eq!(i16::from_be_bytes([body[0], body[1]]), 0);
}

#[test]
fn metadata_names_this_broker_as_controller() {
    let broker = Broker::start("metadata", &[]);
    block_on(async {
        let client = KafkaClient::connect(&broker.addr, "t").await.unwrap();
        let metadata = client.metadata(None, false).await.unwrap();
        assert_eq!(metadata.brokers.len(), 1);
        assert_eq!(metadata.controller_id, metadata.brokers[0].node_id);
        assert_eq!(format!("{}:{}", metadata.brokers[0].host.as_str(), metadata.brokers[0].port), broker.addr);
        assert!(metadata.cluster_id.is_some());
    });
}

#[test]
fn malformed_frames_close_only_their_connection() {
    let broker = Broker::start("badframes", &["--set", "control_request_max_bytes=65536"]);
    // A healthy client connected throughout.
    let healthy = std::thread::spawn({
        let addr = broker.addr.clone();
        move || {
            block_on(async {
                let client = KafkaClient::connect(&addr, "healthy").await.unwrap();
                for _ in 0..20 {
                    client.metadata(None, false).await.unwrap();
                    moldau::io::sleep(Duration::from_millis(20)).await;
                }
            })
        }
    });
    // Oversized frame (non-produce limit 64 KiB).
    let mut s = connect(&broker);
    s.write_all(&(1_000_000i32).to_be_bytes()).unwrap();
    s.write_all(&3i16.to_be_bytes()).unwrap();
    assert!(closed(&mut s), "oversized frame closes the connection");
    // Negative size.
    let mut s = connect(&broker);
    s.write_all(&(-5i32).to_be_bytes()).unwrap();
    assert!(closed(&mut s));
    // Truncated frame, then the peer goes away.
    let mut s = connect(&broker);
    s.write_all(&100i32.to_be_bytes()).unwrap();
    s.write_all(&[0, 3, 0, 1]).unwrap();
    drop(s);
    // Garbage.
    let mut s = connect(&broker);
    s.write_all(&[0xde, 0xad, 0xbe, 0xef, 0x13, 0x37, 0xff, 0xff, 0x00, 0x01, 0x02, 0x03]).unwrap();
    assert!(closed(&mut s));
    // Unknown API key and unsupported version.
    let mut s = connect(&broker);
    assert!(raw_request(&mut s, 999, 0, &[]).is_none(), "unknown API key closes");
    let mut s = connect(&broker);
    assert!(raw_request(&mut s, 0, 1, &[0; 16]).is_none(), "Produce v1 is below our range");
    // A body that does not decode.
    let mut s = connect(&broker);
    assert!(raw_request(&mut s, 3, 12, &[0xff; 7]).is_none(), "undecodable Metadata closes");
    // An array count far beyond the bytes present must not allocate or crash.
    let mut s = connect(&broker);
    assert!(raw_request(&mut s, 3, 1, &[0x7f, 0xff, 0xff, 0xff]).is_none());
    healthy.join().unwrap();
    still_serves(&broker);
    assert!(!broker.log().contains("panicked"), "no panics:\n{}", broker.log());
}

#[test]
fn produce_errors_get_kafka_codes_and_write_nothing() {
    let broker = Broker::start("produce-errors", &["--set", "auto_create_topics=false"]);
    block_on(async {
        let client = KafkaClient::connect(&broker.addr, "t").await.unwrap();
        let mut configs = BTreeMap::new();
        configs.insert("max.message.bytes".to_owned(), "2000".to_owned());
        client.create_topic("small", 2, 1, &configs).await.unwrap();
        client.produce("small", 0, records(3, "ok"), -1, 5000).await.unwrap();
        let before = client.list_offset("small", 0, -1).await.unwrap().0;
        assert_eq!(before, 3);

        // Record batch larger than max.message.bytes.
        let big = encode_batch(&[(None, Some(Bytes::from(vec![b'x'; 5000])))], &EncodeOptions::default()).freeze();
        assert_eq!(code_of(client.produce("small", 0, big, -1, 5000).await.unwrap_err()), 10, "MESSAGE_TOO_LARGE");
        // Corrupt CRC.
        let mut corrupt = BytesMut::from(&records(2, "bad")[..]);
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0xff;
        assert_eq!(
            code_of(client.produce("small", 0, corrupt.freeze(), -1, 5000).await.unwrap_err()),
            2,
            "CORRUPT_MESSAGE"
        );
        // Truncated batch.
        let truncated = records(2, "cut").slice(..40);
        assert_eq!(code_of(client.produce("small", 0, truncated, -1, 5000).await.unwrap_err()), 2, "CORRUPT_MESSAGE");
        // Unknown partition and unknown topic.
        let conn = client.any().await.unwrap();
        let produce = |topic: &str, partition: i32| {
            use kafka_protocol::messages::ProduceRequest;
            use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
            ProduceRequest::default().with_acks(-1).with_timeout_ms(5000).with_topic_data(vec![
                TopicProduceData::default().with_name(moldau::client::topic_name(topic)).with_partition_data(vec![
                    PartitionProduceData::default().with_index(partition).with_records(Some(records(1, "x"))),
                ]),
            ])
        };
        for (topic, partition, expected) in [("small", 9, 3i16), ("nope", 0, 3), ("bad name!", 0, 3)] {
            let (response, _) = conn.send_capped(produce(topic, partition), 12).await.unwrap();
            assert_eq!(response.responses[0].partition_responses[0].error_code, expected, "{topic}-{partition}");
        }
        // Invalid acks.
        let (response, _) = conn.send_capped(produce("small", 0).with_acks(5), 12).await.unwrap();
        assert_eq!(response.responses[0].partition_responses[0].error_code, 21, "INVALID_REQUIRED_ACKS");
        // acks=all with min.insync.replicas above the in-sync replicas (one, on a single node):
        // NOT_ENOUGH_REPLICAS and nothing written; acks=1 still appends.
        let mut strict = BTreeMap::new();
        strict.insert("min.insync.replicas".to_owned(), "2".to_owned());
        client.create_topic("strict", 1, 1, &strict).await.unwrap();
        let (response, _) = conn.send_capped(produce("strict", 0), 12).await.unwrap();
        assert_eq!(response.responses[0].partition_responses[0].error_code, 19, "NOT_ENOUGH_REPLICAS");
        assert_eq!(client.list_offset("strict", 0, -1).await.unwrap().0, 0);
        client.produce("strict", 0, records(1, "one"), 1, 5000).await.unwrap();
        assert_eq!(client.list_offset("strict", 0, -1).await.unwrap().0, 1);
        // Nothing was written by any of them.
        assert_eq!(client.list_offset("small", 0, -1).await.unwrap().0, before);
        // Invalid topic names are refused at creation.
        let err = client.create_topic("bad/name", 1, 1, &BTreeMap::new()).await.unwrap_err();
        assert_eq!(code_of(err), 17, "INVALID_TOPIC_EXCEPTION");
        let err = client.create_topic("small", 1, 1, &BTreeMap::new()).await.unwrap_err();
        assert_eq!(code_of(err), 36, "TOPIC_ALREADY_EXISTS");
        let err = client.create_topic("rf", 1, 3, &BTreeMap::new()).await.unwrap_err();
        assert_eq!(code_of(err), 38, "INVALID_REPLICATION_FACTOR");
        let mut bad = BTreeMap::new();
        bad.insert("retention.ms".to_owned(), "soon".to_owned());
        assert_eq!(code_of(client.create_topic("cfg", 1, 1, &bad).await.unwrap_err()), 40, "INVALID_CONFIG");
        // Fetching an offset past the end.
        assert_eq!(code_of(client.fetch("small", 0, 1000, 1024, 0).await.unwrap_err()), 1, "OFFSET_OUT_OF_RANGE");
    });
}

#[test]
fn topics_configs_offsets_and_delete_records() {
    let broker = Broker::start("admin", &[]);
    block_on(async {
        let client = KafkaClient::connect(&broker.addr, "t").await.unwrap();
        client.create_topic("adm", 3, 1, &BTreeMap::new()).await.unwrap();
        let configs = client.describe_topic_configs("adm").await.unwrap();
        let retention = configs.iter().find(|c| c.name == "retention.ms").unwrap();
        assert!(retention.is_default);
        use moldau::client::admin::ConfigOp;
        client
            .alter_topic_configs(
                "adm",
                &[
                    ConfigOp::Set("retention.ms".into(), "12345".into()),
                    ConfigOp::Set("cleanup.policy".into(), "compact".into()),
                ],
            )
            .await
            .unwrap();
        let configs = client.describe_topic_configs("adm").await.unwrap();
        let get = |name: &str| configs.iter().find(|c| c.name == name).unwrap().clone();
        assert_eq!(get("retention.ms").value.as_deref(), Some("12345"));
        assert!(!get("retention.ms").is_default);
        assert_eq!(get("cleanup.policy").value.as_deref(), Some("compact"));
        client.alter_topic_configs("adm", &[ConfigOp::Delete("cleanup.policy".into())]).await.unwrap();
        let configs = client.describe_topic_configs("adm").await.unwrap();
        assert_eq!(configs.iter().find(|c| c.name == "cleanup.policy").unwrap().value.as_deref(), Some("delete"));
        let err =
            client.alter_topic_configs("adm", &[ConfigOp::Set("segment.bytes".into(), "1".into())]).await.unwrap_err();
        assert_eq!(code_of(err), 40);

        // Offsets: earliest, latest, by time, max timestamp.
        for (i, ts) in [1000i64, 2000, 3000].iter().enumerate() {
            let batch = encode_batch(
                &[(None, Some(Bytes::from(format!("v{i}"))))],
                &EncodeOptions { compression: 0, timestamp_ms: Some(*ts) },
            )
            .freeze();
            client.produce("adm", 0, batch, -1, 5000).await.unwrap();
        }
        assert_eq!(client.list_offset("adm", 0, -2).await.unwrap().0, 0);
        assert_eq!(client.list_offset("adm", 0, -1).await.unwrap().0, 3);
        assert_eq!(client.list_offset("adm", 0, 1500).await.unwrap(), (1, 2000));
        assert_eq!(client.list_offset("adm", 0, 9999).await.unwrap().0, -1);
        assert_eq!(client.list_offset("adm", 0, -3).await.unwrap(), (2, 3000));

        // DeleteRecords moves the log start; reads below it are out of range.
        assert_eq!(client.delete_records("adm", 0, 2).await.unwrap(), 2);
        assert_eq!(client.list_offset("adm", 0, -2).await.unwrap().0, 2);
        assert_eq!(code_of(client.fetch("adm", 0, 0, 1024, 0).await.unwrap_err()), 1);
        assert_eq!(code_of(client.delete_records("adm", 0, 99).await.unwrap_err()), 1, "beyond the high watermark");

        // CreatePartitions, then delete the topic.
        client.create_partitions("adm", 5).await.unwrap();
        assert_eq!(client.topic("adm", false).await.unwrap().partitions.len(), 5);
        assert_eq!(code_of(client.create_partitions("adm", 2).await.unwrap_err()), 37, "INVALID_PARTITIONS");
        client.delete_topic("adm").await.unwrap();
        assert_eq!(code_of(client.topic("adm", false).await.unwrap_err()), 3);
        assert_eq!(code_of(client.delete_topic("adm").await.unwrap_err()), 3);
    });
}

#[test]
fn fetch_long_poll_wakes_when_data_arrives() {
    let broker = Broker::start("longpoll", &[]);
    block_on(async {
        let client = KafkaClient::connect(&broker.addr, "t").await.unwrap();
        client.create_topic("lp", 1, 1, &BTreeMap::new()).await.unwrap();
        let producer = KafkaClient::connect(&broker.addr, "p").await.unwrap();
        let start = Instant::now();
        let write = moldau::io::spawn(async move {
            moldau::io::sleep(Duration::from_millis(300)).await;
            producer.produce("lp", 0, records(1, "late"), -1, 5000).await.unwrap();
        });
        // max_wait is 20 s: returning with the data much earlier proves the wake-up.
        let fetched = client.fetch("lp", 0, 0, 1 << 20, 20_000).await.unwrap();
        let elapsed = start.elapsed();
        write.await.unwrap();
        let got = decode_records(fetched.records).unwrap();
        assert_eq!(got.len(), 1);
        assert!(elapsed < Duration::from_secs(10), "long poll was not woken by the append ({elapsed:?})");
        // With nothing to read, it waits for max_wait and returns empty.
        let start = Instant::now();
        let empty = client.fetch("lp", 0, 1, 1 << 20, 300).await.unwrap();
        assert!(empty.records.is_empty());
        assert!(start.elapsed() >= Duration::from_millis(250));
    });
}

fn produce_acked(addr: &str, topic: &str, partitions: i32, batches: usize) -> Vec<(i32, i64, Bytes)> {
    block_on(async {
        let client = KafkaClient::connect(addr, "durable").await.unwrap();
        let mut acked = Vec::new();
        for i in 0..batches {
            let p = (i % partitions as usize) as i32;
            let batch = records(1 + i % 5, &format!("b{i}"));
            let offset = client.produce(topic, p, batch.clone(), -1, 10_000).await.unwrap();
            acked.push((p, offset, batch));
        }
        acked
    })
}

fn assert_all_present(addr: &str, topic: &str, acked: &[(i32, i64, Bytes)]) {
    block_on(async {
        let client = KafkaClient::connect(addr, "verify").await.unwrap();
        for (p, offset, batch) in acked {
            let fetched = client.fetch(topic, *p, *offset, 1 << 20, 0).await.unwrap();
            let got = decode_records(fetched.records).unwrap();
            let want = decode_records(batch.clone()).unwrap();
            let got: Vec<_> =
                got.iter().filter(|r| r.offset >= *offset).take(want.len()).map(|r| r.value.clone()).collect();
            let want: Vec<_> = want.iter().map(|r| r.value.clone()).collect();
            assert_eq!(got, want, "partition {p} offset {offset}");
        }
    });
}

#[test]
fn acknowledged_records_survive_sigkill_with_flush_always() {
    let mut broker = Broker::start("sigkill", &["--flush", "always", "--shards", "2"]);
    block_on(async {
        let client = KafkaClient::connect(&broker.addr, "t").await.unwrap();
        client.create_topic("d", 4, 1, &BTreeMap::new()).await.unwrap();
    });
    let acked = produce_acked(&broker.addr, "d", 4, 200);
    broker.kill();
    broker.restart();
    assert_all_present(&broker.addr, "d", &acked);
    // And the log continues where it was.
    block_on(async {
        let client = KafkaClient::connect(&broker.addr, "t").await.unwrap();
        let end = client.list_offset("d", 0, -1).await.unwrap().0;
        let offset = client.produce("d", 0, records(1, "after"), -1, 5000).await.unwrap();
        assert_eq!(offset, end);
    });
}

#[test]
fn clean_shutdown_and_restart_find_every_topic_and_record() {
    let mut broker = Broker::start("restart", &["--flush", "interval:50"]);
    block_on(async {
        let client = KafkaClient::connect(&broker.addr, "t").await.unwrap();
        client.create_topic("r1", 2, 1, &BTreeMap::new()).await.unwrap();
        let mut configs = BTreeMap::new();
        configs.insert("retention.bytes".to_owned(), "123456789".to_owned());
        client.create_topic("r2", 1, 1, &configs).await.unwrap();
    });
    let acked = produce_acked(&broker.addr, "r1", 2, 50);
    broker.restart_clean();
    let log = broker.log();
    assert!(log.contains("broker stopped"), "clean stop:\n{log}");
    assert_all_present(&broker.addr, "r1", &acked);
    block_on(async {
        let client = KafkaClient::connect(&broker.addr, "t").await.unwrap();
        let configs = client.describe_topic_configs("r2").await.unwrap();
        assert_eq!(configs.iter().find(|c| c.name == "retention.bytes").unwrap().value.as_deref(), Some("123456789"));
    });
}

#[test]
fn partitions_spread_over_pinned_shards_and_many_connections_stay_correct() {
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let metrics = format!("127.0.0.1:{metrics_port}");
    let broker = Broker::start("shards", &["--shards", "2", "--set", &format!("metrics_listen=\"{metrics}\"")]);
    block_on(async {
        let client = KafkaClient::connect(&broker.addr, "t").await.unwrap();
        client.create_topic("wide", 12, 1, &BTreeMap::new()).await.unwrap();
    });
    // Twelve producers on their own connections, each writing every partition.
    let threads: Vec<_> = (0..12)
        .map(|t| {
            let addr = broker.addr.clone();
            std::thread::spawn(move || {
                block_on(async {
                    let client = KafkaClient::connect(&addr, &format!("p{t}")).await.unwrap();
                    for round in 0..5 {
                        for p in 0..12 {
                            client
                                .produce("wide", p, records(2, &format!("t{t}-r{round}-p{p}")), -1, 10_000)
                                .await
                                .unwrap();
                        }
                    }
                })
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // Every partition holds exactly its 12 × 5 batches, each intact.
    block_on(async {
        let client = KafkaClient::connect(&broker.addr, "check").await.unwrap();
        for p in 0..12 {
            let mut offset = 0;
            let mut values = Vec::new();
            loop {
                let fetched = client.fetch("wide", p, offset, 1 << 20, 0).await.unwrap();
                let recs = decode_records(fetched.records).unwrap();
                if recs.is_empty() {
                    break;
                }
                for r in recs {
                    offset = r.offset + 1;
                    values.push(String::from_utf8(r.value.unwrap().to_vec()).unwrap());
                }
            }
            assert_eq!(values.len(), 12 * 5 * 2, "partition {p}");
            for t in 0..12 {
                let mine: Vec<&String> = values.iter().filter(|v| v.starts_with(&format!("t{t}-"))).collect();
                let expected: Vec<String> =
                    (0..5).flat_map(|r| (0..2).map(move |i| format!("t{t}-r{r}-p{p}-{i}"))).collect();
                assert_eq!(
                    mine.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
                    expected,
                    "per-producer order, partition {p}"
                );
            }
        }
    });
    // Placement: both shards own partitions and both served produce traffic.
    let shards: serde_json::Value = serde_json::from_str(&http_get(&metrics, "/v1/shards")).unwrap();
    let shards = shards.as_array().unwrap();
    assert_eq!(shards.len(), 2);
    for s in shards {
        assert!(s["partitions"].as_u64().unwrap() >= 6, "balanced placement: {s}");
        assert!(s["produce_bytes"].as_u64().unwrap() > 0, "every shard appended: {s}");
    }
    let prometheus = http_get(&metrics, "/metrics");
    assert!(prometheus.contains("moldau_shard_requests_total{shard=\"1\"}"));
    // Pinning: each shard thread may run on exactly one CPU (the one it reports), and they differ.
    let mut cpus = Vec::new();
    for s in shards {
        let tid = s["thread_id"].as_i64().unwrap();
        let status = std::fs::read_to_string(format!("/proc/{}/task/{tid}/status", broker.pid())).unwrap();
        let allowed = status
            .lines()
            .find(|l| l.starts_with("Cpus_allowed_list"))
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_owned();
        assert!(
            !allowed.contains(',') && !allowed.contains('-'),
            "shard {} pinned to one CPU, found {allowed}",
            s["shard"]
        );
        assert_eq!(allowed, s["core"].as_u64().unwrap().to_string());
        let comm = std::fs::read_to_string(format!("/proc/{}/task/{tid}/comm", broker.pid())).unwrap();
        assert_eq!(comm.trim(), format!("moldau-shard-{}", s["shard"]));
        cpus.push(allowed);
    }
    cpus.dedup();
    assert_eq!(cpus.len(), 2, "shards pinned to different CPUs");
}

#[test]
fn large_and_pipelined_requests_arrive_intact() {
    // Frames much larger than one socket read, and many requests in flight on one connection:
    // the broker must reassemble each frame from several reads without mixing them up.
    let broker = Broker::start("bigframes", &[]);
    block_on(async {
        let client = KafkaClient::connect(&broker.addr, "big").await.unwrap();
        let mut configs = BTreeMap::new();
        configs.insert("max.message.bytes".to_owned(), (8 << 20).to_string());
        client.create_topic("big", 1, 1, &configs).await.unwrap();
        let value: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
        let batch = encode_batch(&[(None, Some(Bytes::from(value.clone())))], &EncodeOptions::default()).freeze();
        client.produce("big", 0, batch, -1, 30_000).await.unwrap();
        // 40 requests of ~200 KB in flight at once on the same connection.
        let client = std::rc::Rc::new(client);
        let mut tasks = Vec::new();
        for i in 0..40u32 {
            let client = client.clone();
            tasks.push(moldau::io::spawn(async move {
                let v = vec![(i % 200) as u8; 200_000];
                let batch = encode_batch(
                    &[(Some(Bytes::from(i.to_string())), Some(Bytes::from(v)))],
                    &EncodeOptions::default(),
                )
                .freeze();
                client.produce("big", 0, batch, -1, 30_000).await.unwrap()
            }));
        }
        let mut offsets = Vec::new();
        for t in tasks {
            offsets.push(t.await.unwrap());
        }
        offsets.sort();
        assert_eq!(offsets, (1..=40).collect::<Vec<i64>>(), "every pipelined produce got its own offset");
        let first = client.fetch("big", 0, 0, 8 << 20, 0).await.unwrap();
        let records = decode_records(first.records).unwrap();
        assert_eq!(records[0].value.as_deref(), Some(&value[..]), "the 5 MB record came back intact");
        let mut offset = 1;
        while offset <= 40 {
            let fetched = client.fetch("big", 0, offset, 1 << 20, 0).await.unwrap();
            for r in decode_records(fetched.records).unwrap() {
                let i: u32 = std::str::from_utf8(r.key.as_deref().unwrap()).unwrap().parse().unwrap();
                assert_eq!(r.value.as_deref(), Some(&vec![(i % 200) as u8; 200_000][..]), "record {i} intact");
                offset = r.offset + 1;
            }
        }
    });
}

#[test]
fn offset_for_leader_epoch_answers_where_an_epoch_ended() {
    use kafka_protocol::messages::OffsetForLeaderEpochRequest;
    use kafka_protocol::messages::offset_for_leader_epoch_request::{OffsetForLeaderPartition, OffsetForLeaderTopic};
    let broker = Broker::start("epochs", &[]);
    block_on(async {
        let client = KafkaClient::connect(&broker.addr, "t").await.unwrap();
        client.create_topic("ep", 1, 1, &BTreeMap::new()).await.unwrap();
        client.produce("ep", 0, records(4, "a"), -1, 5_000).await.unwrap();
        let ask = |leader_epoch: i32, current_leader_epoch: i32| {
            OffsetForLeaderEpochRequest::default().with_replica_id(kafka_protocol::messages::BrokerId(-1)).with_topics(
                vec![OffsetForLeaderTopic::default().with_topic(moldau::client::topic_name("ep")).with_partitions(
                    vec![
                    OffsetForLeaderPartition::default()
                        .with_partition(0)
                        .with_leader_epoch(leader_epoch)
                        .with_current_leader_epoch(current_leader_epoch),
                ],
                )],
            )
        };
        let conn = client.any().await.unwrap();
        let answer = |r: kafka_protocol::messages::OffsetForLeaderEpochResponse| {
            let p = &r.topics[0].partitions[0];
            (p.error_code, p.leader_epoch, p.end_offset)
        };
        assert_eq!(answer(conn.send(ask(0, -1)).await.unwrap()), (0, 0, 4), "epoch 0 is current: the log end");
        assert_eq!(answer(conn.send(ask(7, -1)).await.unwrap()), (0, -1, -1), "a future epoch is undefined");
        let (code, _, _) = answer(conn.send(ask(0, 3)).await.unwrap());
        assert_eq!(code, 75, "a newer current epoch than the leader's is UNKNOWN_LEADER_EPOCH");
    });
}

#[test]
fn metadata_finds_a_topic_by_id_whether_its_name_is_null_or_empty() {
    use kafka_protocol::messages::MetadataRequest;
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    let broker = Broker::start("metadata-by-id", &[]);
    block_on(async {
        let client = KafkaClient::connect(&broker.addr, "t").await.unwrap();
        client.create_topic("by-id", 2, 1, &BTreeMap::new()).await.unwrap();
        let id = client.topic("by-id", false).await.unwrap().id;
        let conn = client.any().await.unwrap();
        // The Java admin client's describeTopics(TopicCollection.ofTopicIds(..)) shape.
        for name in [None, Some(moldau::client::topic_name(""))] {
            let request = MetadataRequest::default()
                .with_topics(Some(vec![MetadataRequestTopic::default().with_topic_id(id).with_name(name.clone())]));
            let response = conn.send_version(request, 12).await.unwrap();
            let topic = &response.topics[0];
            assert_eq!(topic.error_code, 0, "name {name:?}");
            assert_eq!(topic.name.as_ref().map(|n| n.as_str()), Some("by-id"));
            assert_eq!((topic.topic_id, topic.partitions.len()), (id, 2));
        }
        let request = MetadataRequest::default().with_topics(Some(vec![
            MetadataRequestTopic::default().with_topic_id(uuid::Uuid::from_u128(9)).with_name(None),
        ]));
        let response = conn.send_version(request, 12).await.unwrap();
        assert_eq!(response.topics[0].error_code, 100, "UNKNOWN_TOPIC_ID");
    });
}

#[test]
fn an_offset_commit_from_outside_an_active_group_is_unknown_member_id() {
    let broker = Broker::start("admin-commit", &["--set", "group_initial_rebalance_delay_ms=0"]);
    block_on(async {
        let client = KafkaClient::connect(&broker.addr, "t").await.unwrap();
        client.create_topic("ac", 1, 1, &BTreeMap::new()).await.unwrap();
        client.commit_offsets("ac-group", &[("ac".to_owned(), 0, 3)]).await.expect("an empty group takes it");
        let member = moldau::client::member::GroupConsumer::join(&client, "ac-group", "ac", 1, 10_000).await.unwrap();
        let refused = client.commit_offsets("ac-group", &[("ac".to_owned(), 0, 5)]).await.unwrap_err();
        assert_eq!(code_of(refused), 25, "UNKNOWN_MEMBER_ID, as Kafka answers");
        member.commit(&[(0, 7)]).await.expect("the member's own commit");
        assert_eq!(client.committed_offsets("ac-group").await.unwrap(), vec![("ac".to_owned(), 0, 7)]);
    });
}

#[test]
fn list_groups_filters_by_state_and_type() {
    use kafka_protocol::messages::ListGroupsRequest;
    use kafka_protocol::protocol::StrBytes;
    let broker = Broker::start("list-groups", &["--set", "group_initial_rebalance_delay_ms=0"]);
    block_on(async {
        let client = KafkaClient::connect(&broker.addr, "t").await.unwrap();
        client.create_topic("lg", 1, 1, &BTreeMap::new()).await.unwrap();
        client.commit_offsets("lg-empty", &[("lg".to_owned(), 0, 1)]).await.unwrap();
        let _member = moldau::client::member::GroupConsumer::join(&client, "lg-stable", "lg", 1, 10_000).await.unwrap();
        let conn = client.any().await.unwrap();
        let list = |states: &[&str], types: &[&str]| {
            let request = ListGroupsRequest::default()
                .with_states_filter(states.iter().map(|s| StrBytes::from_string((*s).to_owned())).collect())
                .with_types_filter(types.iter().map(|s| StrBytes::from_string((*s).to_owned())).collect());
            let conn = &conn;
            async move {
                let response = conn.send_version(request, 5).await.unwrap();
                response.groups.iter().map(|g| g.group_id.as_str().to_owned()).collect::<Vec<_>>()
            }
        };
        assert_eq!(list(&[], &[]).await, ["lg-empty", "lg-stable"]);
        assert_eq!(list(&["stable"], &[]).await, ["lg-stable"], "states match case-insensitively");
        assert_eq!(list(&["Empty", "Dead"], &["classic"]).await, ["lg-empty"]);
        assert!(list(&[], &["consumer"]).await.is_empty(), "no KIP-848 groups exist");
        assert_eq!(list(&[], &["consumer", "Classic"]).await, ["lg-empty", "lg-stable"]);
    });
}

#[test]
fn kafkas_other_topic_configs_are_taken_and_record_timestamps_are_checked() {
    let broker = Broker::start("topic-configs", &[]);
    block_on(async {
        let client = KafkaClient::connect(&broker.addr, "t").await.unwrap();
        let configs: BTreeMap<String, String> = [
            ("message.timestamp.after.max.ms", "60000"),
            ("message.timestamp.before.max.ms", "3600000"),
            ("flush.ms", "1000"),
            ("segment.jitter.ms", "100"),
            ("min.compaction.lag.ms", "0"),
            ("file.delete.delay.ms", "1000"),
            ("leader.replication.throttled.replicas", "*"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        client.create_topic("stamped", 1, 1, &configs).await.expect("Kafka's topic configs are taken");
        let described = client.describe_topic_configs("stamped").await.unwrap();
        let get = |name: &str| described.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("{name}")).clone();
        assert_eq!(get("flush.ms").value.as_deref(), Some("1000"));
        assert!(!get("flush.ms").is_default);
        assert_eq!(get("flush.messages").value.as_deref(), Some("1"), "the broker's flush=always");
        let now = moldau::io::now_ms();
        let produce = |timestamp: i64| {
            let batch = encode_batch(
                &[(None, Some(Bytes::from("v")))],
                &EncodeOptions { compression: 0, timestamp_ms: Some(timestamp) },
            );
            let client = &client;
            async move { client.produce("stamped", 0, batch.freeze(), -1, 5_000).await }
        };
        produce(now).await.expect("a record stamped now");
        assert_eq!(code_of(produce(now + 2 * 3_600_000).await.unwrap_err()), 32, "INVALID_TIMESTAMP: too far ahead");
        assert_eq!(code_of(produce(now - 2 * 3_600_000).await.unwrap_err()), 32, "INVALID_TIMESTAMP: too far behind");
        let tiered: BTreeMap<String, String> = [("remote.storage.enable".to_owned(), "true".to_owned())].into();
        let refused = client.create_topic("tiered", 1, 1, &tiered).await.unwrap_err();
        assert_eq!(code_of(refused), 40, "INVALID_CONFIG: no tiered storage");
    });
}

#[test]
fn a_kafka_server_properties_file_configures_the_broker() {
    let dir = TempDir::new("server-properties");
    let properties = dir.0.join("server.properties");
    std::fs::write(
        &properties,
        "# as a Kafka user has it\nprocess.roles=broker,controller\nnum.network.threads=3\nnum.partitions=4\n\
         log.retention.hours=2\nauto.create.topics.enable=true\nsocket.send.buffer.bytes=102400\n",
    )
    .unwrap();
    let broker = Broker::start("server-properties-broker", &["--config", properties.to_str().unwrap()]);
    block_on(async {
        let client = KafkaClient::connect(&broker.addr, "t").await.unwrap();
        let topic = client.topic("from-properties", true).await.unwrap();
        assert_eq!(topic.partitions.len(), 4, "num.partitions");
        let configs = client.describe_topic_configs("from-properties").await.unwrap();
        let retention = configs.iter().find(|c| c.name == "retention.ms").unwrap();
        assert_eq!(retention.value.as_deref(), Some("7200000"), "log.retention.hours");
    });
    assert!(broker.log().contains("taken without effect"), "{}", broker.log());
}

#[test]
fn a_clean_stop_does_not_wait_out_the_grace_period_for_idle_connections() {
    // A long grace period: connections that finish at once must not make shutdown wait for it.
    let mut broker = Broker::start("stop-fast", &["--set", "shutdown_grace_ms=60000"]);
    let idle: Vec<TcpStream> = (0..4).map(|_| connect(&broker)).collect();
    block_on(async {
        let client = KafkaClient::connect(&broker.addr, "t").await.unwrap();
        client.metadata(None, false).await.unwrap();
    });
    let started = Instant::now();
    broker.stop();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(20), "stop took {took:?} with a 60 s grace period and idle connections");
    drop(idle);
}

#[test]
fn a_second_broker_on_the_same_data_directory_refuses_to_start() {
    let broker = Broker::start("lock", &[]);
    let output = common::run(
        std::process::Command::new(env!("CARGO_BIN_EXE_moldau"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&broker.data_dir),
        Duration::from_secs(30),
    );
    assert!(!output.status.success(), "the second broker must not start");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("in use by another broker"), "{stderr}");
    still_serves(&broker);
}

#[test]
fn a_second_broker_on_a_busy_port_refuses_to_start() {
    let broker = Broker::start("busy-port", &[]);
    let other = TempDir::new("busy-port-other");
    let output = common::run(
        std::process::Command::new(env!("CARGO_BIN_EXE_moldau"))
            .args(["serve", "--listen", &broker.addr, "--data-dir"])
            .arg(&other.0),
        Duration::from_secs(60),
    );
    assert!(!output.status.success(), "the second broker must not start");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("Address already in use") && stderr.contains("another broker"), "{stderr}");
    still_serves(&broker);
}

/// Kilobytes of a /proc/<pid>/status field (VmRSS, VmData).
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("{field} in {status}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Whether the broker closes `stream` (EOF or reset, not merely silence) within `limit`.
fn closed_by_broker(stream: &mut TcpStream, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 64];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(n) => panic!("the broker sent {n} bytes instead of closing"),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return false;
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
}

/// A Produce frame that claims `size` bytes, of which only its header and `sent` bytes come.
fn partial_produce(broker: &Broker, size: i32, sent: usize, id: i32) -> TcpStream {
    let mut stream = connect(broker);
    let mut start = size.to_be_bytes().to_vec();
    start.extend_from_slice(&0i16.to_be_bytes()); // Produce
    start.extend_from_slice(&9i16.to_be_bytes());
    start.extend_from_slice(&id.to_be_bytes());
    start.resize(start.len() + sent, b'x');
    stream.write_all(&start).unwrap();
    stream
}

#[test]
fn slowloris_connections_hold_only_what_they_sent_and_are_closed_when_too_slow() {
    let broker = Broker::start("slowloris", &["--set", "request_read_timeout_ms=4000"]);
    still_serves(&broker);
    let pid = broker.pid();
    let (rss_before, data_before) = (status_kib(pid, "VmRSS"), status_kib(pid, "VmData"));
    // 200 connections each claim a 100 MiB Produce and send 4 KiB of it, then a byte now and then.
    let mut slow: Vec<TcpStream> = (0..200).map(|i| partial_produce(&broker, 100 << 20, 4096, i)).collect();
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(300));
        for s in &mut slow {
            let _ = s.write_all(b"y");
        }
    }
    // Reserving the claimed sizes would be 20 GB; growing with what arrives stays in MiBs.
    let (rss, data) = (status_kib(pid, "VmRSS"), status_kib(pid, "VmData"));
    println!("200 slowloris connections: RSS {rss_before} -> {rss} KiB, data {data_before} -> {data} KiB");
    assert!(data.saturating_sub(data_before) < 200 << 10, "reserved {data_before} -> {data} KiB");
    assert!(rss.saturating_sub(rss_before) < 100 << 10, "resident {rss_before} -> {rss} KiB");
    // Everyone else is served meanwhile.
    block_on(async {
        let client = KafkaClient::connect(&broker.addr, "beside-slowloris").await.unwrap();
        client.create_topic("beside", 1, 1, &BTreeMap::new()).await.unwrap();
        let base = client.produce("beside", 0, records(10, "b"), -1, 10_000).await.unwrap();
        let fetched = client.fetch("beside", 0, base, 1 << 20, 100).await.unwrap();
        assert_eq!(decode_records(fetched.records.clone()).unwrap().len(), 10);
    });
    // Their frames never finish: each is closed after the read timeout.
    let deadline = Instant::now() + Duration::from_secs(20);
    for s in &mut slow {
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(10));
        assert!(closed_by_broker(s, left), "a trickling frame is closed after request_read_timeout_ms");
    }
    still_serves(&broker);
}

#[test]
fn requests_beyond_the_memory_budget_wait_for_room() {
    // One shard with a 1 MiB budget: a stalled 900 KiB frame holds most of it.
    let broker = Broker::start("budget", &["--shards", "1", "--set", "queued_max_request_bytes=1048576"]);
    block_on(async {
        let client = KafkaClient::connect(&broker.addr, "budget").await.unwrap();
        client.create_topic("budget", 1, 1, &BTreeMap::new()).await.unwrap();
    });
    let stalled = partial_produce(&broker, 900 << 10, 800 << 10, 1);
    std::thread::sleep(Duration::from_millis(300));
    // A 512 KiB produce does not fit beside it: it is not read (so not answered) until the
    // stalled frame lets go.
    let (tx, rx) = std::sync::mpsc::channel();
    let addr = broker.addr.clone();
    let writer = std::thread::spawn(move || {
        let values: Vec<KeyValue> = (0..512).map(|_| (None, Some(Bytes::from(vec![b'v'; 1000])))).collect();
        let batch = encode_batch(&values, &EncodeOptions::default()).freeze();
        let result = block_on(async {
            let client = KafkaClient::connect(&addr, "budget-big").await.unwrap();
            client.produce("budget", 0, batch, -1, 30_000).await
        });
        let _ = tx.send(result.map_err(|e| e.to_string()));
    });
    assert!(rx.recv_timeout(Duration::from_secs(2)).is_err(), "a request over the budget waits");
    drop(stalled);
    let result = rx.recv_timeout(Duration::from_secs(20)).expect("answered once the budget has room");
    assert_eq!(result, Ok(0));
    writer.join().unwrap();
    still_serves(&broker);
}

#[test]
fn idle_connections_are_closed_and_busy_ones_are_not() {
    let broker = Broker::start("idle", &["--set", "connections_max_idle_ms=1000"]);
    let mut idle = connect(&broker);
    let mut busy = connect(&broker);
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(2500) {
        assert!(raw_request(&mut busy, 18, 0, &[]).is_some(), "a connection in use stays open");
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(closed_by_broker(&mut idle, Duration::from_secs(10)), "closed after connections_max_idle_ms");
    still_serves(&broker);
}

/// A raw Fetch v4 of partition 0 of `topic` from offset 0 asking for everything (max_bytes and
/// partition_max_bytes 2^31-1), sent and never read.
fn greedy_fetch(broker: &Broker, topic: &str) -> TcpStream {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{BrokerId, FetchRequest, TopicName};
    use kafka_protocol::protocol::{Encodable, StrBytes};
    let request =
        FetchRequest::default().with_replica_id(BrokerId(-1)).with_max_wait_ms(0).with_max_bytes(i32::MAX).with_topics(
            vec![FetchTopic::default().with_topic(TopicName(StrBytes::from_string(topic.to_owned()))).with_partitions(
                vec![
                    FetchPartition::default().with_partition(0).with_fetch_offset(0).with_partition_max_bytes(i32::MAX),
                ],
            )],
        );
    let mut body = BytesMut::new();
    request.encode(&mut body, 4).unwrap();
    let mut frame = BytesMut::new();
    frame.put_i16(1);
    frame.put_i16(4);
    frame.put_i32(77);
    frame.put_i16(6);
    frame.put_slice(b"greedy");
    frame.put_slice(&body);
    let mut stream = connect(broker);
    stream.write_all(&(frame.len() as i32).to_be_bytes()).unwrap();
    stream.write_all(&frame).unwrap();
    stream
}

#[test]
fn huge_fetches_stay_within_the_fetch_budget_and_others_are_served() {
    let broker = Broker::start(
        "fetch-budget",
        &[
            "--shards",
            "1",
            "--flush",
            "never",
            "--set",
            "fetch_read_budget_bytes=67108864",
            "--set",
            "cache_bytes_per_shard=1048576",
            "--set",
            "request_read_timeout_ms=5000",
        ],
    );
    // 64 MiB in a partition, cold (the read cache holds 1 MiB).
    block_on(async {
        let client = KafkaClient::connect(&broker.addr, "fetch-budget").await.unwrap();
        client.create_topic("cold", 1, 1, &BTreeMap::new()).await.unwrap();
        client.create_topic("small", 1, 1, &BTreeMap::new()).await.unwrap();
        let values: Vec<KeyValue> = (0..900).map(|_| (None, Some(Bytes::from(vec![b'c'; 1000])))).collect();
        let batch = encode_batch(&values, &EncodeOptions::default()).freeze();
        for _ in 0..72 {
            client.produce("cold", 0, batch.clone(), -1, 30_000).await.unwrap();
        }
        client.produce("small", 0, records(5, "s"), -1, 10_000).await.unwrap();
    });
    let pid = broker.pid();
    let rss_before = status_kib(pid, "VmRSS");
    // 20 clients ask for all 64 MiB each and never read the answer.
    let greedy: Vec<TcpStream> = (0..20).map(|_| greedy_fetch(&broker, "cold")).collect();
    let mut peak = 0;
    for _ in 0..15 {
        std::thread::sleep(Duration::from_millis(200));
        peak = peak.max(status_kib(pid, "VmRSS"));
    }
    println!("20 greedy fetches: RSS {rss_before} -> peak {peak} KiB");
    // Unbounded, each would read the 64 MiB (1.3 GB); the 64 MiB budget holds one 55 MiB response.
    assert!(peak.saturating_sub(rss_before) < 160 << 10, "RSS {rss_before} -> {peak} KiB");
    // Another consumer is served meanwhile.
    block_on(async {
        let client = KafkaClient::connect(&broker.addr, "fetch-budget-small").await.unwrap();
        let fetched = client.fetch("small", 0, 0, 1 << 20, 100).await.unwrap();
        assert_eq!(decode_records(fetched.records.clone()).unwrap().len(), 5);
    });
    drop(greedy);
    still_serves(&broker);
}

/// Produces 64 KiB batches to `full-0` until one fails: (batches acknowledged, the error code).
fn produce_until_refused(addr: &str, limit: usize) -> (usize, Option<i16>) {
    block_on(async {
        let client = KafkaClient::connect(addr, "filler").await.unwrap();
        let values: Vec<KeyValue> = (0..64).map(|_| (None, Some(Bytes::from(vec![b'f'; 1000])))).collect();
        let batch = encode_batch(&values, &EncodeOptions::default()).freeze();
        for acked in 0..limit {
            if let Err(err) = client.produce("full", 0, batch.clone(), -1, 10_000).await {
                return (acked, err.code());
            }
        }
        (limit, None)
    })
}

/// Retries `attempt` until it succeeds, for up to `limit`.
fn eventually_ok<T, E: std::fmt::Debug>(limit: Duration, mut attempt: impl FnMut() -> Result<T, E>) -> T {
    let since = Instant::now();
    loop {
        match attempt() {
            Ok(value) => return value,
            Err(err) if since.elapsed() > limit => panic!("still failing after {limit:?}: {err:?}"),
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

#[test]
fn a_full_disk_refuses_writes_and_everything_comes_back_once_there_is_room() {
    let root = TempDir::new("full-disk");
    let Some(disk) = SmallDisk::mount(root.0.join("disk.img"), &root.0.join("disk"), 128) else { return };
    // The broker's data is the small disk itself; its log goes beside it, on the real disk, so
    // it can be read when something fails.
    let data = disk.at.clone();
    let settings = ["log_segment_bytes=8388608", "offsets_topic_num_partitions=4"];
    let args = settings.iter().flat_map(|s| ["--set".to_owned(), (*s).to_owned()]).collect();
    let mut broker = Broker::start_at(&data, "127.0.0.1:0", args);
    block_on(async {
        let client = KafkaClient::connect(&broker.addr, "full").await.unwrap();
        client.create_topic("full", 1, 1, &BTreeMap::new()).await.unwrap();
        // A group's offsets, in __consumer_offsets on the same disk.
        client.commit_offsets("full-group", &[("full".to_owned(), 0, 7)]).await.unwrap();
    });
    // Full: writes are refused with KAFKA_STORAGE_ERROR, nothing acknowledged is lost.
    let filler = disk.fill_leaving(12 << 20);
    let (first, code) = produce_until_refused(&broker.addr, 1000);
    assert_eq!(code, Some(56), "KAFKA_STORAGE_ERROR once the disk is full ({first} batches went in)");
    // Room again: the partition comes back without a restart.
    std::fs::remove_file(&filler).unwrap();
    let resumed = Instant::now();
    let (more, code) = loop {
        let (more, code) = produce_until_refused(&broker.addr, 5);
        if more > 0 || resumed.elapsed() > Duration::from_secs(30) {
            break (more, code);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!((more, code), (5, None), "writes resume once there is room, without a restart");
    assert!(broker.log().contains("reopening a partition whose log went offline"), "{}", broker.log());
    // The metadata log's reserve is in place again for the next time the disk fills.
    let reserve = disk.at.join("__cluster").join("raft").join("reserve");
    let since = Instant::now();
    while std::fs::metadata(&reserve).map(|m| m.len()).unwrap_or(0) != 16 << 20 {
        assert!(since.elapsed() < Duration::from_secs(15), "the reserve comes back once there is room");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Full again, and restarted while full: it starts, and comes back once there is room.
    let filler = disk.fill_leaving(0);
    let (again, _) = produce_until_refused(&broker.addr, 1000);
    broker.kill();
    broker.start_again();
    still_serves(&broker);
    std::fs::remove_file(&filler).unwrap();
    let resumed = Instant::now();
    while produce_until_refused(&broker.addr, 1).0 == 0 {
        assert!(resumed.elapsed() < Duration::from_secs(30), "writes resume after a restart on a full disk");
        std::thread::sleep(Duration::from_millis(500));
    }
    // The group coordinator serves its groups again too: what was committed, and new commits.
    let committed = eventually_ok(Duration::from_secs(30), || {
        block_on(async {
            let client = KafkaClient::connect(&broker.addr, "full").await?;
            let committed = client.committed_offsets("full-group").await?;
            client.commit_offsets("full-group", &[("full".to_owned(), 0, 9)]).await?;
            Ok::<_, ClientError>(committed)
        })
    });
    assert_eq!(committed, vec![("full".to_owned(), 0, 7)]);
    println!("full disk: {first} batches, then {more} after room came back, {again} before the restart");
    // Every acknowledged batch is there, in order.
    let acked = (first + more + again + 1) as i64 * 64;
    let end = block_on(async {
        let client = KafkaClient::connect(&broker.addr, "full").await.unwrap();
        client.list_offset("full", 0, -1).await.unwrap().0
    });
    // (A refused batch may have been stored whole before its neighbour failed: at most those two.)
    assert!(end >= acked && end <= acked + 2 * 64, "{end}: {first} + {more} + {again} + 1 batches of 64");
    broker.kill();
    drop(disk);
}

#[test]
fn connections_stay_within_the_open_files_limit_and_refusals_are_not_logged_in_a_flood() {
    use std::os::unix::process::CommandExt;
    let dir = TempDir::new("nofile");
    let log_path = dir.0.with_extension("log");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_moldau"));
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--shards", "1", "--data-dir"])
        .arg(&dir.0)
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log_path).unwrap());
    // SAFETY: setrlimit between fork and exec touches only the child.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit { rlim_cur: 256, rlim_max: 256 };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let mut child = command.spawn().unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    let addr = line.trim().strip_prefix("moldau listening on ").expect("listening").to_owned();
    // 300 connections against a limit of 192 (three quarters of 256 open files).
    let mut conns: Vec<TcpStream> = (0..300).filter_map(|_| TcpStream::connect(&addr).ok()).collect();
    let mut answered = 0;
    for c in &mut conns {
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        if raw_request(c, 18, 0, &[]).is_some() {
            answered += 1;
        }
    }
    drop(conns);
    let log = std::fs::read_to_string(&log_path).unwrap();
    let refusals = log.matches("connection refused").count();
    println!("300 connections, limit 192: {answered} served, {refusals} refusal lines logged");
    assert!(log.contains("connections limited by the open-files limit"), "{log}");
    assert!(answered > 0 && answered <= 192, "{answered} served");
    assert!(refusals <= 2, "refusals are logged once per 10 s: {refusals}\n{log}");
    // The broker is alive and serves again once they are gone.
    std::thread::sleep(Duration::from_millis(300));
    block_on(async {
        let client = KafkaClient::connect(&addr, "after").await.expect("serves again");
        client.metadata(None, false).await.expect("metadata");
    });
    assert!(child.try_wait().unwrap().is_none(), "still running");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn the_metrics_endpoint_serves_beside_stalled_clients_and_bounds_request_heads() {
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let metrics = format!("127.0.0.1:{metrics_port}");
    let broker = Broker::start("http", &["--set", &format!("metrics_listen=\"{metrics}\"")]);
    let pid = broker.pid();
    // Clients that send half a request line and stall.
    let mut stalled: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut s = TcpStream::connect(&metrics).unwrap();
            s.write_all(b"GET /metr").unwrap();
            s
        })
        .collect();
    // Everyone else is answered while they hold their connections.
    for _ in 0..3 {
        assert!(http_get(&metrics, "/metrics").contains("moldau_shard_requests_total{shard=\"0\"}"));
    }
    for s in &mut stalled {
        assert!(!closed_by_broker(s, Duration::from_millis(10)), "a stalled client keeps its own connection");
    }
    assert!(http_get(&metrics, "/nothing").contains("try /metrics"));
    // A request line without end: refused once the head limit is passed, not read on for ever.
    let rss_before = status_kib(pid, "VmRSS");
    let mut endless = TcpStream::connect(&metrics).unwrap();
    endless.write_all(b"GET /").unwrap();
    let chunk = vec![b'a'; 64 << 10];
    let mut sent = 0usize;
    let refused = loop {
        if sent >= 256 << 20 {
            break false;
        }
        match endless.write_all(&chunk) {
            Ok(()) => sent += chunk.len(),
            Err(_) => break true,
        }
    };
    assert!(refused, "the endpoint read {sent} bytes of one request line");
    let rss = status_kib(pid, "VmRSS");
    println!("an endless request line: refused after {sent} bytes sent, RSS {rss_before} -> {rss} KiB");
    assert!(rss.saturating_sub(rss_before) < 16 << 10, "resident {rss_before} -> {rss} KiB");
    // The stalled ones are closed after their time; the endpoint and the broker serve on.
    let deadline = Instant::now() + Duration::from_secs(30);
    for s in &mut stalled {
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(10));
        assert!(closed_by_broker(s, left), "a stalled HTTP client is closed after its time");
    }
    assert!(http_get(&metrics, "/v1/shards").contains("\"shard\": 0"));
    still_serves(&broker);
}

/// A Fetch of topic `fs` in session `id` at `epoch`: the partitions (index, offset) it names and
/// the ones it forgets.
fn session_fetch(id: i32, epoch: i32, parts: &[(i32, i64)], forget: &[i32]) -> kafka_protocol::messages::FetchRequest {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
    use kafka_protocol::messages::{BrokerId, FetchRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    let name = || TopicName(StrBytes::from_static_str("fs"));
    let partitions: Vec<FetchPartition> = parts
        .iter()
        .map(|(p, offset)| {
            FetchPartition::default().with_partition(*p).with_fetch_offset(*offset).with_partition_max_bytes(1 << 20)
        })
        .collect();
    let topics = if partitions.is_empty() {
        vec![]
    } else {
        vec![FetchTopic::default().with_topic(name()).with_partitions(partitions)]
    };
    let forgotten = if forget.is_empty() {
        vec![]
    } else {
        vec![ForgottenTopic::default().with_topic(name()).with_partitions(forget.to_vec())]
    };
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_max_bytes(1 << 24)
        .with_session_id(id)
        .with_session_epoch(epoch)
        .with_topics(topics)
        .with_forgotten_topics_data(forgotten)
}

/// (partition, records in the answer) of a Fetch response, in order.
fn answered(response: &kafka_protocol::messages::FetchResponse) -> Vec<(i32, usize)> {
    response
        .responses
        .iter()
        .flat_map(|t| &t.partitions)
        .map(|p| (p.partition_index, p.records.clone().map_or(0, |r| decode_records(r).unwrap().len())))
        .collect()
}

/// Sends `fetch` as a long-poll (up to 10 s, for 1 byte) while another client appends 4 records
/// to `partition` of topic `fs` 300 ms in; checks the append woke it well before its wait ran out.
async fn long_poll_woken_by_append(
    addr: &str,
    conn: &moldau::client::BrokerConnection,
    fetch: kafka_protocol::messages::FetchRequest,
    partition: i32,
) -> kafka_protocol::messages::FetchResponse {
    let producer = KafkaClient::connect(addr, "later").await.unwrap();
    producer.topic("fs", false).await.unwrap();
    let write = moldau::io::spawn(async move {
        moldau::io::sleep(Duration::from_millis(300)).await;
        producer.produce("fs", partition, records(4, "d"), -1, 5000).await.unwrap();
    });
    let start = Instant::now();
    let r = conn.send_version(fetch.with_max_wait_ms(10_000).with_min_bytes(1), 12).await.unwrap();
    write.await.unwrap();
    assert!(start.elapsed() < Duration::from_secs(8), "woken by the append");
    r
}

#[test]
fn fetch_sessions_answer_only_what_changed_and_refuse_stale_or_unknown_sessions() {
    let broker = Broker::start("fetch-sessions", &[]);
    block_on(async {
        let client = KafkaClient::connect(&broker.addr, "sessions").await.unwrap();
        client.create_topic("fs", 3, 1, &BTreeMap::new()).await.unwrap();
        for p in 0..3 {
            client.produce("fs", p, records(2, "a"), -1, 5000).await.unwrap();
        }
        let conn = client.leader("fs", 0).await.unwrap();
        // A full fetch with epoch 0 opens a session and answers every partition.
        let r = conn.send_version(session_fetch(0, 0, &[(0, 0), (1, 0), (2, 0)], &[]), 12).await.unwrap();
        assert_eq!(r.error_code, 0);
        let id = r.session_id;
        assert!(id > 0, "a session was opened");
        assert_eq!(answered(&r), vec![(0, 2), (1, 2), (2, 2)]);
        // The consumer moved on: nothing new anywhere, so nothing is answered.
        let r = conn.send_version(session_fetch(id, 1, &[(0, 2), (1, 2), (2, 2)], &[]), 12).await.unwrap();
        assert_eq!((r.error_code, r.session_id), (0, id));
        assert_eq!(answered(&r), vec![]);
        // New records in partition 1: an empty incremental fetch reads the session's partitions
        // at their remembered offsets and answers that one alone.
        client.produce("fs", 1, records(3, "b"), -1, 5000).await.unwrap();
        let r = conn.send_version(session_fetch(id, 2, &[], &[]), 12).await.unwrap();
        assert_eq!(answered(&r), vec![(1, 3)]);
        // Forgetting partition 2: new records there are no longer answered.
        let r = conn.send_version(session_fetch(id, 3, &[(1, 5)], &[2]), 12).await.unwrap();
        assert_eq!(answered(&r), vec![]);
        client.produce("fs", 2, records(1, "c"), -1, 5000).await.unwrap();
        let r = conn.send_version(session_fetch(id, 4, &[], &[]), 12).await.unwrap();
        assert_eq!(answered(&r), vec![]);
        // A stale epoch, and an unknown session, are refused with their own codes.
        let r = conn.send_version(session_fetch(id, 4, &[], &[]), 12).await.unwrap();
        assert_eq!(r.error_code, 71, "INVALID_FETCH_SESSION_EPOCH");
        let r = conn.send_version(session_fetch(id ^ 0x55, 1, &[], &[]), 12).await.unwrap();
        assert_eq!(r.error_code, 70, "FETCH_SESSION_ID_NOT_FOUND");
        // Epoch -1 closes it: a full answer without a session, then the id is unknown.
        let r = conn.send_version(session_fetch(id, -1, &[(2, 2)], &[]), 12).await.unwrap();
        assert_eq!((r.error_code, r.session_id), (0, 0));
        assert_eq!(answered(&r), vec![(2, 1)]);
        let r = conn.send_version(session_fetch(id, 5, &[], &[]), 12).await.unwrap();
        assert_eq!(r.error_code, 70);
        // A new session that waits for data: woken by an append to one of its partitions,
        // it answers that one (read again after the wake-up) and only that one.
        let r = conn.send_version(session_fetch(0, 0, &[(0, 2), (1, 5), (2, 3)], &[]), 12).await.unwrap();
        assert_eq!(answered(&r), vec![(0, 0), (1, 0), (2, 0)]);
        let r = long_poll_woken_by_append(&broker.addr, &conn, session_fetch(r.session_id, 1, &[], &[]), 2).await;
        assert_eq!(answered(&r), vec![(2, 4)]);
        // Another connection does not see this one's sessions.
        let r = conn.send_version(session_fetch(0, 0, &[(0, 0)], &[]), 12).await.unwrap();
        let other = moldau::client::BrokerConnection::connect(&broker.addr, "other").await.unwrap();
        let r2 = other.send_version(session_fetch(r.session_id, 1, &[], &[]), 12).await.unwrap();
        assert_eq!(r2.error_code, 70);
    });
}

#[test]
fn a_fetch_session_reads_only_partitions_that_changed_and_still_hears_every_change() {
    let metrics =
        format!("127.0.0.1:{}", std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port());
    let broker = Broker::start("fetch-session-skips", &["--set", &format!("metrics_listen=\"{metrics}\"")]);
    let unread = || common::shard_counter(&metrics, "session_partitions_unread");
    // (partition, records, log start, error) of each partition answered.
    let answers = |r: &kafka_protocol::messages::FetchResponse| -> Vec<(i32, usize, i64, i16)> {
        let counts = answered(r);
        let partitions = r.responses.iter().flat_map(|t| &t.partitions);
        partitions.zip(counts).map(|(p, (index, n))| (index, n, p.log_start_offset, p.error_code)).collect()
    };
    block_on(async {
        let client = KafkaClient::connect(&broker.addr, "sessions").await.unwrap();
        client.create_topic("fs", 4, 1, &BTreeMap::new()).await.unwrap();
        for p in 0..4 {
            client.produce("fs", p, records(2, "a"), -1, 5000).await.unwrap();
        }
        let conn = client.leader("fs", 0).await.unwrap();
        let all_at_end = [(0, 2), (1, 2), (2, 2), (3, 2)];
        let r = conn.send_version(session_fetch(0, 0, &all_at_end, &[]), 12).await.unwrap();
        let id = r.session_id;
        assert_eq!(answers(&r), vec![(0, 0, 0, 0), (1, 0, 0, 0), (2, 0, 0, 0), (3, 0, 0, 0)]);
        // The first incremental fetch reads every partition (and starts listening to them).
        let before = unread();
        let r = conn.send_version(session_fetch(id, 1, &[], &[]), 12).await.unwrap();
        assert_eq!(answers(&r), vec![]);
        assert_eq!(unread(), before, "every partition read once");
        // Nothing changed: nothing is read at all.
        let r = conn.send_version(session_fetch(id, 2, &[], &[]), 12).await.unwrap();
        assert_eq!(answers(&r), vec![]);
        assert_eq!(unread(), before + 4, "no partition read");
        // Records in partition 1: only it is read, and answered.
        client.produce("fs", 1, records(3, "b"), -1, 5000).await.unwrap();
        let r = conn.send_version(session_fetch(id, 3, &[], &[]), 12).await.unwrap();
        assert_eq!(answers(&r), vec![(1, 3, 0, 0)]);
        assert_eq!(unread(), before + 7);
        // The client moves partition 1 on and rewinds partition 0: both are read, 0 answers its
        // records again (the session never skips a position it was not last read at).
        let r = conn.send_version(session_fetch(id, 4, &[(1, 5), (0, 0)], &[]), 12).await.unwrap();
        assert_eq!(answers(&r), vec![(0, 2, 0, 0)]);
        let r = conn.send_version(session_fetch(id, 5, &[(0, 2)], &[]), 12).await.unwrap();
        assert_eq!(answers(&r), vec![]);
        // DeleteRecords moves partition 2's log start: no records, but news the client hears.
        assert_eq!(client.delete_records("fs", 2, 1).await.unwrap(), 1);
        let r = conn.send_version(session_fetch(id, 6, &[], &[]), 12).await.unwrap();
        assert_eq!(answers(&r), vec![(2, 0, 1, 0)]);
        // The same while a long-poll waits: no records, so it waits on, and answers the news
        // when it ends.
        let waiting = session_fetch(id, 7, &[], &[]).with_max_wait_ms(1500).with_min_bytes(1);
        let admin = KafkaClient::connect(&broker.addr, "admin").await.unwrap();
        let delete = moldau::io::spawn(async move {
            moldau::io::sleep(Duration::from_millis(300)).await;
            admin.delete_records("fs", 0, 1).await.unwrap()
        });
        let r = conn.send_version(waiting, 12).await.unwrap();
        assert_eq!(delete.await.unwrap(), 1);
        assert_eq!(answers(&r), vec![(0, 0, 1, 0)]);
        // A long-poll with nothing new waits for a change, then reads and answers that one.
        let r = long_poll_woken_by_append(&broker.addr, &conn, session_fetch(id, 8, &[], &[]), 3).await;
        assert_eq!(answers(&r), vec![(3, 4, 0, 0)]);
        // The topic is deleted: every partition the client still fetches answers an error.
        let r = conn.send_version(session_fetch(id, 9, &[(3, 6)], &[]), 12).await.unwrap();
        assert_eq!(answers(&r), vec![]);
        client.delete_topic("fs").await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut epoch = 10;
        let errors = loop {
            let r = conn.send_version(session_fetch(id, epoch, &[], &[]), 12).await.unwrap();
            epoch += 1;
            let errors: Vec<i16> = answers(&r).iter().map(|a| a.3).collect();
            if errors.len() == 4 || Instant::now() > deadline {
                break errors;
            }
            moldau::io::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(errors, vec![3; 4], "UNKNOWN_TOPIC_OR_PARTITION for each");
    });
}
