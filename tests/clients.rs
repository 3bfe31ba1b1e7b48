//! Real Kafka clients, none of which we wrote, against the real broker: kcat (librdkafka 2.0),
//! confluent-kafka (librdkafka 2.x), kafka-python and kafkajs. `tests/run-all.sh` installs them.

mod common;

use std::time::Duration;

use common::{Broker, node, python, run_ok, shard_counter, stdout};

const CLIENT_TIMEOUT: Duration = Duration::from_secs(180);

/// Runs `tests/clients/kafka_compat.py` with `args` (its mode first) to completion and returns
/// what it printed.
fn kafka_compat(args: &[&str]) -> String {
    stdout(&run_ok(&mut python("kafka_compat.py", args), &format!("kafka_compat.py {}", args[0]), CLIENT_TIMEOUT))
}

fn kcat(args: &[&str]) -> std::process::Command {
    let mut command = std::process::Command::new("kcat");
    command.args(args);
    command
}

#[test]
fn kcat_metadata_produce_consume_and_offsets_for_times() {
    let broker = Broker::start("kcat", &["--set", "num_partitions=3"]);
    let b = broker.addr.as_str();
    // Produce keyed lines (the topic is auto-created with 3 partitions).
    let lines: String = (0..30).map(|i| format!("key{}:line-{i}\n", i % 5)).collect();
    let mut produce = kcat(&["-b", b, "-P", "-t", "kc", "-K:", "-X", "acks=all"]);
    produce.stdin(std::process::Stdio::piped());
    let mut child = produce.spawn().unwrap();
    {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(lines.as_bytes()).unwrap();
    }
    assert!(child.wait().unwrap().success());
    // Metadata as JSON.
    let out = run_ok(&mut kcat(&["-b", b, "-L", "-J", "-t", "kc"]), "kcat -L", CLIENT_TIMEOUT);
    let metadata: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(metadata["topics"][0]["topic"], "kc");
    assert_eq!(metadata["topics"][0]["partitions"].as_array().unwrap().len(), 3);
    assert_eq!(metadata["brokers"].as_array().unwrap().len(), 1);
    // Consume all 30 from the beginning, with keys.
    let out = run_ok(
        &mut kcat(&["-b", b, "-C", "-t", "kc", "-o", "beginning", "-c", "30", "-e", "-f", "%k=%s %p\n"]),
        "kcat -C",
        CLIENT_TIMEOUT,
    );
    let text = stdout(&out);
    let mut got: Vec<&str> = text.lines().collect();
    got.sort();
    let mut want: Vec<String> = Vec::new();
    let mut key_partition = std::collections::HashMap::new();
    for line in text.lines() {
        let (kv, p) = line.rsplit_once(' ').unwrap();
        let key = kv.split('=').next().unwrap();
        assert_eq!(*key_partition.entry(key.to_owned()).or_insert(p.to_owned()), p, "a key stays on one partition");
    }
    for i in 0..30 {
        want.push(format!("key{}=line-{i}", i % 5));
    }
    want.sort();
    let got_kv: Vec<String> = {
        let mut v: Vec<String> = got.iter().map(|l| l.rsplit_once(' ').unwrap().0.to_owned()).collect();
        v.sort();
        v
    };
    assert_eq!(got_kv, want);
    got.clear();
    // Offsets for times: a timestamp far in the past gives offset 0 on every partition with data.
    let out =
        run_ok(&mut kcat(&["-b", b, "-Q", "-t", "kc:0:1", "-t", "kc:1:1", "-t", "kc:2:1"]), "kcat -Q", CLIENT_TIMEOUT);
    let text = stdout(&out);
    assert!(text.contains("offset 0"), "{text}");
    // And one in the future gives the end (-1).
    let future = (moldau::io::now_ms() + 3_600_000).to_string();
    let out = run_ok(&mut kcat(&["-b", b, "-Q", "-t", &format!("kc:0:{future}")]), "kcat -Q future", CLIENT_TIMEOUT);
    assert!(stdout(&out).contains("offset -1"), "{}", stdout(&out));
}

#[test]
fn confluent_kafka_admin_produce_every_compression_and_read_back() {
    let broker = Broker::start("confluent", &[]);
    let out =
        run_ok(&mut python("confluent_basic.py", &[&broker.addr, "ck-topic"]), "confluent_basic.py", CLIENT_TIMEOUT);
    assert!(stdout(&out).contains("confluent-kafka ok"));
}

#[test]
fn kafka_python_produce_consume_admin() {
    let broker = Broker::start("kafkapython", &[]);
    let out = run_ok(
        &mut python("kafka_python_basic.py", &[&broker.addr, "kp-topic"]),
        "kafka_python_basic.py",
        CLIENT_TIMEOUT,
    );
    assert!(stdout(&out).contains("kafka-python ok"));
}

#[test]
fn kafkajs_produce_consume_admin() {
    let broker = Broker::start("kafkajs", &["--set", "group_initial_rebalance_delay_ms=0"]);
    let out =
        run_ok(&mut node("kafkajs_basic.js", &[&broker.addr, "js-topic", "100"]), "kafkajs_basic.js", CLIENT_TIMEOUT);
    assert!(stdout(&out).contains("kafkajs ok"));
}

/// A batch of `n` keyed records, compressed with `codec`, as bytes to mangle.
fn batch_bytes(codec: i16, keys: bool, tag: &str) -> Vec<u8> {
    use moldau::model::records::{EncodeOptions, KeyValue, encode_batch};
    let values: Vec<KeyValue> = (0..20)
        .map(|i| {
            (
                keys.then(|| bytes::Bytes::from(format!("k{i}"))),
                Some(bytes::Bytes::from(format!("{tag}-{i} ").repeat(10))),
            )
        })
        .collect();
    encode_batch(&values, &EncodeOptions { compression: codec, ..EncodeOptions::default() }).to_vec()
}

/// A batch whose CRC is right for whatever its records have become.
fn with_crc(mut batch: Vec<u8>) -> bytes::Bytes {
    let crc = crc32c::crc32c(&batch[21..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    batch.into()
}

#[test]
fn poison_pills_are_refused_and_consumers_read_the_next_record() {
    let broker = Broker::start("poison", &[]);
    let b = broker.addr.as_str();
    let mut pills: Vec<(&str, bytes::Bytes)> = Vec::new();
    let mut unknown = batch_bytes(0, true, "p");
    unknown[22] |= 7;
    pills.push(("unknown codec 7", with_crc(unknown)));
    for (codec, name) in [(1, "gzip"), (2, "snappy"), (3, "lz4"), (4, "zstd")] {
        let mut damaged = batch_bytes(codec, true, "p");
        let mid = 61 + (damaged.len() - 61) / 2;
        for byte in &mut damaged[mid..mid + 8] {
            *byte ^= 0x5a;
        }
        pills.push((name, with_crc(damaged)));
    }
    let mut garbage = batch_bytes(0, true, "p");
    garbage[61..].fill(0xff);
    pills.push(("garbage records", with_crc(garbage)));
    let mut long = batch_bytes(0, true, "p");
    long[61..66].copy_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x7f]);
    pills.push(("record length out of range", with_crc(long)));
    moldau::io::block_on(async {
        let client = moldau::client::KafkaClient::connect(b, "poison").await.unwrap();
        client.create_topic("pills", 1, 1, &std::collections::BTreeMap::new()).await.unwrap();
        let compacted = [("cleanup.policy".to_owned(), "compact".to_owned())].into_iter().collect();
        client.create_topic("compacted", 1, 1, &compacted).await.unwrap();
        for (what, pill) in &pills {
            let err = client.produce("pills", 0, pill.clone(), -1, 5000).await.expect_err(what);
            assert_eq!(err.code(), Some(2), "{what}: CORRUPT_MESSAGE, got {err}");
        }
        let keyless = bytes::Bytes::from(batch_bytes(0, false, "nokey"));
        let err = client.produce("compacted", 0, keyless, -1, 5000).await.expect_err("keyless");
        assert_eq!(err.code(), Some(87), "INVALID_RECORD for a record without a key on a compacted topic");
        // A good batch of each codec after them: stored from offset 0, nothing before it.
        for codec in 0..=4 {
            let good = bytes::Bytes::from(batch_bytes(codec, true, &format!("good{codec}")));
            assert_eq!(client.produce("pills", 0, good, -1, 5000).await.unwrap(), i64::from(codec) * 20);
        }
    });
    // A real consumer (librdkafka) reads every good record and nothing else, without stalling.
    let out = run_ok(
        &mut kcat(&["-b", b, "-C", "-t", "pills", "-o", "beginning", "-e", "-q", "-f", "%s\n"]),
        "kcat consume",
        Duration::from_secs(60),
    );
    let values: Vec<String> = stdout(&out).lines().map(|l| l.trim().to_owned()).collect();
    assert_eq!(values.len(), 100, "{values:?}");
    for codec in 0..5 {
        assert!(values[codec * 20].starts_with(&format!("good{codec}-0")), "{values:?}");
    }
}

#[test]
fn transactions_are_refused_at_once_not_after_the_clients_timeout() {
    let broker = Broker::start("no-transactions", &[]);
    let out = kafka_compat(&["transactions", &broker.addr]);
    assert_eq!(out.trim(), "refused TRANSACTIONAL_ID_AUTHORIZATION_FAILED");
}

/// Refused requests are counted per API and error code on the metrics endpoint, and the
/// unusual ones logged once per interval, with their message and client.
#[test]
fn refused_requests_are_counted_per_api_and_error_and_logged_once_per_interval() {
    let metrics =
        format!("127.0.0.1:{}", std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port());
    let broker = Broker::start("error-stats", &["--set", &format!("metrics_listen=\"{metrics}\"")]);
    let out = kafka_compat(&["bad-topics", &broker.addr, "3"]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["INVALID_REPLICATION_FACTOR", "INVALID_REPLICATION_FACTOR", "INVALID_REPLICATION_FACTOR", "INVALID_CONFIG"]
    );
    kafka_compat(&["transactions", &broker.addr]);
    let prometheus = common::http_get(&metrics, "/metrics");
    // Summed over the shards (the client's connections land on either).
    let count = |api: &str, error: &str| -> u64 {
        let label = format!(",api=\"{api}\",error=\"{error}\",");
        prometheus
            .lines()
            .filter(|l| l.starts_with("moldau_shard_error_responses_total{") && l.contains(&label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    assert_eq!(count("CreateTopics", "INVALID_REPLICATION_FACTOR"), 3, "{prometheus}");
    assert_eq!(count("CreateTopics", "INVALID_CONFIG"), 1, "{prometheus}");
    assert!(count("FindCoordinator", "TRANSACTIONAL_ID_AUTHORIZATION_FAILED") > 0, "{prometheus}");
    let log = broker.log();
    let lines = |error: &str| {
        log.lines().filter(|l| l.contains("request answered with an error") && l.contains(error)).collect::<Vec<_>>()
    };
    let wide = lines("error=INVALID_REPLICATION_FACTOR");
    assert_eq!(wide.len(), 1, "logged once in the interval, not three times\n{log}");
    assert!(wide[0].contains("api=CreateTopics") && wide[0].contains("replication factor"), "{}", wide[0]);
    assert!(wide[0].contains("client=\"rdkafka\"") || wide[0].contains("client=rdkafka"), "{}", wide[0]);
    assert_eq!(lines("error=INVALID_CONFIG").len(), 1, "{log}");
    assert_eq!(lines("error=TRANSACTIONAL_ID_AUTHORIZATION_FAILED").len(), 1, "{log}");
}

#[test]
fn a_member_commits_in_its_revoke_callback_while_the_group_prepares_a_rebalance() {
    let broker = Broker::start(
        "revoke-commit",
        &["--set", "group_min_session_timeout_ms=1000", "--set", "group_initial_rebalance_delay_ms=0"],
    );
    moldau::io::block_on(async {
        let client = moldau::client::KafkaClient::connect(&broker.addr, "t").await.unwrap();
        client.create_topic("revoke", 2, 1, &Default::default()).await.unwrap();
        for p in 0..2 {
            let values: Vec<moldau::model::records::KeyValue> =
                (0..50).map(|i| (None, Some(bytes::Bytes::from(format!("r{i}"))))).collect();
            let batch = moldau::model::records::encode_batch(&values, &Default::default());
            client.produce("revoke", p, batch.freeze(), -1, 10_000).await.unwrap();
        }
    });
    let out = kafka_compat(&["revoke-commit", &broker.addr, "revoke", "2", "100"]);
    assert_eq!(out.trim(), "revoke-commit ok 100", "everything read was committed before the rebalance");
}

#[test]
fn a_topic_with_a_compression_type_stores_batches_recompressed_and_clients_read_them() {
    let broker = Broker::start("compression-type", &[]);
    let out = kafka_compat(&["compressed-topic", &broker.addr, "gz", "gzip", "500"]);
    assert_eq!(out.trim(), "compressed-topic ok 500");
    // What the broker stored: gzip batches, though the producer sent them uncompressed.
    let codecs: Vec<i16> = stored_headers(&broker.addr, "gz").iter().map(|h| h.compression()).collect();
    assert!(!codecs.is_empty() && codecs.iter().all(|c| *c == 1), "stored codecs {codecs:?}");
}

/// The headers of the batches partition 0 of `topic` holds (up to 1 MiB of them), as fetched.
fn stored_headers(bootstrap: &str, topic: &str) -> Vec<moldau::model::BatchHeader> {
    moldau::io::block_on(async {
        let client = moldau::client::KafkaClient::connect(bootstrap, "t").await.unwrap();
        let fetched = client.fetch(topic, 0, 0, 1 << 20, 0).await.unwrap();
        let mut headers = Vec::new();
        let mut at = 0;
        while at < fetched.records.len() {
            let header = moldau::model::BatchHeader::parse(&fetched.records[at..]).unwrap();
            at += header.total_bytes();
            headers.push(header);
        }
        headers
    })
}

/// Files under `dir` whose names end with `suffix`.
fn files_ending_with(dir: &std::path::Path, suffix: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_ending_with(&path, suffix));
        } else if path.to_string_lossy().ends_with(suffix) {
            found.push(path);
        }
    }
    found
}

#[test]
fn a_compacted_topic_keeps_the_newest_value_of_each_key_through_a_sigkill_mid_clean() {
    // (Two idempotent producers write it: readers, confluent-kafka and kafka-python, go past
    // the first one's last batch, which the cleaner keeps with no records.)
    // A slow cleaner (300 kB/s for the broker), so the kill lands in the middle of a pass.
    let mut broker = Broker::start(
        "compacted",
        &["--set", "log.cleaner.backoff.ms=100", "--set", "log.cleaner.io.max.bytes.per.second=300000"],
    );
    let (keys, rounds) = ("200", "20");
    let out = kafka_compat(&["compacted-produce", &broker.addr, "compacted", keys, rounds]);
    assert_eq!(out.trim(), "produced 4001");
    // Wait for the cleaner to be writing a segment's cleaned copy, then kill the broker.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while files_ending_with(&broker.data_dir, ".log.cleaned").is_empty() {
        assert!(std::time::Instant::now() < deadline, "the cleaner never started rewriting a segment");
        std::thread::sleep(Duration::from_millis(20));
    }
    broker.kill();
    broker.start_again();
    // After the restart the cleaner finishes; until then no newest value may be missing.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let out =
            python("kafka_compat.py", &["compacted-read", &broker.addr, "compacted", keys, rounds]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        match out.status.code() {
            Some(0) => {
                assert_eq!(text.trim(), "compacted ok 201", "one record per key, tombstones included, and the last");
                break;
            }
            Some(2) if std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(500)),
            _ => panic!("compacted-read: {text} {}", String::from_utf8_lossy(&out.stderr)),
        }
    }
    assert!(files_ending_with(&broker.data_dir, ".log.cleaned").is_empty(), "recovery removed the unfinished file");
    // What the readers went past: the first producer's last batch, kept with no records left.
    let emptied: Vec<i64> = stored_headers(&broker.addr, "compacted")
        .iter()
        .filter(|h| h.records_count == 0)
        .map(|h| h.producer_id)
        .collect();
    assert!(emptied.len() == 1 && emptied[0] >= 0, "one emptied idempotent batch: {emptied:?}");
}

#[test]
fn kafka_python_reads_many_partitions_through_an_incremental_fetch_session() {
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let metrics = format!("127.0.0.1:{metrics_port}");
    let broker = Broker::start("fetch-sessions", &["--set", &format!("metrics_listen=\"{metrics}\"")]);
    moldau::io::block_on(async {
        let client = moldau::client::KafkaClient::connect(&broker.addr, "t").await.unwrap();
        for topic in ["with-sessions", "without-sessions"] {
            client.create_topic(topic, 40, 1, &std::collections::BTreeMap::new()).await.unwrap();
        }
    });
    // 400 records over 40 partitions, then three rounds of 7 to two partitions only.
    let read = |topic: &str, sessions: &str| {
        let out = run_ok(
            &mut python("fetch_sessions.py", &[&broker.addr, topic, "40", "400", sessions]),
            "fetch_sessions.py",
            CLIENT_TIMEOUT,
        );
        assert_eq!(stdout(&out).trim(), "read 421", "every record once");
    };
    read("with-sessions", "1");
    let opened = shard_counter(&metrics, "fetch_sessions_opened");
    let incremental = shard_counter(&metrics, "incremental_fetches");
    assert!(opened >= 1, "kafka-python opened a session");
    // Each of the three later rounds is read by at least one fetch in the session.
    assert!(incremental >= 3, "and fetched incrementally in it ({incremental} times)");
    // The later rounds wrote to two partitions of 40: the others were answered without a read.
    let unread = shard_counter(&metrics, "session_partitions_unread");
    assert!(unread >= 38, "unchanged partitions were not read ({unread})");
    // Sessionless fetches (epoch -1) read the same, and open none.
    read("without-sessions", "0");
    assert_eq!(shard_counter(&metrics, "fetch_sessions_opened"), opened);
    assert_eq!(shard_counter(&metrics, "incremental_fetches"), incremental);
    assert_eq!(shard_counter(&metrics, "session_partitions_unread"), unread);
}

#[test]
fn kafka_python_admin_describes_producers_pages_topic_partitions_and_lists_config_resources() {
    let broker = Broker::start("admin-apis", &[]);
    let data_dir = std::path::absolute(&broker.data_dir).unwrap();
    let out = run_ok(
        &mut python("kafka_python_admin.py", &[&broker.addr, data_dir.to_str().unwrap()]),
        "kafka_python_admin.py",
        CLIENT_TIMEOUT,
    );
    assert_eq!(stdout(&out).trim(), "admin-apis ok");
}

/// Kafka's broker configs that are only topic defaults (`min.insync.replicas`,
/// `log.cleanup.policy`, ...) are taken at start and dynamically, take effect on topics without
/// overrides (acks=all refused below the broker's `min.insync.replicas`, taken once it is
/// lowered on the broker, refused again once that is deleted), and are described as the
/// topic's source with the broker name as synonym.
#[test]
fn broker_topic_defaults_take_kafka_names_and_apply_at_runtime() {
    let broker = Broker::start(
        "topic-defaults",
        &["--set", "min.insync.replicas=2", "--set", "log.cleanup.policy=compact,delete"],
    );
    let out = kafka_compat(&["topic-defaults", &broker.addr, "defaults"]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "min.insync.replicas=2 STATIC_BROKER_CONFIG [min.insync.replicas:DEFAULT_CONFIG]",
            "cleanup.policy=compact,delete STATIC_BROKER_CONFIG [log.cleanup.policy:DEFAULT_CONFIG]",
            "acks=all NOT_ENOUGH_REPLICAS",
            "lower ok",
            "min.insync.replicas=1 DYNAMIC_BROKER_CONFIG [min.insync.replicas:DEFAULT_CONFIG]",
            "acks=all ok",
            "bad value INVALID_CONFIG",
            "delete ok",
            "acks=all NOT_ENOUGH_REPLICAS",
        ]
    );
}

/// Dynamic broker configs (IncrementalAlterConfigs on a BROKER resource) change the defaults of
/// topics without overrides at runtime, are described with their source (on the broker and on
/// the topics that take them, as a static broker setting is), and refuse read-only
/// names and bad values; deleting them brings back the broker's own.
#[test]
fn dynamic_broker_configs_change_topic_defaults_at_runtime_and_are_described() {
    let broker = Broker::start(
        "broker-configs",
        &["--set", "log_retention_check_interval_ms=300", "--set", "log_retention_bytes=1073741824"],
    );
    let out = kafka_compat(&["broker-configs", &broker.addr, "dyn", "0"]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "set ok",
            "log.retention.ms=1500 DYNAMIC_BROKER_CONFIG read_only=False",
            "num.partitions=1 DEFAULT_CONFIG read_only=True",
            "advertised.listeners True",
            "topic retention.ms=1500 DYNAMIC_BROKER_CONFIG read_only=False",
            "topic retention.bytes=1073741824 STATIC_BROKER_CONFIG read_only=False",
            "set read-only INVALID_CONFIG",
            "set bad value INVALID_CONFIG",
            "log start moved True",
            "delete ok",
            "log.retention.ms=604800000 DEFAULT_CONFIG read_only=False",
            "topic retention.ms=604800000 DEFAULT_CONFIG read_only=False",
        ]
    );
}
