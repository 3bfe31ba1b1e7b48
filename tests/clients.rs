//! Real Kafka clients, none of which we wrote, against the real broker: kcat (librdkafka 2.0),
//! confluent-kafka (librdkafka 2.x), kafka-python and kafkajs. `tests/run-all.sh` installs them.

mod common;

use std::time::Duration;

use common::{Broker, node, python, run_ok, stdout};

const CLIENT_TIMEOUT: Duration = Duration::from_secs(180);

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
    let future = (moldau::util::now_ms() + 3_600_000).to_string();
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
