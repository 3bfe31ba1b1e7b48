//! The `moldau` command-line tools against a running broker.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::Duration;

use common::{Broker, moldau, run, run_ok, stdout};

const LIMIT: Duration = Duration::from_secs(60);

fn cli(broker: &Broker, args: &[&str]) -> String {
    let mut full = args.to_vec();
    full.extend_from_slice(&["--bootstrap", &broker.addr]);
    stdout(&run_ok(&mut moldau(&full), &format!("moldau {args:?}"), LIMIT))
}

fn produce_stdin(broker: &Broker, args: &[&str], input: &str) {
    let mut full = vec!["produce", "--bootstrap", &broker.addr];
    full.extend_from_slice(args);
    let mut child = moldau(&full).stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn topic_commands_create_list_describe_alter_delete() {
    let broker = Broker::start("cli-topic", &[]);
    assert!(
        cli(&broker, &["topic", "create", "t1", "--partitions", "3", "--config", "retention.ms=60000"])
            .contains("created")
    );
    assert!(cli(&broker, &["topic", "list"]).lines().any(|l| l == "t1"));
    let described = cli(&broker, &["topic", "describe", "t1"]);
    assert!(described.contains("partitions 3") && described.contains("config retention.ms=60000"), "{described}");
    cli(
        &broker,
        &[
            "topic",
            "alter",
            "t1",
            "--partitions",
            "5",
            "--config",
            "retention.bytes=1000000",
            "--delete-config",
            "retention.ms",
        ],
    );
    let described = cli(&broker, &["topic", "describe", "t1"]);
    assert!(described.contains("partitions 5") && described.contains("retention.bytes=1000000"), "{described}");
    assert!(!described.contains("config retention.ms="), "override removed: {described}");
    cli(&broker, &["topic", "delete", "t1"]);
    assert!(!cli(&broker, &["topic", "list"]).lines().any(|l| l == "t1"));
    // Errors are reported with the Kafka error and a failing exit status.
    let out = run(&mut moldau(&["topic", "delete", "t1", "--bootstrap", &broker.addr]), LIMIT);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("UnknownTopicOrPartition"));
    let out = run(&mut moldau(&["topic", "create", "bad name", "--bootstrap", &broker.addr]), LIMIT);
    assert!(!out.status.success());
}

#[test]
fn produce_lines_with_keys_then_consume_from_an_offset() {
    let broker = Broker::start("cli-produce", &[]);
    cli(&broker, &["topic", "create", "lines", "--partitions", "2"]);
    let input: String = (0..20).map(|i| format!("k{}|line {i}\n", i % 4)).collect();
    produce_stdin(&broker, &["--topic", "lines", "--key-separator", "|"], &input);
    // From a file, to one partition.
    let dir = common::TempDir::new("cli-file");
    let file = dir.join("input.txt");
    std::fs::write(&file, "a\nb\nc\n").unwrap();
    cli(&broker, &["produce", "--topic", "lines", "--partition", "1", "--file", file.to_str().unwrap()]);
    let all = cli(&broker, &["consume", "--topic", "lines", "--print-key"]);
    let mut got: Vec<&str> = all.lines().collect();
    got.sort();
    assert_eq!(got.len(), 23, "{all}");
    assert!(got.contains(&"k3\tline 7") && got.contains(&"\tb"), "{all}");
    // Keys stay on one partition.
    let with_partition = cli(&broker, &["consume", "--topic", "lines", "--print-key", "--print-offset"]);
    let mut seen = std::collections::HashMap::new();
    for line in with_partition.lines() {
        let cols: Vec<&str> = line.split('\t').collect();
        if !cols[2].is_empty() {
            assert_eq!(*seen.entry(cols[2].to_owned()).or_insert(cols[0].to_owned()), cols[0], "{line}");
        }
    }
    // From an offset, with a count.
    let two = cli(
        &broker,
        &["consume", "--topic", "lines", "--partition", "1", "--from", "1", "--count", "2", "--print-offset"],
    );
    assert_eq!(two.lines().count(), 2);
    assert!(two.lines().next().unwrap().starts_with("1\t1\t"), "{two}");
}

#[test]
fn consume_follow_from_the_end_sees_new_records() {
    let broker = Broker::start("cli-follow", &[]);
    cli(&broker, &["topic", "create", "live", "--partitions", "1"]);
    produce_stdin(&broker, &["--topic", "live"], "old\n");
    let mut follower =
        moldau(&["consume", "--topic", "live", "--from", "end", "--follow", "--bootstrap", &broker.addr])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
    let mut lines = BufReader::new(follower.stdout.take().unwrap()).lines();
    // Watchdog: a follower that never prints must fail the test, not hang it.
    let pid = follower.id() as i32;
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(30));
        unsafe { libc::kill(pid, libc::SIGKILL) };
    });
    std::thread::sleep(Duration::from_millis(500));
    produce_stdin(&broker, &["--topic", "live"], "new-1\nnew-2\n");
    assert_eq!(lines.next().expect("follower printed").unwrap(), "new-1");
    assert_eq!(lines.next().expect("follower printed").unwrap(), "new-2");
    follower.kill().unwrap();
    follower.wait().unwrap();
}
