//! Several real nodes as one cluster: each `moldau serve` process on its own loopback address
//! (127.0.S.N), voters of one metadata quorum, driven through the Kafka protocol (our client and
//! kcat), killed with SIGKILL and cut off with nftables.

mod common;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::{Broker, SmallDisk, TempDir, TestCa};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
use kafka_protocol::messages::{
    CreateTopicsRequest, DescribeClusterRequest, DescribeQuorumRequest, ElectLeadersRequest, MetadataRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use moldau::client::BrokerConnection;
use moldau::io::block_on;

/// Session timeout the nodes run with (short, so failover is quick to see).
const SESSION_TIMEOUT_MS: u64 = 3000;

/// Nodes of one cluster, node `i` (1-based) on 127.0.`subnet`.`i`.
struct Cluster {
    nodes: Vec<Broker>,
    /// The voters, `id@host:port,...` (their controller listeners).
    voters: String,
    _dirs: Vec<TempDir>,
}

/// A free port on `ip` (bound and released: nothing else here picks ports on these addresses).
fn free_port(ip: &str) -> u16 {
    TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap().port()
}

impl Cluster {
    fn start(name: &str, subnet: u8, count: usize, extra: &[&str]) -> Self {
        Self::start_with_voters(name, subnet, count, count, extra)
    }

    /// `count` nodes of which the first `voters` are voters (controllers and brokers), the rest
    /// brokers only.
    fn start_with_voters(name: &str, subnet: u8, count: usize, voters: usize, extra: &[&str]) -> Self {
        Self::start_each(name, subnet, count, voters, extra, &|_| Vec::new())
    }

    /// [`Cluster::start_with_voters`], node `i` also given `per_node(i)`.
    fn start_each(
        name: &str,
        subnet: u8,
        count: usize,
        voters: usize,
        extra: &[&str],
        per_node: &dyn Fn(usize) -> Vec<String>,
    ) -> Self {
        let ips: Vec<String> = (1..=count).map(|i| format!("127.0.{subnet}.{i}")).collect();
        let voters: Vec<String> =
            ips.iter().take(voters).enumerate().map(|(i, ip)| format!("{}@{ip}:{}", i + 1, free_port(ip))).collect();
        let voters = voters.join(",");
        let dirs: Vec<TempDir> = (1..=count).map(|i| TempDir::new(&format!("{name}-{i}"))).collect();
        let nodes = (1..=count)
            .map(|i| {
                let mut args: Vec<String> = vec![
                    "--node-id".into(),
                    i.to_string(),
                    "--voters".into(),
                    voters.clone(),
                    "--shards".into(),
                    "1".into(),
                    "--set".into(),
                    format!("broker_session_timeout_ms={SESSION_TIMEOUT_MS}"),
                    "--set".into(),
                    "broker_heartbeat_interval_ms=500".into(),
                    "--set".into(),
                    "leader_imbalance_check_interval_ms=1000".into(),
                    "--set".into(),
                    "shutdown_grace_ms=500".into(),
                ];
                args.extend(extra.iter().map(|s| s.to_string()));
                args.extend(per_node(i));
                Broker::start_at(&dirs[i - 1], &format!("{}:0", ips[i - 1]), args)
            })
            .collect();
        Self { nodes, voters, _dirs: dirs }
    }

    fn node(&mut self, id: i32) -> &mut Broker {
        &mut self.nodes[id as usize - 1]
    }

    fn addr(&self, id: i32) -> String {
        self.nodes[id as usize - 1].addr.clone()
    }

    /// Every running node's Kafka address, comma-separated (a restarted node listens on a new
    /// port, so this is asked again after restarts).
    fn bootstrap(&self) -> String {
        self.running().iter().map(|id| self.addr(*id)).collect::<Vec<_>>().join(",")
    }

    fn running(&self) -> Vec<i32> {
        self.nodes.iter().enumerate().filter(|(_, n)| n.is_running()).map(|(i, _)| i as i32 + 1).collect()
    }

    fn logs(&self) -> String {
        self.nodes.iter().enumerate().map(|(i, n)| format!("==== node {} ====\n{}", i + 1, n.log())).collect()
    }
}

/// One partition as Metadata describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Part {
    leader: i32,
    epoch: i32,
    replicas: Vec<i32>,
    isr: Vec<i32>,
    offline: Vec<i32>,
}

/// What a node's Metadata says about the whole cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    cluster_id: String,
    brokers: Vec<i32>,
    topics: BTreeMap<String, Vec<Part>>,
}

fn metadata(addr: &str) -> Option<Seen> {
    block_on(async {
        let conn = BrokerConnection::connect(addr, "cluster-test").await.ok()?;
        let response = conn.send(MetadataRequest::default().with_topics(None)).await.ok()?;
        let mut brokers: Vec<i32> = response.brokers.iter().map(|b| b.node_id.0).collect();
        brokers.sort_unstable();
        let mut topics = BTreeMap::new();
        for t in &response.topics {
            let mut parts: Vec<(i32, Part)> = t
                .partitions
                .iter()
                .map(|p| {
                    (
                        p.partition_index,
                        Part {
                            leader: p.leader_id.0,
                            epoch: p.leader_epoch,
                            replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                            isr: p.isr_nodes.iter().map(|b| b.0).collect(),
                            offline: p.offline_replicas.iter().map(|b| b.0).collect(),
                        },
                    )
                })
                .collect();
            parts.sort_by_key(|(i, _)| *i);
            topics.insert(t.name.as_ref()?.as_str().to_owned(), parts.into_iter().map(|(_, p)| p).collect());
        }
        let cluster_id = response.cluster_id.map(|c| c.as_str().to_owned()).unwrap_or_default();
        Some(Seen { cluster_id, brokers, topics })
    })
}

/// Polls `check` until it returns something or `limit` passes; the panic message says what was
/// awaited.
fn eventually<T>(what: &str, limit: Duration, cluster: &Cluster, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return value;
        }
        if Instant::now() > deadline {
            panic!("{what}: not within {limit:?}\n{}", cluster.logs());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// CreateTopics through `addr`: the error code of the one topic (0: created).
fn create_topic(addr: &str, name: &str, partitions: i32, replication: i16) -> Option<i16> {
    create_topic_with(addr, name, partitions, replication, &[])
}

/// [`create_topic`] with topic configs.
fn create_topic_with(
    addr: &str,
    name: &str,
    partitions: i32,
    replication: i16,
    configs: &[(&str, &str)],
) -> Option<i16> {
    use kafka_protocol::messages::create_topics_request::CreatableTopicConfig;
    block_on(async {
        let conn = BrokerConnection::connect(addr, "cluster-test").await.ok()?;
        let configs = configs
            .iter()
            .map(|(k, v)| {
                CreatableTopicConfig::default()
                    .with_name(StrBytes::from_string(k.to_string()))
                    .with_value(Some(StrBytes::from_string(v.to_string())))
            })
            .collect();
        let request = CreateTopicsRequest::default().with_timeout_ms(30_000).with_topics(vec![
            CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_string(name.to_owned())))
                .with_num_partitions(partitions)
                .with_replication_factor(replication)
                .with_configs(configs),
        ]);
        let response = conn.send(request).await.ok()?;
        Some(response.topics[0].error_code)
    })
}

/// DescribeQuorum through `addr`: leader and term.
fn quorum_leader(addr: &str) -> Option<(i32, i32)> {
    block_on(async {
        let conn = BrokerConnection::connect(addr, "cluster-test").await.ok()?;
        let request = DescribeQuorumRequest::default().with_topics(vec![
            TopicData::default()
                .with_topic_name(TopicName(StrBytes::from_static_str("__cluster_metadata")))
                .with_partitions(vec![PartitionData::default().with_partition_index(0)]),
        ]);
        let response = conn.send(request).await.ok()?;
        if response.error_code != 0 {
            return None;
        }
        let p = &response.topics.first()?.partitions.first()?;
        (p.error_code == 0).then_some((p.leader_id.0, p.leader_epoch))
    })
}

/// Waits until every running node lists `brokers` and they all agree on the whole image.
fn converged(cluster: &Cluster, brokers: &[i32], limit: Duration) -> Seen {
    eventually("every node sees the same cluster", limit, cluster, || {
        let seen: Vec<Option<Seen>> = cluster.running().iter().map(|id| metadata(&cluster.addr(*id))).collect();
        let first = seen.first()?.clone()?;
        (first.brokers == brokers && seen.iter().all(|s| s.as_ref() == Some(&first))).then_some(first)
    })
}

#[test]
fn three_nodes_spread_a_topic_and_move_leaders_when_a_broker_dies() {
    let mut cluster = Cluster::start("cluster-spread", 11, 3, &[]);
    let seen = converged(&cluster, &[1, 2, 3], Duration::from_secs(30));
    assert!(!seen.cluster_id.is_empty(), "the cluster has an id");
    // Replication factor 3 on 3 brokers, created through a node that need not be the controller.
    assert_eq!(create_topic(&cluster.addr(2), "spread", 6, 3), Some(0));
    assert_eq!(create_topic(&cluster.addr(3), "single", 3, 1), Some(0));
    assert_eq!(create_topic(&cluster.addr(1), "too-wide", 1, 4), Some(38), "INVALID_REPLICATION_FACTOR");
    let seen = converged(&cluster, &[1, 2, 3], Duration::from_secs(10));
    let spread = &seen.topics["spread"];
    assert_eq!(spread.len(), 6);
    for p in spread {
        let mut replicas = p.replicas.clone();
        replicas.sort_unstable();
        assert_eq!(replicas, vec![1, 2, 3], "three distinct brokers: {p:?}");
        assert_eq!(p.leader, p.replicas[0], "the preferred replica leads: {p:?}");
        assert_eq!(p.isr.len(), 3);
    }
    let leaders: std::collections::BTreeSet<i32> = spread.iter().map(|p| p.leader).collect();
    assert_eq!(leaders.len(), 3, "leaders on all three brokers: {spread:?}");
    // One call producing to every partition (one request per leader, side by side, as the load
    // generator sends them) lands each batch on its own partition; a partition that does not
    // exist fails alone.
    let (results, ends) = block_on(async {
        let client = moldau::client::KafkaClient::connect(&cluster.addr(1), "cluster-test").await.unwrap();
        let mut batches: Vec<_> = (0..6).map(|p| ("spread".to_owned(), p, one_record())).collect();
        batches.insert(3, ("spread".to_owned(), 6, one_record()));
        let results = client.produce_batches(batches, -1, 10_000).await;
        let mut ends = Vec::new();
        for p in 0..6 {
            ends.push(client.list_offset("spread", p, -1).await.unwrap().0);
        }
        (results, ends)
    });
    let offsets: Vec<Option<i64>> = results.iter().map(|r| r.as_ref().ok().copied()).collect();
    assert_eq!(offsets, vec![Some(0), Some(0), Some(0), None, Some(0), Some(0), Some(0)], "{results:?}");
    assert_eq!(ends, vec![1; 6], "one record in each partition");
    // DescribeCluster from any node lists all three.
    let described = block_on(async {
        let conn = BrokerConnection::connect(&cluster.addr(3), "cluster-test").await.unwrap();
        let response = conn.send(DescribeClusterRequest::default()).await.unwrap();
        let mut ids: Vec<i32> = response.brokers.iter().map(|b| b.broker_id.0).collect();
        ids.sort_unstable();
        ids
    });
    assert_eq!(described, vec![1, 2, 3]);
    // A kcat client sees the same brokers and leaders.
    let listing = common::run_ok(
        std::process::Command::new("kcat").args(["-b", &cluster.addr(1), "-L", "-t", "spread"]),
        "kcat -L",
        Duration::from_secs(30),
    );
    let listing = common::stdout(&listing);
    assert!(listing.contains(" 3 brokers:"), "{listing}");

    // A broker dies: what it led moves to another in-sync replica, with a new epoch, within the
    // session timeout and a few seconds.
    let victim = 3;
    let before = seen.topics["spread"].clone();
    let alone = seen.topics["single"].iter().position(|p| p.leader == victim).expect("a partition only on the victim");
    let killed = Instant::now();
    cluster.node(victim).kill();
    let after = eventually(
        "leaderships leave the dead broker",
        Duration::from_millis(SESSION_TIMEOUT_MS + 8000),
        &cluster,
        || {
            let seen = metadata(&cluster.addr(1))?;
            let parts = seen.topics.get("spread")?.clone();
            (parts.iter().all(|p| p.leader != victim && p.leader >= 0) && seen.brokers == vec![1, 2]).then_some(parts)
        },
    );
    let moved_in = killed.elapsed();
    for (old, new) in before.iter().zip(&after) {
        if old.leader == victim {
            assert!(new.epoch > old.epoch, "a new leader has a new epoch: {old:?} -> {new:?}");
            assert!(old.isr.contains(&new.leader), "the new leader was in sync: {old:?} -> {new:?}");
        }
        assert!(!new.isr.contains(&victim), "the dead broker left the ISR: {new:?}");
        assert_eq!(new.offline, vec![victim], "and is reported offline: {new:?}");
    }
    println!("leaderships moved {moved_in:?} after the SIGKILL (session timeout {SESSION_TIMEOUT_MS} ms)");
    // A write sent to a broker that does not lead is told where the leader is now (KIP-951).
    let (index, part) = after.iter().enumerate().find(|(_, p)| p.leader == 1).expect("broker 1 leads something");
    // (Broker 2 may apply the change a moment after broker 1 reported it.)
    eventually("a non-leader names the leader", Duration::from_secs(10), &cluster, || {
        (produce_with_hint(&cluster.addr(2), "spread", index as i32) == Some((6, 1))).then_some(())
    });
    assert_eq!(produce_when_led(&cluster, 1, "spread", index as i32), Some(0), "{part:?}");
    assert_eq!(produce_with_hint(&cluster.addr(1), "spread", index as i32), Some((0, -1)), "no hint on success");
    // Its only replica gone, a partition stays offline (no unclean election by default), its
    // ISR kept so that replica can lead again.
    let offline = metadata(&cluster.addr(2)).unwrap().topics["single"][alone].clone();
    assert_eq!((offline.leader, offline.isr.clone()), (-1, vec![victim]), "{offline:?}");

    // It comes back: it registers again and leads what only it holds.
    cluster.node(victim).restart();
    let back = eventually("the restarted broker rejoins", Duration::from_secs(30), &cluster, || {
        let seen = metadata(&cluster.addr(2))?;
        let part = seen.topics.get("single")?[alone].clone();
        (seen.brokers == vec![1, 2, 3] && part.leader == victim).then_some(part)
    });
    assert!(back.epoch > offline.epoch, "{offline:?} -> {back:?}");
    // It catches up on what it follows, rejoins those ISRs, and leads again where it is the
    // preferred replica (the controller's imbalance check).
    eventually("preferred replicas lead again, all in sync", Duration::from_secs(30), &cluster, || {
        let parts = metadata(&cluster.addr(1))?.topics.get("spread")?.clone();
        parts.iter().all(|p| p.leader == p.replicas[0] && p.isr.len() == 3).then_some(())
    });
    let end = converged(&cluster, &[1, 2, 3], Duration::from_secs(15));
    assert_eq!(end.cluster_id, seen.cluster_id, "the cluster keeps its id");
}

#[test]
fn losing_the_active_controller_elects_another_and_losing_a_majority_stops_changes() {
    let mut cluster = Cluster::start("cluster-controller", 12, 3, &[]);
    converged(&cluster, &[1, 2, 3], Duration::from_secs(30));
    let (leader, term) =
        eventually("a quorum leader", Duration::from_secs(10), &cluster, || quorum_leader(&cluster.addr(1)));
    assert_eq!(quorum_leader(&cluster.addr(2)).map(|(l, _)| l), Some(leader), "every node names the same leader");

    let killed = Instant::now();
    cluster.node(leader).kill();
    let survivor = if leader == 1 { 2 } else { 1 };
    eventually("a topic created after the controller died", Duration::from_secs(30), &cluster, || {
        (create_topic(&cluster.addr(survivor), "after-failover", 3, 2) == Some(0)).then_some(())
    });
    let failover = killed.elapsed();
    println!("controller failover: CreateTopics through a survivor succeeded {failover:?} after the SIGKILL");
    let (new_leader, new_term) = quorum_leader(&cluster.addr(survivor)).expect("a new leader");
    assert_ne!(new_leader, leader);
    assert!(new_term > term, "a new term: {term} -> {new_term}");

    // Two of three gone: no majority, so changes fail with a clear error instead of forking.
    let other = cluster.running().into_iter().find(|id| *id != survivor).unwrap();
    cluster.node(other).kill();
    let started = Instant::now();
    let code = create_topic(&cluster.addr(survivor), "without-majority", 1, 1);
    assert!(
        matches!(code, Some(7) | Some(41)),
        "REQUEST_TIMED_OUT or NOT_CONTROLLER without a majority, got {code:?} after {:?}",
        started.elapsed()
    );

    // Nothing was committed meanwhile: the survivor's image does not have it. (Like Kafka's
    // REQUEST_TIMED_OUT, the outcome is unknown to the client: once a majority is back the
    // entry may still commit; either way every node ends with the same image.)
    let during = metadata(&cluster.addr(survivor)).expect("the survivor answers Metadata");
    assert!(!during.topics.contains_key("without-majority"), "{:?}", during.topics.keys());

    // Back to three: the cluster heals, and every node holds the same image.
    cluster.node(leader).restart();
    cluster.node(other).restart();
    eventually("changes work again", Duration::from_secs(30), &cluster, || {
        (create_topic(&cluster.addr(leader), "healed", 1, 3) == Some(0)).then_some(())
    });
    let seen = converged(&cluster, &[1, 2, 3], Duration::from_secs(20));
    assert!(seen.topics.contains_key("after-failover") && seen.topics.contains_key("healed"));

    // ElectLeaders: nothing to do when the preferred replicas lead.
    let results = block_on(async {
        let conn = BrokerConnection::connect(&cluster.addr(1), "cluster-test").await.unwrap();
        let request = ElectLeadersRequest::default().with_election_type(0).with_topic_partitions(Some(vec![
            TopicPartitions::default()
                .with_topic(TopicName(StrBytes::from_static_str("healed")))
                .with_partitions(vec![0]),
        ]));
        conn.send(request).await.unwrap()
    });
    let result = &results.replica_election_results[0].partition_result[0];
    assert_eq!(result.error_code, 84, "ELECTION_NOT_NEEDED: {results:?}");
}

/// Traffic between one node's address and the others' dropped with nftables, in a table of this
/// test's own (removed when dropped).
struct Cut {
    table: String,
}

impl Cut {
    fn isolate(isolated: &str, others: &[String]) -> Self {
        let table = format!("moldau_test_{}_{}", std::process::id(), isolated.replace('.', "_"));
        let others = others.join(", ");
        let script = format!(
            "table ip {table} {{\n chain out {{\n  type filter hook output priority 0; policy accept;\n  \
             ip saddr {isolated} ip daddr {{ {others} }} drop\n  ip saddr {{ {others} }} ip daddr {isolated} drop\n }}\n}}\n"
        );
        let mut child = std::process::Command::new("nft")
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("nft (Debian package nftables) is needed to cut links");
        use std::io::Write;
        child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
        assert!(child.wait().unwrap().success(), "nft refused:\n{script}");
        Self { table }
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        let _ = std::process::Command::new("nft").args(["delete", "table", "ip", &self.table]).status();
    }
}

fn one_record() -> bytes::Bytes {
    use moldau::model::records::{EncodeOptions, encode_batch};
    encode_batch(&[(None, Some(bytes::Bytes::from_static(b"x")))], &EncodeOptions::default()).freeze()
}

/// Produce (acks=1) of one record to `partition` of `topic` at the broker at `addr`, whatever the
/// cluster says: the error code (0: stored).
fn produce_at(addr: &str, topic: &str, partition: i32) -> Option<i16> {
    produce_with_hint(addr, topic, partition).map(|(code, _)| code)
}

/// [`produce_at`] retried, as a client does, while the broker does not lead the partition yet
/// (NOT_LEADER_OR_FOLLOWER) or does not answer: a node applies a leadership change a moment
/// after another node has reported it. The last answer.
fn produce_when_led(cluster: &Cluster, id: i32, topic: &str, partition: i32) -> Option<i16> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let code = produce_at(&cluster.addr(id), topic, partition);
        if !matches!(code, None | Some(6)) || Instant::now() > deadline {
            return code;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// [`produce_at`] at Produce v10+: the error code and the current leader the broker names
/// (KIP-951; -1 for none).
fn produce_with_hint(addr: &str, topic: &str, partition: i32) -> Option<(i16, i32)> {
    use kafka_protocol::messages::ProduceRequest;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    block_on(async {
        let conn = BrokerConnection::connect(addr, "cluster-test").await.ok()?;
        let request = ProduceRequest::default().with_acks(1).with_timeout_ms(5000).with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                .with_partition_data(vec![
                    PartitionProduceData::default().with_index(partition).with_records(Some(one_record())),
                ]),
        ]);
        let (response, version) = conn.send_capped(request, 11).await.ok()?;
        assert!(version >= 10, "Produce v{version}: KIP-951 needs v10+");
        let p = response.responses.first()?.partition_responses.first()?;
        let hint = p.current_leader.leader_id.0;
        if hint >= 0 {
            assert!(response.node_endpoints.iter().any(|n| n.node_id.0 == hint), "the hint's endpoint comes with it");
        }
        Some((p.error_code, if hint == 0 && p.current_leader.leader_epoch == 0 { -1 } else { hint }))
    })
}

#[test]
fn a_node_cut_off_from_the_others_stops_leading_and_the_majority_carries_on() {
    let cluster = Cluster::start("cluster-cut", 13, 3, &[]);
    converged(&cluster, &[1, 2, 3], Duration::from_secs(30));
    assert_eq!(create_topic(&cluster.addr(1), "cut", 3, 3), Some(0));
    let seen = converged(&cluster, &[1, 2, 3], Duration::from_secs(10));
    let (isolated, term) =
        eventually("a quorum leader", Duration::from_secs(10), &cluster, || quorum_leader(&cluster.addr(1)));
    let led = seen.topics["cut"].iter().position(|p| p.leader == isolated).expect("the controller leads a partition");
    assert_eq!(produce_when_led(&cluster, isolated, "cut", led as i32), Some(0), "it leads before the cut");

    let ip = |id: i32| format!("127.0.13.{id}");
    let others: Vec<i32> = [1, 2, 3].into_iter().filter(|id| *id != isolated).collect();
    let cut = Cut::isolate(&ip(isolated), &others.iter().map(|id| ip(*id)).collect::<Vec<_>>());
    let majority = others[0];
    // The majority elects a controller of its own and fences the isolated broker.
    let (leader, new_term) =
        eventually("the majority elects a new controller", Duration::from_secs(20), &cluster, || {
            quorum_leader(&cluster.addr(majority)).filter(|(l, _)| *l != isolated)
        });
    assert!(others.contains(&leader) && new_term > term);
    eventually("the isolated broker is fenced and leads nothing", Duration::from_secs(20), &cluster, || {
        let seen = metadata(&cluster.addr(majority))?;
        let parts = seen.topics.get("cut")?;
        (seen.brokers == others && parts.iter().all(|p| p.leader != isolated && p.leader >= 0)).then_some(())
    });
    assert_eq!(create_topic(&cluster.addr(majority), "during-cut", 1, 2), Some(0), "the majority still makes changes");
    // The isolated node stops acting as leader: a write there is refused, not stored.
    eventually(
        "the isolated broker refuses writes",
        Duration::from_millis(SESSION_TIMEOUT_MS + 5000),
        &cluster,
        || (produce_at(&cluster.addr(isolated), "cut", led as i32) == Some(6)).then_some(()),
    );
    let now_led = metadata(&cluster.addr(majority)).unwrap().topics["cut"][led].leader;
    assert_eq!(produce_when_led(&cluster, now_led, "cut", led as i32), Some(0), "its new leader takes writes");

    // Healed: the node rejoins and every node holds the same image.
    drop(cut);
    let seen = converged(&cluster, &[1, 2, 3], Duration::from_secs(30));
    assert!(seen.topics.contains_key("during-cut"));
    eventually("the rejoined broker takes part again", Duration::from_secs(15), &cluster, || {
        let (l, _) = quorum_leader(&cluster.addr(isolated))?;
        others.contains(&l).then_some(())
    });
}

#[test]
fn a_node_with_other_voters_or_another_clusters_data_refuses_to_run() {
    let mut cluster = Cluster::start("cluster-refuse", 14, 3, &[]);
    converged(&cluster, &[1, 2, 3], Duration::from_secs(30));
    // Restarting node 3 with a different voters list: its own data says otherwise.
    cluster.node(3).stop();
    let data_dir = cluster.node(3).data_dir.clone();
    let mut args = cluster.node(3).args.clone();
    let voters = args.iter().position(|a| a == "--voters").unwrap() + 1;
    let original = args[voters].clone();
    args[voters] = format!("{original},4@127.0.14.4:{}", free_port("127.0.14.4"));
    let output = common::run(
        std::process::Command::new(env!("CARGO_BIN_EXE_moldau"))
            .arg("serve")
            .args(["--listen", "127.0.14.3:0", "--data-dir"])
            .arg(&data_dir)
            .args(&args),
        Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.contains("belongs to a quorum of nodes 1,2,3"), "{stderr}");

    // A fresh node told other voters than the cluster's is refused by the cluster, and says so.
    let fresh = TempDir::new("cluster-refuse-fresh");
    let output = common::run(
        std::process::Command::new(env!("CARGO_BIN_EXE_moldau"))
            .arg("serve")
            .args(["--listen", "127.0.14.3:0", "--data-dir"])
            .arg(&*fresh)
            .args(&args),
        Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("refusing to run") && stderr.contains("voters"), "{stderr}");

    // Node 3's data joined to another cluster on the same addresses: refused for its cluster id.
    let first_id = metadata(&cluster.addr(1)).unwrap().cluster_id;
    cluster.node(1).stop();
    cluster.node(2).stop();
    let other_dirs = [TempDir::new("cluster-refuse-b1"), TempDir::new("cluster-refuse-b2")];
    let mut others: Vec<Broker> = (1..=2)
        .map(|i| {
            let mut node_args = cluster.node(i).args.clone();
            node_args[voters] = original.clone();
            Broker::start_at(&other_dirs[i as usize - 1], &format!("127.0.14.{i}:0"), node_args)
        })
        .collect();
    let second = eventually("the second cluster forms", Duration::from_secs(30), &cluster, || {
        let seen = metadata(&others[0].addr)?;
        (seen.brokers == vec![1, 2] && !seen.cluster_id.is_empty()).then_some(seen.cluster_id)
    });
    assert_ne!(second, first_id);
    let mut node3_args = cluster.node(3).args.clone();
    node3_args[voters] = original;
    let output = common::run(
        std::process::Command::new(env!("CARGO_BIN_EXE_moldau"))
            .arg("serve")
            .args(["--listen", "127.0.14.3:0", "--data-dir"])
            .arg(&data_dir)
            .args(&node3_args),
        Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&first_id) && stderr.contains(&second), "names both clusters: {stderr}");
    for node in &mut others {
        node.stop();
    }
}

/// The records of a partition as stored on a node's disk: its segments in offset order, each
/// without the zeros past its last batch (segments are preallocated).
fn sorted(ids: &[i32]) -> Vec<i32> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids
}

fn stored_log(data_dir: &std::path::Path, topic: &str, partition: i32) -> Vec<u8> {
    let dir = data_dir.join(format!("{topic}-{partition}"));
    let mut segments: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    segments.sort();
    let mut all = Vec::new();
    for segment in segments {
        let mut bytes = std::fs::read(&segment).unwrap();
        while bytes.last() == Some(&0) {
            bytes.pop();
        }
        all.extend(bytes);
    }
    all
}

/// Runs tests/clients/replicated_log.py: `produce` returns how many were acknowledged,
/// `consume` the values read.
fn replicated_log(args: &[&str]) -> String {
    let output =
        common::run_ok(&mut common::python("replicated_log.py", args), "replicated_log.py", Duration::from_secs(120));
    common::stdout(&output)
}

/// DeleteRecords through `addr`: (error code, the new low watermark).
fn delete_records(addr: &str, topic: &str, partition: i32, before: i64) -> Option<(i16, i64)> {
    use kafka_protocol::messages::DeleteRecordsRequest;
    use kafka_protocol::messages::delete_records_request::{DeleteRecordsPartition, DeleteRecordsTopic};
    block_on(async {
        let conn = BrokerConnection::connect(addr, "cluster-test").await.ok()?;
        let request = DeleteRecordsRequest::default().with_timeout_ms(10_000).with_topics(vec![
            DeleteRecordsTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                .with_partitions(vec![
                    DeleteRecordsPartition::default().with_partition_index(partition).with_offset(before),
                ]),
        ]);
        let response = conn.send(request).await.ok()?;
        let p = response.topics.first()?.partitions.first()?;
        Some((p.error_code, p.low_watermark))
    })
}

fn partition_of(cluster: &Cluster, via: i32, topic: &str) -> Option<Part> {
    metadata(&cluster.addr(via))?.topics.get(topic)?.first().cloned()
}

#[test]
fn acknowledged_writes_survive_the_leader_and_every_replica_stores_the_same_log() {
    let mut cluster = Cluster::start("cluster-replication", 15, 3, &["--set", "replica_lag_time_max_ms=2000"]);
    converged(&cluster, &[1, 2, 3], Duration::from_secs(30));
    assert_eq!(create_topic_with(&cluster.addr(1), "rep", 1, 3, &[("min.insync.replicas", "2")]), Some(0));
    let first = converged(&cluster, &[1, 2, 3], Duration::from_secs(10)).topics["rep"][0].clone();
    let all: Vec<String> = (1..=3).map(|id| cluster.addr(id)).collect();
    let bootstrap = all.join(",");

    // A real client, acks=all and idempotent: every record acknowledged.
    assert_eq!(replicated_log(&["produce", &bootstrap, "rep", "0", "3000"]).trim(), "3000");
    let leader = first.leader;
    let stopped = eventually("every replica in sync", Duration::from_secs(10), &cluster, || {
        partition_of(&cluster, leader, "rep").filter(|p| p.isr.len() == 3)
    });
    assert_eq!(stopped.leader, leader);

    // A follower that stops fetching leaves the ISR after replica_lag_time_max_ms, so acks=all
    // writes go on with the two left (min.insync.replicas=2); it catches up and rejoins.
    let follower = *first.replicas.iter().find(|b| **b != leader).unwrap();
    let pid = cluster.node(follower).pid() as i32;
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let shrunk = eventually("the stopped follower leaves the ISR", Duration::from_secs(15), &cluster, || {
        partition_of(&cluster, leader, "rep").filter(|p| !p.isr.contains(&follower))
    });
    assert_eq!(shrunk.isr.len(), 2, "{shrunk:?}");
    let other = *first.replicas.iter().find(|b| **b != leader && **b != follower).unwrap();
    let survivors = format!("{},{}", cluster.addr(leader), cluster.addr(other));
    assert_eq!(replicated_log(&["produce", &survivors, "rep", "3000", "1000"]).trim(), "1000");
    // Meanwhile the leader deletes what the stopped follower still lacks: back, it starts its
    // log over at the leader's log start (the in-sync follower moves its start along).
    assert_eq!(delete_records(&cluster.addr(leader), "rep", 0, 3500), Some((0, 3500)));
    unsafe { libc::kill(pid, libc::SIGCONT) };
    eventually("the follower catches up and rejoins the ISR", Duration::from_secs(20), &cluster, || {
        partition_of(&cluster, leader, "rep").filter(|p| p.isr.len() == 3)
    });

    // The leader dies: an in-sync replica takes over with everything acknowledged, and takes
    // writes at once.
    cluster.node(leader).kill();
    let moved = eventually("a new leader", Duration::from_millis(SESSION_TIMEOUT_MS + 8000), &cluster, || {
        partition_of(&cluster, other, "rep").filter(|p| p.leader >= 0 && p.leader != leader)
    });
    assert!(moved.epoch > first.epoch);
    let survivors = format!("{},{}", cluster.addr(follower), cluster.addr(other));
    assert_eq!(replicated_log(&["produce", &survivors, "rep", "4000", "1000"]).trim(), "1000");
    let read = replicated_log(&["consume", &cluster.addr(moved.leader), "rep", "0"]);
    let values: Vec<&str> = read.lines().collect();
    let expected: Vec<String> = (3500..5000).map(|i| format!("m-{i}")).collect();
    assert_eq!(values.len(), expected.len(), "every acknowledged record, once");
    assert!(values.iter().zip(&expected).all(|(a, b)| a == b), "in the order produced");

    // The old leader comes back: it truncates what it may hold beyond the new leader's epoch,
    // catches up, rejoins the ISR and, preferred, leads again.
    cluster.node(leader).restart();
    eventually("the preferred replica leads again with all three in sync", Duration::from_secs(40), &cluster, || {
        partition_of(&cluster, other, "rep").filter(|p| p.leader == first.replicas[0] && p.isr.len() == 3)
    });
    assert_eq!(replicated_log(&["produce", &cluster.bootstrap(), "rep", "5000", "200"]).trim(), "200");
    // Every replica stores the same batches: the one that started over holds a suffix of the
    // others' bytes, ending where theirs do.
    eventually("all three store the same bytes", Duration::from_secs(20), &cluster, || {
        let mut logs: Vec<Vec<u8>> = cluster.nodes.iter().map(|n| stored_log(&n.data_dir, "rep", 0)).collect();
        logs.sort_by_key(|l| std::cmp::Reverse(l.len()));
        (logs[2].len() > 1700 * 10 && logs.iter().all(|l| logs[0].ends_with(l))).then_some(())
    });
    let read = replicated_log(&["consume", &cluster.bootstrap(), "rep", "0"]);
    let expected: Vec<String> = (3500..5200).map(|i| format!("m-{i}")).collect();
    assert_eq!(read.lines().collect::<Vec<_>>(), expected);
}

/// FindCoordinator (v3, one key) through `addr`: the coordinator of `group`, when one is named.
fn coordinator_of(addr: &str, group: &str) -> Option<i32> {
    use kafka_protocol::messages::FindCoordinatorRequest;
    block_on(async {
        let conn = BrokerConnection::connect(addr, "cluster-test").await.ok()?;
        let request = FindCoordinatorRequest::default().with_key(StrBytes::from_string(group.to_owned()));
        let (response, _) = conn.send_capped(request, 3).await.ok()?;
        (response.error_code == 0 && response.node_id.0 >= 0).then_some(response.node_id.0)
    })
}

fn group_offsets(args: &[&str]) -> String {
    let output =
        common::run_ok(&mut common::python("group_offsets.py", args), "group_offsets.py", Duration::from_secs(120));
    common::stdout(&output).trim().to_owned()
}

#[test]
fn committed_offsets_survive_the_group_coordinator() {
    let mut cluster = Cluster::start("cluster-groups", 16, 3, &[]);
    converged(&cluster, &[1, 2, 3], Duration::from_secs(30));
    assert_eq!(create_topic(&cluster.addr(1), "work", 1, 3), Some(0));
    let bootstrap = (1..=3).map(|id| cluster.addr(id)).collect::<Vec<_>>().join(",");
    assert_eq!(replicated_log(&["produce", &bootstrap, "work", "0", "100"]).trim(), "100");
    // A real client commits through the group's coordinator; __consumer_offsets has three
    // replicas, so the commit is on all of them when acknowledged.
    assert_eq!(group_offsets(&["commit", &bootstrap, "work", "billing", "60"]), "60");
    let coordinator =
        eventually("a coordinator", Duration::from_secs(10), &cluster, || coordinator_of(&cluster.addr(1), "billing"));
    let offsets = converged(&cluster, &[1, 2, 3], Duration::from_secs(10)).topics["__consumer_offsets"].clone();
    assert!(offsets.iter().all(|p| p.replicas.len() == 3), "{offsets:?}");

    cluster.node(coordinator).kill();
    let survivor = if coordinator == 1 { 2 } else { 1 };
    let moved = eventually("another coordinator", Duration::from_millis(SESSION_TIMEOUT_MS + 8000), &cluster, || {
        coordinator_of(&cluster.addr(survivor), "billing").filter(|c| *c != coordinator)
    });
    assert_ne!(moved, coordinator);
    // The new coordinator loaded the group from its replica: the member resumes at 60.
    let survivors = cluster.running().iter().map(|id| cluster.addr(*id)).collect::<Vec<_>>().join(",");
    assert_eq!(group_offsets(&["resume", &survivors, "work", "billing"]), "60");
}

/// A coordinator killed and restarted at once (before its session expires, as `moldau soak`
/// does): the group is served again, from its committed offsets, with rebalancing off (no
/// later leadership change rescues a coordinator that failed to load).
#[test]
fn a_coordinator_restarted_at_once_serves_its_groups_again() {
    let extra = ["--set", "broker_session_timeout_ms=20000", "--set", "auto_leader_rebalance_enable=false"];
    let mut cluster = Cluster::start("cluster-coordinator-restart", 25, 3, &extra);
    converged(&cluster, &[1, 2, 3], Duration::from_secs(30));
    assert_eq!(create_topic(&cluster.addr(1), "work", 1, 3), Some(0));
    assert_eq!(replicated_log(&["produce", &cluster.bootstrap(), "work", "0", "100"]).trim(), "100");
    assert_eq!(group_offsets(&["commit", &cluster.bootstrap(), "work", "quick", "40"]), "40");
    let coordinator =
        eventually("a coordinator", Duration::from_secs(10), &cluster, || coordinator_of(&cluster.addr(1), "quick"));
    cluster.node(coordinator).restart();
    assert_eq!(group_offsets(&["resume", &cluster.bootstrap(), "work", "quick"]), "40");
}

#[test]
fn a_broker_that_is_not_a_voter_joins_leads_and_fails_over() {
    let mut cluster = Cluster::start_with_voters("cluster-broker-only", 17, 4, 3, &[]);
    converged(&cluster, &[1, 2, 3, 4], Duration::from_secs(30));
    // It is no voter: the quorum has three.
    let quorum = block_on(async {
        let conn = BrokerConnection::connect(&cluster.addr(4), "cluster-test").await.unwrap();
        let request = DescribeQuorumRequest::default().with_topics(vec![
            TopicData::default()
                .with_topic_name(TopicName(StrBytes::from_static_str("__cluster_metadata")))
                .with_partitions(vec![PartitionData::default().with_partition_index(0)]),
        ]);
        conn.send(request).await.unwrap()
    });
    let p = &quorum.topics[0].partitions[0];
    let mut voters: Vec<i32> = p.current_voters.iter().map(|v| v.replica_id.0).collect();
    voters.sort_unstable();
    assert_eq!(voters, vec![1, 2, 3], "{quorum:?}");
    // A topic created through it spreads over all four brokers, and it leads a share.
    assert_eq!(create_topic(&cluster.addr(4), "wide", 4, 2), Some(0));
    let seen = converged(&cluster, &[1, 2, 3, 4], Duration::from_secs(10));
    let wide = seen.topics["wide"].clone();
    let led = wide.iter().position(|p| p.leader == 4).expect("the broker-only node leads a partition");
    assert_eq!(produce_when_led(&cluster, 4, "wide", led as i32), Some(0));
    // It dies: its leaderships move to the other replica.
    cluster.node(4).kill();
    eventually("its leaderships move", Duration::from_millis(SESSION_TIMEOUT_MS + 8000), &cluster, || {
        let parts = metadata(&cluster.addr(1))?.topics.get("wide")?.clone();
        parts.iter().all(|p| p.leader >= 0 && p.leader != 4).then_some(())
    });
    cluster.node(4).restart();
    converged(&cluster, &[1, 2, 3, 4], Duration::from_secs(30));
}

/// Waits until every partition of `topic` has a leader and all `replicas` in sync, as node
/// `via` says; returns the partitions.
fn all_in_sync(cluster: &Cluster, via: i32, topic: &str, replicas: usize, limit: Duration) -> Vec<Part> {
    eventually("every replica back in sync", limit, cluster, || {
        let parts = metadata(&cluster.addr(via))?.topics.get(topic)?.clone();
        parts.iter().all(|p| p.leader >= 0 && p.isr.len() == replicas).then_some(parts)
    })
}

/// Jepsen-style: a real idempotent acks=all producer (min.insync.replicas=2) writes
/// sequence-numbered records while, round after round, the test SIGKILLs a leader, SIGSTOPs a
/// follower and cuts a leader off from the other nodes. At the end every acknowledged record is
/// read back exactly once, in order, and the replicas of every partition store the same bytes.
/// MOLDAU_JEPSEN_ROUNDS sets the rounds (2 by default; more by hand).
#[test]
fn acknowledged_records_survive_rounds_of_kills_stops_and_cuts() {
    use std::io::{BufRead, Write};
    let rounds: usize = std::env::var("MOLDAU_JEPSEN_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(2);
    let mut cluster = Cluster::start("cluster-jepsen", 18, 3, &["--set", "replica_lag_time_max_ms=2000"]);
    converged(&cluster, &[1, 2, 3], Duration::from_secs(30));
    let partitions = 3;
    assert_eq!(create_topic_with(&cluster.addr(1), "jepsen", partitions, 3, &[("min.insync.replicas", "2")]), Some(0));
    let mut parts = all_in_sync(&cluster, 1, "jepsen", 3, Duration::from_secs(10));
    let bootstrap = (1..=3).map(|id| cluster.addr(id)).collect::<Vec<_>>().join(",");
    let max_seconds = (60 * rounds + 60).to_string();
    let mut producer = common::python("jepsen_producer.py", &[&bootstrap, "jepsen", "3", "300", &max_seconds])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 with confluent-kafka");
    let stdout = producer.stdout.take().unwrap();
    let lines =
        std::thread::spawn(move || std::io::BufReader::new(stdout).lines().map_while(Result::ok).collect::<Vec<_>>());
    std::thread::sleep(Duration::from_secs(2));

    let ip = |id: i32| format!("127.0.18.{id}");
    let mut faults = Vec::new();
    for round in 0..rounds {
        // A leader dies; an in-sync replica takes over; it comes back.
        let victim = parts[round % parts.len()].leader;
        cluster.node(victim).kill();
        faults.push(format!("round {round}: SIGKILL leader {victim}"));
        std::thread::sleep(Duration::from_millis(SESSION_TIMEOUT_MS + 1000));
        cluster.node(victim).restart();
        let via = if victim == 1 { 2 } else { 1 };
        parts = all_in_sync(&cluster, via, "jepsen", 3, Duration::from_secs(40));

        // A follower stops answering for longer than the lag time, then resumes.
        let leader = parts[(round + 1) % parts.len()].leader;
        let follower = *parts[(round + 1) % parts.len()].replicas.iter().find(|b| **b != leader).unwrap();
        let pid = cluster.node(follower).pid() as i32;
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        faults.push(format!("round {round}: SIGSTOP follower {follower} for 4 s"));
        std::thread::sleep(Duration::from_secs(4));
        unsafe { libc::kill(pid, libc::SIGCONT) };
        parts = all_in_sync(&cluster, leader, "jepsen", 3, Duration::from_secs(40));

        // A leader is cut off from the other nodes (clients still reach it) past its session.
        let isolated = parts[(round + 2) % parts.len()].leader;
        let others: Vec<String> = [1, 2, 3].into_iter().filter(|id| *id != isolated).map(ip).collect();
        let cut = Cut::isolate(&ip(isolated), &others);
        faults.push(format!("round {round}: cut leader {isolated} off for {} ms", SESSION_TIMEOUT_MS + 3000));
        std::thread::sleep(Duration::from_millis(SESSION_TIMEOUT_MS + 3000));
        drop(cut);
        let via = if isolated == 1 { 2 } else { 1 };
        parts = all_in_sync(&cluster, via, "jepsen", 3, Duration::from_secs(40));
    }
    producer.stdin.take().unwrap().write_all(b"stop\n").unwrap();
    assert!(producer.wait().unwrap().success(), "the producer failed");
    let lines = lines.join().unwrap();
    let done = lines.iter().find(|l| l.starts_with("DONE")).expect("the producer's summary").clone();

    // Every acknowledged record, once, at its acknowledged offset, in order.
    // librdkafka acknowledges some records without an offset ("None"): ones it sent again after
    // a timeout or a cut, then found persisted when a later batch of the producer succeeded
    // (its implicit ack). Those must be stored once too, wherever.
    let mut acked: Vec<BTreeMap<i64, String>> = vec![BTreeMap::new(); partitions as usize];
    let mut acked_somewhere: Vec<Vec<String>> = vec![Vec::new(); partitions as usize];
    for line in lines.iter().filter(|l| l.starts_with("ACK ")) {
        let fields: Vec<&str> = line.split(' ').collect();
        let p: usize = fields[1].parse().unwrap();
        match fields[2] {
            "None" => acked_somewhere[p].push(fields[3].to_owned()),
            offset => assert!(
                acked[p].insert(offset.parse().unwrap(), fields[3].to_owned()).is_none(),
                "two acknowledgements at one offset: {line}"
            ),
        }
    }
    let total: usize =
        acked.iter().map(|a| a.len()).sum::<usize>() + acked_somewhere.iter().map(|a| a.len()).sum::<usize>();
    assert!(total > 1000, "too little was acknowledged to judge: {done}");
    all_in_sync(&cluster, 1, "jepsen", 3, Duration::from_secs(30));
    for (p, acked) in acked.iter().enumerate() {
        // Up to the last acknowledged offset (a record acknowledged without one lies before a
        // later batch's, which has one).
        let until = format!("until={}", acked.keys().next_back().map_or(0, |o| o + 1));
        let read = replicated_log(&["consume", &cluster.bootstrap(), "jepsen", &p.to_string(), &until]);
        let values: Vec<&str> = read.lines().collect();
        let mut seen = std::collections::HashSet::new();
        for v in &values {
            assert!(seen.insert(*v), "partition {p}: {v} stored twice");
        }
        for (offset, value) in acked {
            assert_eq!(
                values.get(*offset as usize).copied(),
                Some(value.as_str()),
                "partition {p}: acknowledged {value} at {offset}"
            );
        }
        for value in &acked_somewhere[p] {
            assert!(seen.contains(value.as_str()), "partition {p}: acknowledged {value} (no offset) is not stored");
        }
        // Sequence numbers within a partition only go up.
        let seqs: Vec<u64> = values.iter().map(|v| v.split('-').nth(1).unwrap().parse().unwrap()).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "partition {p}: out of order");
    }
    eventually("the replicas store the same bytes", Duration::from_secs(20), &cluster, || {
        (0..partitions)
            .all(|p| {
                let logs: Vec<Vec<u8>> = cluster.nodes.iter().map(|n| stored_log(&n.data_dir, "jepsen", p)).collect();
                logs.iter().all(|l| *l == logs[0])
            })
            .then_some(())
    });
    println!(
        "jepsen: {} faults injected, {total} acknowledged records all read back once and in order ({done})",
        faults.len()
    );
    for fault in &faults {
        println!("  {fault}");
    }
}

/// Runs a client script in the background (its stdout returned when it ends).
fn spawn_client(mut command: std::process::Command) -> std::process::Child {
    command.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().expect("client")
}

fn client_output(child: std::process::Child, what: &str) -> String {
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

#[test]
fn kafkajs_and_kafka_python_produce_through_leader_kills_and_a_group_reads_it_all() {
    let mut cluster = Cluster::start("cluster-clients", 19, 3, &[]);
    converged(&cluster, &[1, 2, 3], Duration::from_secs(30));
    assert_eq!(create_topic_with(&cluster.addr(1), "mixed", 1, 3, &[("min.insync.replicas", "2")]), Some(0));
    // kafkajs, one record at a time, while the partition's leader is killed.
    let leader = all_in_sync(&cluster, 1, "mixed", 3, Duration::from_secs(10))[0].leader;
    let producing =
        spawn_client(common::node("kafkajs_cluster.js", &["produce", &cluster.bootstrap(), "mixed", "0", "400"]));
    std::thread::sleep(Duration::from_millis(1500));
    cluster.node(leader).kill();
    assert_eq!(client_output(producing, "kafkajs producer"), "400", "every send acknowledged");
    cluster.node(leader).restart();
    let leader = all_in_sync(&cluster, if leader == 1 { 2 } else { 1 }, "mixed", 3, Duration::from_secs(40))[0].leader;
    // kafka-python likewise.
    let producing =
        spawn_client(common::python("kafka_python_cluster.py", &[&cluster.bootstrap(), "mixed", "400", "400"]));
    std::thread::sleep(Duration::from_millis(1500));
    cluster.node(leader).kill();
    assert_eq!(client_output(producing, "kafka-python producer"), "400", "every send acknowledged");
    // A kafkajs group reads all 800 (each once: idempotent retries are not stored twice).
    let read = client_output(
        spawn_client(common::node("kafkajs_cluster.js", &["consume", &cluster.bootstrap(), "mixed", "800"])),
        "kafkajs consumer",
    );
    assert_eq!(read, "800");
    let end = block_on(async {
        let client = moldau::client::KafkaClient::connect(&cluster.bootstrap(), "cluster-test").await.unwrap();
        client.list_offset("mixed", 0, -1).await.unwrap().0
    });
    assert_eq!(end, 800, "no retried send stored twice");
}

/// ElectLeaders for partition 0 of `topic` through `addr`: the partition's error code.
fn elect(addr: &str, topic: &str, unclean: bool) -> i16 {
    block_on(async {
        let conn = BrokerConnection::connect(addr, "cluster-test").await.unwrap();
        let request = ElectLeadersRequest::default()
            .with_election_type(if unclean { 1 } else { 0 })
            .with_topic_partitions(Some(vec![
                TopicPartitions::default()
                    .with_topic(TopicName(StrBytes::from_string(topic.to_owned())))
                    .with_partitions(vec![0]),
            ]));
        let (response, _) = conn.send_capped(request, 2).await.unwrap();
        response.replica_election_results[0].partition_result[0].error_code
    })
}

#[test]
fn admin_changes_work_through_any_broker_and_an_unclean_election_revives_an_offline_partition() {
    let mut cluster = Cluster::start("cluster-admin", 20, 3, &["--set", "replica_lag_time_max_ms=1500"]);
    converged(&cluster, &[1, 2, 3], Duration::from_secs(30));
    let (controller, _) =
        eventually("a quorum leader", Duration::from_secs(10), &cluster, || quorum_leader(&cluster.addr(1)));
    let via = if controller == 1 { 2 } else { 1 };
    // Create, grow, configure and delete through a broker that is not the active controller.
    block_on(async {
        use moldau::client::KafkaClient;
        use moldau::client::admin::ConfigOp;
        let client = KafkaClient::connect(&cluster.addr(via), "cluster-test").await.unwrap();
        client.create_topic("admin", 3, 2, &BTreeMap::new()).await.unwrap();
        client.create_partitions("admin", 5).await.unwrap();
        client.alter_topic_configs("admin", &[ConfigOp::Set("retention.ms".into(), "123456".into())]).await.unwrap();
    });
    let seen = converged(&cluster, &[1, 2, 3], Duration::from_secs(10));
    assert_eq!(seen.topics["admin"].len(), 5);
    let retention = block_on(async {
        let client = moldau::client::KafkaClient::connect(&cluster.addr(controller), "cluster-test").await.unwrap();
        let configs = client.describe_topic_configs("admin").await.unwrap();
        configs.into_iter().find(|c| c.name == "retention.ms").and_then(|c| c.value)
    });
    assert_eq!(retention.as_deref(), Some("123456"), "the change is seen on another node");
    block_on(async {
        let client = moldau::client::KafkaClient::connect(&cluster.addr(via), "cluster-test").await.unwrap();
        client.delete_topic("admin").await.unwrap();
    });
    let seen = converged(&cluster, &[1, 2, 3], Duration::from_secs(10));
    assert!(!seen.topics.contains_key("admin"));

    // Unclean election: the follower falls out of the ISR (stopped), the leader dies, so the
    // partition is offline; the follower back, a clean election finds no in-sync replica and an
    // unclean one makes the follower leader.
    assert_eq!(create_topic(&cluster.addr(via), "fragile", 1, 2), Some(0));
    let p = all_in_sync(&cluster, via, "fragile", 2, Duration::from_secs(10))[0].clone();
    let follower = *p.replicas.iter().find(|b| **b != p.leader).unwrap();
    let pid = cluster.node(follower).pid() as i32;
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let watcher = [1, 2, 3].into_iter().find(|b| *b != follower && *b != p.leader).unwrap();
    eventually("the stopped follower leaves the ISR", Duration::from_secs(15), &cluster, || {
        partition_of(&cluster, watcher, "fragile").filter(|q| q.isr == vec![p.leader])
    });
    cluster.node(p.leader).kill();
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let offline = eventually("the partition goes offline", Duration::from_secs(20), &cluster, || {
        let seen = metadata(&cluster.addr(watcher))?;
        let q = seen.topics.get("fragile")?[0].clone();
        (q.leader == -1 && seen.brokers.contains(&follower) && !seen.brokers.contains(&p.leader)).then_some(q)
    });
    assert_eq!(offline.isr, vec![p.leader], "the ISR keeps its last member: {offline:?}");
    assert_eq!(elect(&cluster.addr(watcher), "fragile", false), 80, "PREFERRED_LEADER_NOT_AVAILABLE");
    assert_eq!(elect(&cluster.addr(watcher), "fragile", true), 0, "the unclean election succeeds");
    let revived = eventually("the follower leads", Duration::from_secs(10), &cluster, || {
        partition_of(&cluster, watcher, "fragile").filter(|q| q.leader == follower)
    });
    assert!(revived.epoch > p.epoch);
    assert_eq!(produce_when_led(&cluster, follower, "fragile", 0), Some(0));
}

/// Fetch v11 of partition 0 of `topic` from offset 0 at `addr`, as a consumer in `rack`:
/// (error code, preferred read replica, record batches).
fn fetch_as_consumer(addr: &str, topic: &str, rack: &str) -> (i16, i32, usize) {
    use kafka_protocol::messages::FetchRequest;
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    block_on(async {
        let conn = BrokerConnection::connect(addr, "cluster-test").await.unwrap();
        let request = FetchRequest::default()
            .with_replica_id(kafka_protocol::messages::BrokerId(-1))
            .with_max_wait_ms(100)
            .with_max_bytes(1 << 20)
            .with_session_epoch(-1)
            .with_rack_id(StrBytes::from_string(rack.to_owned()))
            .with_topics(vec![
                FetchTopic::default().with_topic(TopicName(StrBytes::from_string(topic.to_owned()))).with_partitions(
                    vec![
                        FetchPartition::default()
                            .with_partition(0)
                            .with_fetch_offset(0)
                            .with_partition_max_bytes(1 << 20),
                    ],
                ),
            ]);
        let response = conn.send_version(request, 11).await.unwrap();
        let p = &response.responses[0].partitions[0];
        let batches = p
            .records
            .as_ref()
            .filter(|r| !r.is_empty())
            .map_or(0, |r| moldau::model::batch::validate_all(r, usize::MAX).unwrap().len());
        (p.error_code, p.preferred_read_replica.0, batches)
    })
}

#[test]
fn a_consumer_reads_from_an_in_sync_replica_in_its_own_rack() {
    let cluster = Cluster::start_each("cluster-racks", 21, 3, 3, &["--set", "replica_selector=\"rack-aware\""], &|i| {
        vec!["--set".into(), format!("rack=\"rack-{i}\"")]
    });
    converged(&cluster, &[1, 2, 3], Duration::from_secs(30));
    assert_eq!(create_topic(&cluster.addr(1), "near", 1, 3), Some(0));
    let p = all_in_sync(&cluster, 1, "near", 3, Duration::from_secs(10))[0].clone();
    assert_eq!(replicated_log(&["produce", &cluster.bootstrap(), "near", "0", "300"]).trim(), "300");
    let follower = *p.replicas.iter().find(|b| **b != p.leader).unwrap();
    let rack = format!("rack-{follower}");
    // The leader sends a consumer of the follower's rack there, and serves one of its own rack
    // (or of no rack) itself.
    let (code, preferred, batches) = fetch_as_consumer(&cluster.addr(p.leader), "near", &rack);
    assert_eq!((code, preferred, batches), (0, follower, 0));
    let (code, preferred, batches) = fetch_as_consumer(&cluster.addr(p.leader), "near", &format!("rack-{}", p.leader));
    assert_eq!((code, preferred), (0, -1));
    assert!(batches > 0);
    // The follower serves it, up to the high watermark it has learned.
    let served = eventually("the follower serves what is committed", Duration::from_secs(10), &cluster, || {
        let (code, _, batches) = fetch_as_consumer(&cluster.addr(follower), "near", &rack);
        (code == 0 && batches > 0).then_some(batches)
    });
    assert!(served > 0);
    // A real client with client.rack reads everything (librdkafka follows the preferred replica).
    let read = common::run_ok(
        &mut common::python("replicated_log.py", &["consume", &cluster.bootstrap(), "near", "0", &rack]),
        "replicated_log.py consume with client.rack",
        Duration::from_secs(120),
    );
    let expected: Vec<String> = (0..300).map(|i| format!("m-{i}")).collect();
    assert_eq!(common::stdout(&read).lines().collect::<Vec<_>>(), expected);
}

/// AlterPartitionReassignments of partition 0 of `topic` through `addr` to `target` (`None`
/// cancels): the partition's error code.
fn reassign(addr: &str, topic: &str, target: Option<Vec<i32>>) -> i16 {
    use kafka_protocol::messages::AlterPartitionReassignmentsRequest;
    use kafka_protocol::messages::alter_partition_reassignments_request::{ReassignablePartition, ReassignableTopic};
    block_on(async {
        let conn = BrokerConnection::connect(addr, "cluster-test").await.unwrap();
        let replicas = target.map(|t| t.into_iter().map(kafka_protocol::messages::BrokerId).collect());
        let request = AlterPartitionReassignmentsRequest::default().with_timeout_ms(30_000).with_topics(vec![
            ReassignableTopic::default().with_name(TopicName(StrBytes::from_string(topic.to_owned()))).with_partitions(
                vec![ReassignablePartition::default().with_partition_index(0).with_replicas(replicas)],
            ),
        ]);
        let response = conn.send(request).await.unwrap();
        assert_eq!(response.error_code, 0, "{response:?}");
        response.responses[0].partitions[0].error_code
    })
}

/// ListPartitionReassignments (all) through `addr`: (topic, partition, adding) in progress.
fn reassignments(addr: &str) -> Vec<(String, i32, Vec<i32>)> {
    use kafka_protocol::messages::ListPartitionReassignmentsRequest;
    block_on(async {
        let conn = BrokerConnection::connect(addr, "cluster-test").await.unwrap();
        let response = conn.send(ListPartitionReassignmentsRequest::default().with_topics(None)).await.unwrap();
        response
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(|p| {
                    (t.name.as_str().to_owned(), p.partition_index, p.adding_replicas.iter().map(|b| b.0).collect())
                })
            })
            .collect()
    })
}

#[test]
fn a_partition_moves_to_another_broker_with_its_data() {
    let cluster = Cluster::start_with_voters("cluster-reassign", 22, 4, 3, &[]);
    converged(&cluster, &[1, 2, 3, 4], Duration::from_secs(30));
    assert_eq!(create_topic(&cluster.addr(1), "moving", 1, 3), Some(0));
    let before = all_in_sync(&cluster, 1, "moving", 3, Duration::from_secs(10))[0].clone();
    assert_eq!(replicated_log(&["produce", &cluster.bootstrap(), "moving", "0", "2000"]).trim(), "2000");
    // Bad targets are refused with Kafka's codes, and nothing changes.
    assert_eq!(reassign(&cluster.addr(2), "moving", Some(vec![1, 1, 2])), 39, "INVALID_REPLICA_ASSIGNMENT");
    assert_eq!(reassign(&cluster.addr(2), "moving", Some(vec![1, 9])), 39, "an unknown broker");
    assert_eq!(reassign(&cluster.addr(2), "moving", None), 85, "NO_REASSIGNMENT_IN_PROGRESS");

    // The preferred replica (the leader) is replaced by the broker that holds none.
    let newcomer = [1, 2, 3, 4].into_iter().find(|b| !before.replicas.contains(b)).unwrap();
    let leaving = before.replicas[0];
    let mut target = vec![newcomer];
    target.extend(&before.replicas[1..]);
    assert_eq!(reassign(&cluster.addr(2), "moving", Some(target.clone())), 0);
    let after = eventually("the reassignment completes", Duration::from_secs(30), &cluster, || {
        let p = partition_of(&cluster, 1, "moving")?;
        (p.replicas == target && p.isr.len() == 3 && reassignments(&cluster.addr(1)).is_empty()).then_some(p)
    });
    assert!(target.contains(&after.leader), "{after:?}");
    assert!(after.epoch > before.epoch || before.leader != leaving, "{before:?} -> {after:?}");
    // The newcomer holds the same bytes as the replicas that stayed; the one that left deletes
    // its copy.
    eventually(
        "the new replica stores the same log and the old one is gone",
        Duration::from_secs(20),
        &cluster,
        || {
            let stayed = stored_log(&cluster.nodes[target[1] as usize - 1].data_dir, "moving", 0);
            let fresh = stored_log(&cluster.nodes[newcomer as usize - 1].data_dir, "moving", 0);
            let gone = !cluster.nodes[leaving as usize - 1].data_dir.join("moving-0").exists();
            (fresh == stayed && gone).then_some(())
        },
    );
    // DescribeLogDirs (kafka-python's admin client) reports the replicas where they now are,
    // each the same size.
    let dirs = common::stdout(&common::run_ok(
        &mut common::python("log_dirs.py", &[&cluster.bootstrap(), "moving"]),
        "log_dirs.py",
        Duration::from_secs(60),
    ));
    let sizes: BTreeMap<i32, (i64, i64)> = dirs
        .lines()
        .filter_map(|l| match l.split_whitespace().collect::<Vec<_>>()[..] {
            [broker, "0", size, lag] => Some((broker.parse().ok()?, (size.parse().ok()?, lag.parse().ok()?))),
            _ => None,
        })
        .collect();
    assert_eq!(sizes.keys().copied().collect::<Vec<_>>(), sorted(&target), "{dirs}");
    let stored = sizes[&newcomer].0;
    assert!(stored as usize > 2000 * "m-0000".len(), "{dirs}");
    assert!(sizes.values().all(|(size, lag)| *size == stored && *lag == 0), "{dirs}");
    let space: Vec<(u64, u64)> = dirs
        .lines()
        .filter_map(|l| match l.split_whitespace().collect::<Vec<_>>()[..] {
            [_, "dir", total, usable] => Some((total.parse().ok()?, usable.parse().ok()?)),
            _ => None,
        })
        .collect();
    assert_eq!(space.len(), 4, "every broker answers: {dirs}");
    assert!(space.iter().all(|(total, usable)| *total > 0 && usable <= total), "{dirs}");
    let read = replicated_log(&["consume", &cluster.bootstrap(), "moving", "0", "until=2000"]);
    let expected: Vec<String> = (0..2000).map(|i| format!("m-{i}")).collect();
    assert_eq!(read.lines().collect::<Vec<_>>(), expected);
    converged(&cluster, &[1, 2, 3, 4], Duration::from_secs(10));
}

/// `batches` acks=all batches of 64 records of 1 KiB to partition 0 of `topic`: how many were
/// acknowledged.
fn produce_batches(bootstrap: &str, topic: &str, batches: usize) -> usize {
    block_on(async {
        let client = moldau::client::KafkaClient::connect(bootstrap, "cluster-test").await.unwrap();
        let mut acked = 0;
        for _ in 0..batches {
            let mut builder = moldau::model::records::BatchBuilder::new(70 << 10, 0);
            for _ in 0..64 {
                builder.push(None, &[b'x'; 1024], 0);
            }
            if client.produce(topic, 0, builder.finish(), -1, 15_000).await.is_ok() {
                acked += 1;
            }
        }
        acked
    })
}

/// Moves node `id`'s copy of a partition (its directory `dir_name`) to an 8 MiB disk of its own:
/// the node is stopped, the directory emptied and mounted over, the node started (it catches up
/// from the leader). `None` where loop mounts are not permitted (the test then skips).
fn on_small_disk(cluster: &mut Cluster, id: i32, dir_name: &str) -> Option<SmallDisk> {
    cluster.node(id).stop();
    let data_dir = cluster.nodes[id as usize - 1].data_dir.clone();
    let dir = data_dir.join(dir_name);
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::create_dir(&dir).unwrap();
    let disk = SmallDisk::mount(data_dir.with_extension("disk"), &dir, 8);
    cluster.node(id).start_again();
    disk
}

#[test]
fn a_leader_whose_disk_fills_hands_the_lead_to_an_in_sync_replica_and_loses_nothing() {
    let mut cluster = Cluster::start("cluster-leader-disk", 26, 3, &["--set", "replica_lag_time_max_ms=1500"]);
    converged(&cluster, &[1, 2, 3], Duration::from_secs(30));
    let doomed_configs = [("min.insync.replicas", "2"), ("segment.bytes", "1048576")];
    assert_eq!(create_topic_with(&cluster.addr(1), "doomed", 1, 3, &doomed_configs), Some(0));
    let p = all_in_sync(&cluster, 1, "doomed", 3, Duration::from_secs(10))[0].clone();
    // The preferred leader's copy moves to an 8 MiB disk of its own (stopped: another replica
    // leads meanwhile; emptied, mounted, started: it catches up and leads again).
    let leader = p.replicas[0];
    let other = p.replicas[1];
    let Some(disk) = on_small_disk(&mut cluster, leader, "doomed-0") else { return };
    eventually("the preferred replica leads again with all three in sync", Duration::from_secs(40), &cluster, || {
        partition_of(&cluster, other, "doomed").filter(|q| q.leader == leader && q.isr.len() == 3)
    });

    // 12 MiB through a real idempotent acks=all producer: the leader's disk fills, its log goes
    // offline, it hands the lead to an in-sync replica, and the producer carries on there.
    let count = 12_000;
    let acked = replicated_log(&["produce", &cluster.bootstrap(), "doomed", "0", &count.to_string(), "1024"]);
    assert_eq!(acked.trim(), count.to_string(), "every record acknowledged");
    let moved =
        eventually("another replica leads, without the full one in its ISR", Duration::from_secs(20), &cluster, || {
            partition_of(&cluster, other, "doomed")
                .filter(|q| q.leader >= 0 && q.leader != leader && !q.isr.contains(&leader))
        });
    let log = cluster.nodes[leader as usize - 1].log();
    assert!(log.contains("asking the controller to move the lead of partitions whose log is offline"), "{log}");
    assert!(metadata(&cluster.addr(other)).unwrap().brokers.contains(&leader), "the broker stays registered");
    // Every acknowledged record, once, in order, on the new leader.
    let read = replicated_log(&["consume", &cluster.addr(moved.leader), "doomed", "0", &format!("until={count}")]);
    let expected: Vec<String> = (0..count).map(|i| format!("m-{i}")).collect();
    let values: Vec<&str> = read.lines().collect();
    assert_eq!(values.len(), expected.len(), "every acknowledged record, once");
    assert!(values.iter().zip(&expected).all(|(a, b)| a == b), "in the order produced");
    cluster.node(leader).kill();
    drop(disk);
}

#[test]
fn a_follower_whose_disk_fills_leaves_the_isr_and_nothing_else_stops() {
    let mut cluster = Cluster::start("cluster-disk", 24, 3, &["--set", "replica_lag_time_max_ms=1500"]);
    converged(&cluster, &[1, 2, 3], Duration::from_secs(30));
    let doomed_configs = [("min.insync.replicas", "2"), ("segment.bytes", "1048576")];
    assert_eq!(create_topic_with(&cluster.addr(1), "doomed", 1, 3, &doomed_configs), Some(0));
    assert_eq!(create_topic(&cluster.addr(1), "healthy", 1, 3), Some(0));
    let p = all_in_sync(&cluster, 1, "doomed", 3, Duration::from_secs(10))[0].clone();
    all_in_sync(&cluster, 1, "healthy", 3, Duration::from_secs(10));
    assert_eq!(produce_batches(&cluster.bootstrap(), "doomed", 2), 2);
    // One follower's copy of "doomed" moves to an 8 MiB disk of its own (stopped, emptied,
    // mounted, started: it catches up from the leader).
    let follower = *p.replicas.iter().find(|b| **b != p.leader).unwrap();
    let other = *p.replicas.iter().find(|b| **b != p.leader && **b != follower).unwrap();
    let Some(disk) = on_small_disk(&mut cluster, follower, "doomed-0") else { return };
    all_in_sync(&cluster, p.leader, "doomed", 3, Duration::from_secs(30));

    // 12 MiB more: the follower's disk fills, it leaves the ISR, and every write is
    // acknowledged by the other two (min.insync.replicas=2).
    assert_eq!(produce_batches(&cluster.bootstrap(), "doomed", 192), 192, "every write is acknowledged");
    let shrunk = eventually("the follower leaves the ISR", Duration::from_secs(20), &cluster, || {
        partition_of(&cluster, p.leader, "doomed").filter(|q| !q.isr.contains(&follower))
    });
    assert_eq!(sorted(&shrunk.isr), sorted(&[p.leader, other]), "{shrunk:?}");
    assert!(cluster.nodes[follower as usize - 1].log().contains("offline after a disk error"));
    // Only that replica: the broker stays registered, in sync elsewhere, and takes writes.
    let seen = metadata(&cluster.addr(p.leader)).unwrap();
    assert!(seen.brokers.contains(&follower), "{:?}", seen.brokers);
    assert_eq!(seen.topics["healthy"][0].isr.len(), 3, "{:?}", seen.topics["healthy"]);
    assert_eq!(produce_batches(&cluster.bootstrap(), "healthy", 5), 5);
    assert_eq!(partition_of(&cluster, p.leader, "healthy").unwrap().isr.len(), 3);
    // Everything acknowledged is there, and the replicas in sync store the same bytes.
    let end = block_on(async {
        let client = moldau::client::KafkaClient::connect(&cluster.bootstrap(), "cluster-test").await.unwrap();
        client.list_offset("doomed", 0, -1).await.unwrap().0
    });
    assert_eq!(end, 194 * 64);
    eventually("the in-sync replicas store the same log", Duration::from_secs(10), &cluster, || {
        let leader = stored_log(&cluster.nodes[p.leader as usize - 1].data_dir, "doomed", 0);
        (leader == stored_log(&cluster.nodes[other as usize - 1].data_dir, "doomed", 0)).then_some(())
    });
    // The disk goes before the data directories are removed (its mount point is among them).
    cluster.node(follower).kill();
    drop(disk);
}

/// Brokers replicate over a SASL_SSL listener: logged in with PLAIN as `User:broker`, the only
/// super user, and checking each other's certificates against the test CA. ACLs are on and
/// `User:ANONYMOUS` (what a follower on the PLAINTEXT listener would be) may do nothing, so the
/// acks=all writes of a topic with min.insync.replicas=3 are acknowledged only if both followers'
/// secured fetches work. The controller listener is mutual TLS (CONTROLLER:SSL): the quorum
/// forms over it, a plaintext caller there is refused, and renewed certificates (another CA's)
/// are taken without a restart.
#[test]
fn followers_fetch_over_a_sasl_ssl_inter_broker_listener_and_controllers_talk_mutual_tls() {
    let subnet = 27;
    let ca_dir = TempDir::new("cluster-inter-broker-ca");
    let ips: Vec<String> = (1..=3).map(|i| format!("127.0.{subnet}.{i}")).collect();
    let ca = TestCa::for_addresses(&ca_dir.0, &ips.iter().map(String::as_str).collect::<Vec<_>>());
    let settings = [
        format!("ssl.keystore.location={}", ca.path("broker-keystore.pem")),
        format!("ssl.truststore.location={}", ca.path("ca.pem")),
        "listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule \
         required username=\"broker\" password=\"broker-secret\" user_broker=\"broker-secret\";"
            .to_owned(),
        "inter.broker.listener.name=SASL_SSL".to_owned(),
        "sasl.mechanism.inter.broker.protocol=PLAIN".to_owned(),
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer".to_owned(),
        "super.users=User:broker".to_owned(),
        "listener.security.protocol.map=CONTROLLER:SSL".to_owned(),
    ];
    let extra: Vec<String> = settings.iter().flat_map(|s| ["--set".to_owned(), s.clone()]).collect();
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let cluster = Cluster::start_each("cluster-inter-broker", subnet, 3, 3, &extra, &|i| {
        vec!["--set".into(), format!("listeners=PLAINTEXT://127.0.{subnet}.{i}:0,SASL_SSL://127.0.{subnet}.{i}:0")]
    });
    // Every broker registered first: a topic with 3 replicas needs all three.
    converged(&cluster, &[1, 2, 3], Duration::from_secs(30));
    let client = serde_json::json!({
        "bootstrap.servers": cluster.nodes[0].listener("SASL_SSL"),
        "security.protocol": "SASL_SSL",
        "ssl.ca.location": ca.path("ca.pem"),
        "sasl.mechanism": "PLAIN",
        "sasl.username": "broker",
        "sasl.password": "broker-secret",
    })
    .to_string();
    let script = |args: &[&str]| {
        let out = common::run_ok(&mut common::python("security.py", args), "security.py", Duration::from_secs(180));
        common::stdout(&out)
    };
    let created = script(&["create-topic", &client, "replicated", "2", "3", "min.insync.replicas=3"]);
    assert!(created.contains("created replicated"), "{created}\n{}", cluster.logs());
    let roundtrip = script(&["roundtrip", &client, "replicated", "200"]);
    assert!(roundtrip.contains("roundtrip ok 200"), "{roundtrip}\n{}", cluster.logs());
    let logs = cluster.logs();
    assert!(!logs.contains("cannot connect to the leader's inter-broker listener"), "{logs}");
    assert!(!logs.contains("followers fetch as"), "User:broker is a super user: no warning\n{logs}");
    assert!(!logs.contains("TLS handshake refused"), "the nodes' own handshakes succeed\n{logs}");
    // A caller speaking the control-plane protocol in plaintext gets no answer of it, only a
    // TLS alert (record type 21) or a closed connection.
    let controller = cluster.voters.split(',').next().unwrap().split_once('@').unwrap().1.to_owned();
    let mut stream = std::net::TcpStream::connect(&controller).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let hello = br#"{"node_id":9,"voters":"x","cluster_id":null}"#;
    let mut frame = ((hello.len() + 1) as u32).to_be_bytes().to_vec();
    frame.push(1);
    frame.extend_from_slice(hello);
    std::io::Write::write_all(&mut stream, &frame).unwrap();
    let mut answer = Vec::new();
    let _ = std::io::Read::read_to_end(&mut stream, &mut answer);
    assert!(answer.is_empty() || answer[0] == 21, "{answer:?}");
    let refused = Instant::now() + Duration::from_secs(10);
    while !cluster.logs().contains("TLS handshake refused") {
        assert!(Instant::now() < refused, "the plaintext caller is logged\n{}", cluster.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    // Certificates are renewed without a restart: once the key store and trust store files hold
    // another CA's, the controller listener takes that CA's clients and refuses the old CA's, and
    // the cluster goes on (new connections, the client's included, use the new CA).
    let new_ca_dir = TempDir::new("cluster-inter-broker-new-ca");
    let new_ca = TestCa::for_addresses(&new_ca_dir.0, &ips.iter().map(String::as_str).collect::<Vec<_>>());
    let presenting = |ca: &TestCa| {
        serde_json::json!({
            "ssl.ca.location": ca.path("ca.pem"),
            "ssl.certificate.location": ca.path("broker.pem"),
            "ssl.key.location": ca.path("broker.key"),
        })
        .to_string()
    };
    let before = script(&["mutual-tls", &presenting(&new_ca), &controller]);
    assert!(before.starts_with("refused"), "{before}");
    let old_ca_copy = TempDir::new("cluster-inter-broker-old-ca");
    for file in ["ca.pem", "broker.pem", "broker.key"] {
        std::fs::copy(ca.path(file), old_ca_copy.0.join(file)).unwrap();
    }
    for file in ["ca.pem", "broker-keystore.pem"] {
        std::fs::copy(new_ca.path(file), ca.path(file)).unwrap();
    }
    let renewed = Instant::now() + Duration::from_secs(20);
    loop {
        let now = script(&["mutual-tls", &presenting(&new_ca), &controller]);
        if now.starts_with("accepted") {
            break;
        }
        assert!(Instant::now() < renewed, "the new CA's certificate is taken: {now}\n{}", cluster.logs());
        std::thread::sleep(Duration::from_millis(500));
    }
    let old = TestCa { dir: old_ca_copy.0.clone() };
    let after = script(&["mutual-tls", &presenting(&old), &controller]);
    assert!(after.starts_with("refused"), "the old CA's certificate is no longer taken: {after}");
    let created = script(&["create-topic", &client, "renewed", "1", "3", "min.insync.replicas=3"]);
    assert!(created.contains("created renewed"), "{created}\n{}", cluster.logs());
    let roundtrip = script(&["roundtrip", &client, "renewed", "100"]);
    assert!(roundtrip.contains("roundtrip ok 100"), "{roundtrip}\n{}", cluster.logs());
}
