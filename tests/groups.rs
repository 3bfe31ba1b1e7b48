//! Consumer groups with real clients (confluent-kafka, kafka-python): queue and pub/sub
//! semantics, rebalancing when members join, leave or die, committed offsets across a broker
//! crash, cooperative-sticky assignment and static membership.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Broker, moldau, python, run_ok, stdout};
use moldau::client::KafkaClient;
use moldau::client::member::{GroupConsumer, needs_rejoin};
use moldau::io::block_on;
use moldau::model::records::{EncodeOptions, KeyValue, encode_batch};

/// Broker settings that keep group tests quick: short sessions allowed, short initial delay.
const GROUP_ARGS: &[&str] =
    &["--shards", "2", "--set", "group_min_session_timeout_ms=1000", "--set", "group_initial_rebalance_delay_ms=500"];

struct Worker {
    name: String,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Worker {
    fn start(broker: &Broker, topic: &str, group: &str, name: &str, extra: &[&str]) -> Self {
        let mut args = vec![broker.addr.as_str(), topic, group, name];
        args.extend_from_slice(extra);
        let mut child = python("group_worker.py", &args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Self { name: name.to_owned(), stdin: child.stdin.take(), child: Some(child), lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// The current assignment, replayed from ASSIGNED (full set) and REVOKED lines.
    fn assignment(&self) -> Option<BTreeSet<i32>> {
        let mut current = None;
        for line in self.lines() {
            let mut parts = line.splitn(3, ' ');
            let (kind, _, list) = (parts.next().unwrap_or(""), parts.next(), parts.next().unwrap_or(""));
            let set =
                || -> BTreeSet<i32> { list.split(',').filter(|s| !s.is_empty()).map(|s| s.parse().unwrap()).collect() };
            match kind {
                "ASSIGNED" => current = Some(set()),
                "REVOKED" => {
                    if let Some(c) = current.as_mut() {
                        *c = c.difference(&set()).copied().collect();
                    }
                }
                _ => {}
            }
        }
        current
    }

    /// (partition, offset, value) of every record processed.
    fn records(&self) -> Vec<(i32, i64, String)> {
        self.lines()
            .iter()
            .filter_map(|l| l.strip_prefix("RECORD "))
            .map(|l| {
                let mut p = l.splitn(4, ' ');
                let _name = p.next();
                (
                    p.next().unwrap().parse().unwrap(),
                    p.next().unwrap().parse().unwrap(),
                    p.next().unwrap_or("").to_owned(),
                )
            })
            .collect()
    }

    /// Leaves the group cleanly.
    fn stop(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"stop\n");
        }
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(30);
            while child.try_wait().unwrap().is_none() {
                assert!(Instant::now() < deadline, "worker {} did not stop", self.name);
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Dies without a word.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.stdin.take();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
    start.elapsed()
}

fn create_topic(broker: &Broker, topic: &str, partitions: i32) {
    block_on(async {
        let client = KafkaClient::connect(&broker.addr, "setup").await.unwrap();
        client.create_topic(topic, partitions, 1, &BTreeMap::new()).await.unwrap();
    });
}

/// Produces values `{tag}-{i}` for i in `range`, round robin over the partitions.
fn produce(broker: &Broker, topic: &str, partitions: i32, tag: &str, range: std::ops::Range<usize>) {
    block_on(async {
        let client = KafkaClient::connect(&broker.addr, "producer").await.unwrap();
        let mut by_partition: HashMap<i32, Vec<KeyValue>> = HashMap::new();
        for i in range {
            by_partition
                .entry((i % partitions as usize) as i32)
                .or_default()
                .push((None, Some(Bytes::from(format!("{tag}-{i}")))));
        }
        for (p, values) in by_partition {
            for chunk in values.chunks(50) {
                let batch = encode_batch(chunk, &EncodeOptions::default()).freeze();
                client.produce(topic, p, batch, -1, 10_000).await.unwrap();
            }
        }
    });
}

fn distinct_values(workers: &[&Worker]) -> BTreeSet<String> {
    workers.iter().flat_map(|w| w.records()).map(|(_, _, v)| v).collect()
}

fn expected(tag: &str, range: std::ops::Range<usize>) -> BTreeSet<String> {
    range.map(|i| format!("{tag}-{i}")).collect()
}

#[test]
fn queue_model_three_members_split_six_partitions_and_process_each_record_once() {
    let broker = Broker::start("queue", GROUP_ARGS);
    create_topic(&broker, "q", 6);
    let started = Instant::now();
    let workers: Vec<Worker> = (0..3).map(|i| Worker::start(&broker, "q", "qg", &format!("w{i}"), &[])).collect();
    wait_until("each of 3 members to own 2 partitions", Duration::from_secs(60), || {
        let sets: Vec<_> = workers.iter().map(|w| w.assignment().unwrap_or_default()).collect();
        sets.iter().all(|s| s.len() == 2) && sets.iter().flatten().collect::<BTreeSet<_>>().len() == 6
    });
    eprintln!("rebalance of 3 new members (confluent-kafka, initial delay 500 ms) took {:?}", started.elapsed());
    produce(&broker, "q", 6, "q", 0..600);
    let refs: Vec<&Worker> = workers.iter().collect();
    wait_until("600 records processed", Duration::from_secs(60), || distinct_values(&refs).len() == 600);
    std::thread::sleep(Duration::from_millis(500));
    let all: Vec<(i32, i64, String)> = workers.iter().flat_map(|w| w.records()).collect();
    assert_eq!(all.len(), 600, "each record processed exactly once when nothing fails");
    for w in &workers {
        let mine = w.assignment().unwrap();
        assert!(w.records().iter().all(|(p, _, _)| mine.contains(p)), "{} only read its own partitions", w.name);
    }
}

#[test]
fn pub_sub_every_group_gets_every_record_across_clients() {
    let broker = Broker::start("pubsub", GROUP_ARGS);
    create_topic(&broker, "ps", 3);
    let a = Worker::start(&broker, "ps", "group-a", "a", &[]);
    let b1 = Worker::start(&broker, "ps", "group-b", "b1", &["--client", "kafka-python"]);
    let b2 = Worker::start(&broker, "ps", "group-b", "b2", &["--client", "kafka-python"]);
    wait_until("both groups assigned", Duration::from_secs(60), || {
        a.assignment().is_some_and(|s| s.len() == 3)
            && b1.assignment().unwrap_or_default().len() + b2.assignment().unwrap_or_default().len() == 3
    });
    produce(&broker, "ps", 3, "ps", 0..300);
    let want = expected("ps", 0..300);
    wait_until("group a to see all", Duration::from_secs(60), || distinct_values(&[&a]) == want);
    wait_until("group b to see all", Duration::from_secs(60), || distinct_values(&[&b1, &b2]) == want);
}

#[test]
fn idle_extra_member_takes_over_at_once_when_another_leaves() {
    let broker = Broker::start("extra", GROUP_ARGS);
    create_topic(&broker, "x", 2);
    // Long sessions: a takeover well within them proves the leave, not a timeout, triggered it.
    let session = ["--session-ms", "45000"];
    let mut workers: Vec<Worker> =
        (0..3).map(|i| Worker::start(&broker, "x", "xg", &format!("w{i}"), &session)).collect();
    wait_until("two members with one partition, one idle", Duration::from_secs(60), || {
        let sizes: Vec<usize> = workers.iter().map(|w| w.assignment().map_or(usize::MAX, |s| s.len())).collect();
        let mut sorted = sizes.clone();
        sorted.sort();
        sorted == vec![0, 1, 1]
    });
    let idle = workers.iter().position(|w| w.assignment().unwrap().is_empty()).unwrap();
    let leaver = (idle + 1) % 3;
    let moved = workers[leaver].assignment().unwrap();
    workers[leaver].stop();
    let took = wait_until("the idle member to take over", Duration::from_secs(10), || {
        workers[idle].assignment().is_some_and(|s| !s.is_empty())
    });
    eprintln!("graceful leave: idle member took over {moved:?} after {took:?}");
    produce(&broker, "x", 2, "x", 0..100);
    let live: Vec<&Worker> = workers.iter().enumerate().filter(|(i, _)| *i != leaver).map(|(_, w)| w).collect();
    wait_until("survivors process everything", Duration::from_secs(60), || {
        distinct_values(&live) == expected("x", 0..100)
    });
}

#[test]
fn a_killed_member_loses_its_partitions_after_its_session_and_nothing_is_lost() {
    let broker = Broker::start("kill", GROUP_ARGS);
    create_topic(&broker, "k", 4);
    let session = ["--session-ms", "3000"];
    let mut a = Worker::start(&broker, "k", "kg", "a", &session);
    let b = Worker::start(&broker, "k", "kg", "b", &session);
    wait_until("two members sharing 4 partitions", Duration::from_secs(60), || {
        a.assignment().unwrap_or_default().len() == 2 && b.assignment().unwrap_or_default().len() == 2
    });
    produce(&broker, "k", 4, "k", 0..200);
    wait_until("first 200 processed", Duration::from_secs(60), || distinct_values(&[&a, &b]).len() == 200);
    let a_seen = a.records();
    a.kill();
    let killed_at = Instant::now();
    produce(&broker, "k", 4, "k", 200..400);
    wait_until("b to own all 4 partitions", Duration::from_secs(30), || b.assignment().is_some_and(|s| s.len() == 4));
    eprintln!("session expiry moved the dead member's partitions after {:?}", killed_at.elapsed());
    let mut all: BTreeSet<String> = a_seen.into_iter().map(|(_, _, v)| v).collect();
    wait_until("every record processed at least once", Duration::from_secs(60), || {
        all.extend(b.records().into_iter().map(|(_, _, v)| v));
        all == expected("k", 0..400)
    });
}

/// Broker settings for consumer-protocol (KIP-848) groups: the broker's own short session.
const CONSUMER_PROTOCOL_ARGS: &[&str] = &[
    "--shards",
    "2",
    "--set",
    "group_consumer_session_timeout_ms=3000",
    "--set",
    "group_consumer_heartbeat_interval_ms=500",
];

/// ConsumerGroupDescribe of one group: (state, assignor, partitions per member, members'
/// epochs equal to the assignment epoch).
fn describe_consumer_group(broker: &Broker, group: &str) -> (String, String, Vec<usize>, bool) {
    use kafka_protocol::messages::{ConsumerGroupDescribeRequest, GroupId};
    use kafka_protocol::protocol::StrBytes;
    block_on(async {
        let client = KafkaClient::connect(&broker.addr, "describe").await.unwrap();
        let conn = client.coordinator(group).await.unwrap();
        let request = ConsumerGroupDescribeRequest::default()
            .with_group_ids(vec![GroupId(StrBytes::from_string(group.to_owned()))]);
        let response = conn.send(request).await.unwrap();
        let g = &response.groups[0];
        assert_eq!(g.error_code, 0, "{g:?}");
        let mut sizes: Vec<usize> =
            g.members.iter().map(|m| m.assignment.topic_partitions.iter().map(|t| t.partitions.len()).sum()).collect();
        sizes.sort_unstable();
        let settled = g.members.iter().all(|m| m.member_epoch == g.assignment_epoch);
        (g.group_state.to_string(), g.assignor_name.to_string(), sizes, settled)
    })
}

/// KIP-848: three confluent-kafka members with `group.protocol=consumer` split 6 partitions
/// 2/2/2 as the broker assigns them, process each record once, and the broker moves partitions
/// when one leaves and when one is killed (after the broker's session timeout), losing nothing.
#[test]
fn consumer_protocol_members_split_six_partitions_and_rebalance_on_leave_and_kill() {
    let broker = Broker::start("kip848", CONSUMER_PROTOCOL_ARGS);
    create_topic(&broker, "c", 6);
    let args = ["--protocol", "consumer"];
    let mut workers: Vec<Worker> = (0..3).map(|i| Worker::start(&broker, "c", "cg", &format!("w{i}"), &args)).collect();
    let started = Instant::now();
    wait_until("each of 3 members to own 2 partitions", Duration::from_secs(60), || {
        let sets: Vec<_> = workers.iter().map(|w| w.assignment().unwrap_or_default()).collect();
        sets.iter().all(|s| s.len() == 2) && sets.iter().flatten().collect::<BTreeSet<_>>().len() == 6
    });
    eprintln!("3 consumer-protocol members settled after {:?}", started.elapsed());
    let (state, assignor, sizes, settled) = describe_consumer_group(&broker, "cg");
    assert_eq!((state.as_str(), assignor.as_str(), sizes, settled), ("Stable", "uniform", vec![2, 2, 2], true));
    produce(&broker, "c", 6, "c", 0..600);
    let refs: Vec<&Worker> = workers.iter().collect();
    wait_until("600 records processed", Duration::from_secs(60), || distinct_values(&refs).len() == 600);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(workers.iter().map(|w| w.records().len()).sum::<usize>(), 600, "each record once");
    // The classic DescribeGroups does not describe it, ListGroups lists it as a consumer group.
    block_on(async {
        use kafka_protocol::messages::ListGroupsRequest;
        use kafka_protocol::protocol::StrBytes;
        let conn = moldau::client::BrokerConnection::connect(&broker.addr, "list").await.unwrap();
        let request = ListGroupsRequest::default().with_types_filter(vec![StrBytes::from_static_str("consumer")]);
        let listed = conn.send(request).await.unwrap();
        let ids: Vec<String> = listed.groups.iter().map(|g| g.group_id.to_string()).collect();
        assert_eq!(ids, ["cg"]);
        let request = ListGroupsRequest::default().with_types_filter(vec![StrBytes::from_static_str("classic")]);
        assert!(conn.send(request).await.unwrap().groups.is_empty());
    });
    // A clean leave: the other two take its partitions, three each.
    let seen_before: Vec<(i32, i64, String)> = workers.iter().flat_map(|w| w.records()).collect();
    workers[0].stop();
    wait_until("two members own 3 partitions each", Duration::from_secs(20), || {
        workers[1..].iter().all(|w| w.assignment().is_some_and(|s| s.len() == 3))
    });
    // A kill: after the broker's session timeout the last member holds all six.
    workers[1].kill();
    let killed_at = Instant::now();
    wait_until("the last member owns all 6", Duration::from_secs(30), || {
        workers[2].assignment().is_some_and(|s| s.len() == 6)
    });
    eprintln!("a killed consumer-protocol member's partitions moved after {:?}", killed_at.elapsed());
    produce(&broker, "c", 6, "c", 600..900);
    let mut all: BTreeSet<String> = seen_before.into_iter().map(|(_, _, v)| v).collect();
    all.extend(workers[1].records().into_iter().map(|(_, _, v)| v));
    wait_until("every record processed at least once", Duration::from_secs(60), || {
        all.extend(workers[2].records().into_iter().map(|(_, _, v)| v));
        all == expected("c", 0..900)
    });
    let (state, _, sizes, _) = describe_consumer_group(&broker, "cg");
    assert_eq!((state.as_str(), sizes), ("Stable", vec![6]));
}

/// The `range` assignor when members ask for it (`group.remote.assignor`): contiguous ranges.
#[test]
fn consumer_protocol_members_that_ask_for_range_get_contiguous_ranges() {
    let broker = Broker::start("kip848-range", CONSUMER_PROTOCOL_ARGS);
    create_topic(&broker, "r", 5);
    let args = ["--protocol", "consumer", "--remote-assignor", "range"];
    let workers: Vec<Worker> = (0..2).map(|i| Worker::start(&broker, "r", "rg", &format!("w{i}"), &args)).collect();
    wait_until("two members sharing 5 partitions", Duration::from_secs(60), || {
        let sets: Vec<_> = workers.iter().map(|w| w.assignment().unwrap_or_default()).collect();
        sets.iter().all(|s| !s.is_empty()) && sets.iter().map(BTreeSet::len).sum::<usize>() == 5
    });
    let (state, assignor, sizes, _) = describe_consumer_group(&broker, "rg");
    assert_eq!((state.as_str(), assignor.as_str(), sizes), ("Stable", "range", vec![2, 3]));
    let mut ranges: Vec<Vec<i32>> = workers.iter().map(|w| w.assignment().unwrap().into_iter().collect()).collect();
    ranges.sort();
    assert_eq!(ranges, [vec![0, 1, 2], vec![3, 4]]);
}

#[test]
fn committed_offsets_survive_a_broker_crash() {
    let mut broker = Broker::start("offsets-crash", GROUP_ARGS);
    create_topic(&broker, "c", 2);
    produce(&broker, "c", 2, "c", 0..100);
    let mut first = Worker::start(&broker, "c", "cg", "first", &[]);
    wait_until("100 records processed and committed", Duration::from_secs(60), || first.records().len() == 100);
    first.stop();
    broker.kill();
    broker.restart();
    produce(&broker, "c", 2, "c", 100..150);
    let second = Worker::start(&broker, "c", "cg", "second", &[]);
    wait_until("the 50 new records", Duration::from_secs(60), || distinct_values(&[&second]).len() >= 50);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(distinct_values(&[&second]), expected("c", 100..150), "resumed exactly after the committed offsets");
}

#[test]
fn cooperative_sticky_moves_only_what_must_move() {
    let broker = Broker::start("coop", GROUP_ARGS);
    create_topic(&broker, "co", 4);
    let strategy = ["--strategy", "cooperative-sticky"];
    let a = Worker::start(&broker, "co", "cog", "a", &strategy);
    wait_until("a owns everything", Duration::from_secs(60), || a.assignment().is_some_and(|s| s.len() == 4));
    let b = Worker::start(&broker, "co", "cog", "b", &strategy);
    wait_until("a and b share", Duration::from_secs(60), || {
        a.assignment().unwrap_or_default().len() == 2 && b.assignment().unwrap_or_default().len() == 2
    });
    // Incremental: a gave up two partitions and kept two; it never revoked all four.
    let revocations: Vec<String> = a.lines().into_iter().filter(|l| l.starts_with("REVOKED")).collect();
    assert!(!revocations.is_empty(), "a revoked something");
    for r in &revocations {
        let count = r.split(' ').nth(2).unwrap_or("").split(',').filter(|s| !s.is_empty()).count();
        assert!(count < 4, "cooperative rebalance revoked everything: {r}");
    }
    produce(&broker, "co", 4, "co", 0..200);
    wait_until("all records", Duration::from_secs(60), || distinct_values(&[&a, &b]) == expected("co", 0..200));
}

#[test]
fn a_static_member_restarting_within_its_session_keeps_its_partitions_without_a_rebalance() {
    let broker = Broker::start("static", GROUP_ARGS);
    create_topic(&broker, "st", 4);
    let args = |id: &'static str| vec!["--instance-id", id, "--session-ms", "20000"];
    let a = Worker::start(&broker, "st", "sg", "a", &args("instance-a"));
    let mut b = Worker::start(&broker, "st", "sg", "b", &args("instance-b"));
    wait_until("two static members sharing", Duration::from_secs(60), || {
        a.assignment().unwrap_or_default().len() == 2 && b.assignment().unwrap_or_default().len() == 2
    });
    let a_before = a.lines().len();
    let b_partitions = b.assignment().unwrap();
    b.kill();
    let b2 = Worker::start(&broker, "st", "sg", "b2", &args("instance-b"));
    wait_until("the restarted instance to get its partitions back", Duration::from_secs(30), || {
        b2.assignment().is_some_and(|s| !s.is_empty())
    });
    assert_eq!(b2.assignment().unwrap(), b_partitions, "same partitions as before the restart");
    produce(&broker, "st", 4, "st", 0..100);
    wait_until("all records", Duration::from_secs(60), || distinct_values(&[&a, &b2]) == expected("st", 0..100));
    let a_after: Vec<String> = a.lines()[a_before..].to_vec();
    assert!(
        !a_after.iter().any(|l| l.starts_with("REVOKED") || l.starts_with("ASSIGNED")),
        "the other member saw no rebalance: {a_after:?}"
    );
}

#[test]
fn group_cli_lists_describes_with_lag_resets_and_deletes() {
    let broker = Broker::start("groupcli", GROUP_ARGS);
    create_topic(&broker, "g", 2);
    produce(&broker, "g", 2, "g", 0..40);
    let mut worker = Worker::start(&broker, "g", "cli-group", "w", &[]);
    wait_until("40 records processed", Duration::from_secs(60), || worker.records().len() == 40);
    let b = broker.addr.as_str();
    let cli = |args: &[&str]| {
        let mut full = args.to_vec();
        full.extend_from_slice(&["--bootstrap", b]);
        stdout(&run_ok(&mut moldau(&full), &format!("moldau {args:?}"), Duration::from_secs(60)))
    };
    let listed = cli(&["group", "list"]);
    assert!(listed.contains("cli-group\tStable\tconsumer"), "{listed}");
    let described = cli(&["group", "describe", "cli-group"]);
    assert!(described.contains("members 1") && described.contains("partitions [g-0, g-1]"), "{described}");
    worker.stop();
    produce(&broker, "g", 2, "late", 0..10);
    let described = cli(&["group", "describe", "cli-group"]);
    // Each partition: committed 20, log end 25, lag 5.
    let rows: Vec<&str> = described.lines().filter(|l| l.trim_start().starts_with("g ")).collect();
    assert_eq!(rows.len(), 2, "{described}");
    for row in rows {
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(&cols[2..5], &["20", "25", "5"], "{row}");
    }
    let plan = cli(&["group", "reset-offsets", "cli-group", "--topic", "g", "--to-earliest"]);
    assert!(plan.contains("dry run"), "{plan}");
    cli(&["group", "reset-offsets", "cli-group", "--topic", "g", "--to-earliest", "--execute"]);
    let again = Worker::start(&broker, "g", "cli-group", "again", &[]);
    wait_until("everything read again after the reset", Duration::from_secs(60), || again.records().len() == 50);
    drop(again);
    std::thread::sleep(Duration::from_secs(1));
    // Deleting needs an empty group: wait for the killed member's session to lapse.
    wait_until("the group to be deletable", Duration::from_secs(30), || {
        run_ok_quiet(&["group", "delete", "cli-group", "--bootstrap", b])
    });
    assert!(!cli(&["group", "list"]).contains("cli-group"));
}

fn run_ok_quiet(args: &[&str]) -> bool {
    common::run(&mut moldau(args), Duration::from_secs(30)).status.success()
}

/// Joins `n` members of `group` at once; returns them once all have their assignment.
async fn join_all(addr: &str, group: &str, topic: &str, partitions: i32, n: usize) -> Vec<GroupConsumer> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (addr, group, topic) = (addr.to_owned(), group.to_owned(), topic.to_owned());
            moldau::io::spawn(async move {
                let client = KafkaClient::connect(&addr, &format!("member-{i}")).await.unwrap();
                GroupConsumer::join(&client, &group, &topic, partitions, 10_000).await.unwrap()
            })
        })
        .collect();
    let mut members = Vec::new();
    for t in tasks {
        members.push(t.await.unwrap());
    }
    members
}

#[test]
fn protocol_level_rebalance_of_three_members_and_after_a_leave() {
    // Our own group client (range assignor) against the coordinator, without a client
    // library's start-up time in the way: how long a rebalance itself takes.
    let broker = Broker::start("rebalance-time", &["--set", "group_initial_rebalance_delay_ms=0"]);
    create_topic(&broker, "rt", 6);
    block_on(async {
        let started = Instant::now();
        let mut members = join_all(&broker.addr, "rt-group", "rt", 6, 3).await;
        let joined = started.elapsed();
        let mut owned: Vec<i32> = members.iter().flat_map(|m| m.assignment.clone()).collect();
        owned.sort();
        assert_eq!(owned, (0..6).collect::<Vec<_>>(), "every partition to exactly one member");
        assert!(members.iter().all(|m| m.assignment.len() == 2));
        // One leaves; the others learn of the rebalance at their next heartbeat and rejoin.
        let leaver = members.pop().unwrap();
        let left_at = Instant::now();
        leaver.leave().await.expect("LeaveGroup");
        let rejoin: Vec<_> = members
            .into_iter()
            .map(|mut m| {
                moldau::io::spawn(async move {
                    loop {
                        match m.heartbeat().await {
                            Ok(()) => moldau::io::sleep(Duration::from_millis(20)).await,
                            Err(e) if needs_rejoin(&e) => {
                                m.rejoin(6).await.unwrap();
                                return m;
                            }
                            Err(e) => panic!("heartbeat: {e}"),
                        }
                    }
                })
            })
            .collect();
        let mut survivors = Vec::new();
        for t in rejoin {
            survivors.push(t.await.unwrap());
        }
        let rebalanced = left_at.elapsed();
        assert!(survivors.iter().all(|m| m.assignment.len() == 3), "the leaver's partitions moved to the others");
        // The session is 10 s: a rebalance that waited for it means the leave was not seen.
        assert!(rebalanced < Duration::from_secs(5), "rebalance after a leave took {rebalanced:?}");
        eprintln!(
            "protocol-level rebalance: 3 members joined in {joined:?}; after a leave, 2 rejoined in {rebalanced:?}"
        );
    });
}

/// Bytes the files of every `__consumer_offsets` partition take on disk (allocated blocks).
fn offsets_disk_bytes(broker: &Broker) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut bytes = 0;
    for dir in std::fs::read_dir(&broker.data_dir).unwrap() {
        let dir = dir.unwrap().path();
        if !dir.file_name().unwrap().to_string_lossy().starts_with("__consumer_offsets-") {
            continue;
        }
        for file in std::fs::read_dir(&dir).unwrap() {
            bytes += file.unwrap().metadata().unwrap().blocks() * 512;
        }
    }
    bytes
}

#[test]
fn tiny_groups_take_little_disk() {
    let broker = Broker::start("tiny-groups", &[]);
    create_topic(&broker, "tiny", 1);
    moldau::io::block_on(async {
        let client = moldau::client::KafkaClient::connect(&broker.addr, "tiny").await.unwrap();
        // Nine groups, one commit each, landing in (up to) nine offsets partitions.
        for g in 0..9 {
            client.commit_offsets(&format!("tiny-{g}"), &[("tiny".to_owned(), 0, 1)]).await.unwrap();
        }
    });
    let used = offsets_disk_bytes(&broker);
    println!("nine one-commit groups: {used} bytes of __consumer_offsets on disk");
    // User partitions preallocate 16 MiB at a time; nine offsets partitions at that step
    // would be 144 MiB.
    assert!(used < 9 * (2 << 20), "{used} bytes");
}
