//! `moldau soak`: bounded, verifying load. Producers write sequence-numbered records under many
//! keys (each key belongs to one producer, so its sequence is strictly increasing); consumer
//! groups read everything; at the end every acknowledged record must have been seen by every
//! group. Optionally the tool starts a broker itself and SIGKILLs and restarts it at random
//! intervals. The run fails loudly when any acknowledged record is lost.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use rand::Rng;
use serde::Serialize;

use super::stats::{LatencySummary, new_histogram, record, summarize, wall_clock_us};
use crate::client::DEFAULT_BOOTSTRAP;
use crate::client::member::{GroupConsumer, needs_rejoin};
use crate::client::{ClientError, KafkaClient};
use crate::model::records::{BatchBuilder, for_each_record};

/// Records per produced batch at most.
const BATCH_RECORDS: usize = 100;
/// Bytes of a record value carrying the soak fields.
const HEADER_BYTES: usize = 24;

/// Arguments of `moldau soak`.
#[derive(clap::Args, Debug, Clone)]
pub struct SoakArgs {
    /// Broker(s) to load (ignored with --spawn-broker).
    #[arg(long, default_value = DEFAULT_BOOTSTRAP)]
    pub bootstrap: String,
    /// Seconds of load.
    #[arg(long, default_value_t = 60)]
    pub duration: u64,
    /// Topic (default: a fresh random name).
    #[arg(long)]
    pub topic: Option<String>,
    /// Partitions.
    #[arg(long, default_value_t = 8)]
    pub partitions: i32,
    /// Producers.
    #[arg(long, default_value_t = 2)]
    pub producers: usize,
    /// Distinct keys.
    #[arg(long, default_value_t = 64)]
    pub keys: u32,
    /// Messages per second in total.
    #[arg(long, default_value_t = 2000.0)]
    pub rate: f64,
    /// Value size in bytes (at least 24).
    #[arg(long, default_value_t = 256)]
    pub message_size: usize,
    /// Consumer groups (each must see every record).
    #[arg(long, default_value_t = 2)]
    pub consumer_groups: usize,
    /// Consumers per group.
    #[arg(long, default_value_t = 2)]
    pub consumers: usize,
    /// Print a progress report this often (seconds).
    #[arg(long, default_value_t = 10)]
    pub report_every: u64,
    /// Start a broker for the run (this binary's `serve`, flush=always) instead of using
    /// --bootstrap.
    #[arg(long)]
    pub spawn_broker: bool,
    /// With --spawn-broker: start this many nodes (a cluster on 127.0.0.1..=N, each a metadata
    /// voter and a broker); the topic is replicated min(N, 3) times with min.insync.replicas=2.
    #[arg(long, default_value_t = 1)]
    pub nodes: usize,
    /// Data directory of the spawned broker (default: a new temporary one); with --nodes N,
    /// node i keeps its data in DIR/node-i.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// With --spawn-broker: SIGKILL and restart it every MIN-MAX seconds (random), e.g. 5-15;
    /// with --nodes N, the node leading a random partition.
    #[arg(long, value_name = "MIN-MAX")]
    pub kill_every: Option<String>,
    /// Write the final report here as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Test hook: consumers pretend not to see this many records (the run must then fail).
    #[arg(long, hide = true, default_value_t = 0)]
    pub inject_loss: u64,
    /// Test hook: producers send this many acknowledged records a second time.
    #[arg(long, hide = true, default_value_t = 0)]
    pub inject_duplicate: u64,
}

/// A record the broker acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Acked {
    /// Partition.
    pub partition: i32,
    /// Offset it got.
    pub offset: i64,
    /// Key number.
    pub key: u32,
    /// Sequence number within the key.
    pub seq: u64,
}

/// A record a consumer saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key number.
    pub key: u32,
    /// Sequence number.
    pub seq: u64,
}

/// What one group saw, judged against what was acknowledged.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct GroupVerdict {
    /// Records consumed (duplicates included).
    pub consumed: u64,
    /// Acknowledged records never seen.
    pub lost: u64,
    /// Records delivered again at the offset already seen (at-least-once redelivery after a
    /// rebalance or a restart: expected, not an error).
    pub redelivered: u64,
    /// Records stored more than once (the same key and sequence at another offset).
    pub duplicated: u64,
    /// Records whose sequence went backwards within their key.
    pub out_of_order: u64,
    /// Acknowledged offsets that held a different record than acknowledged.
    pub corrupted: u64,
}

/// Judges what each group saw. `seen` must be in the order the group consumed it.
pub fn verify(acked: &[Acked], seen: &[Seen]) -> GroupVerdict {
    let mut verdict = GroupVerdict { consumed: seen.len() as u64, ..GroupVerdict::default() };
    let mut seen_counts: HashMap<(u32, u64), u32> = HashMap::new();
    let mut by_offset: HashMap<(i32, i64), (u32, u64)> = HashMap::new();
    let mut last_seq: HashMap<u32, u64> = HashMap::new();
    for s in seen {
        match by_offset.get(&(s.partition, s.offset)) {
            Some(&stored) if stored == (s.key, s.seq) => {
                verdict.redelivered += 1;
                continue;
            }
            Some(_) => {
                // The same offset read twice with different contents.
                verdict.corrupted += 1;
                continue;
            }
            None => {}
        }
        let count = seen_counts.entry((s.key, s.seq)).or_default();
        *count += 1;
        if *count > 1 {
            verdict.duplicated += 1;
        } else if let Some(&last) = last_seq.get(&s.key)
            && s.seq < last
        {
            verdict.out_of_order += 1;
        }
        let last = last_seq.entry(s.key).or_insert(s.seq);
        *last = (*last).max(s.seq);
        by_offset.insert((s.partition, s.offset), (s.key, s.seq));
    }
    for a in acked {
        match by_offset.get(&(a.partition, a.offset)) {
            Some(&(key, seq)) if (key, seq) == (a.key, a.seq) => {}
            Some(_) => verdict.corrupted += 1,
            None if seen_counts.contains_key(&(a.key, a.seq)) => {}
            None => verdict.lost += 1,
        }
    }
    verdict
}

/// The soak's result.
#[derive(Clone, Debug, Serialize)]
pub struct SoakReport {
    /// Seconds of load.
    pub duration_secs: u64,
    /// Records acknowledged.
    pub acknowledged: u64,
    /// The rate asked for (messages per second).
    pub target_rate: f64,
    /// Acknowledged records per second of load.
    pub achieved_rate: f64,
    /// Produce attempts that failed (retried).
    pub produce_errors: u64,
    /// Broker restarts done by the fault mode.
    pub broker_kills: u64,
    /// One verdict per group.
    pub groups: Vec<GroupVerdict>,
    /// Publish latency over the run.
    pub publish_latency: LatencySummary,
    /// End-to-end latency over the run.
    pub end_to_end_latency: LatencySummary,
    /// Publish p99 per report period (µs), to see drift.
    pub publish_p99_by_period_us: Vec<u64>,
    /// True when nothing acknowledged was lost or corrupted.
    pub passed: bool,
}

/// A record value: its intended send time (µs since the epoch), producer, key, sequence, padding.
fn encode_value(size: usize, intended_us: u64, key: u32, seq: u64, producer: u32) -> Vec<u8> {
    let mut v = vec![b'.'; size.max(HEADER_BYTES)];
    v[0..8].copy_from_slice(&intended_us.to_be_bytes());
    v[8..12].copy_from_slice(&producer.to_be_bytes());
    v[12..16].copy_from_slice(&key.to_be_bytes());
    v[16..24].copy_from_slice(&seq.to_be_bytes());
    v
}

fn decode_value(v: &[u8]) -> Option<(u64, u32, u64)> {
    if v.len() < HEADER_BYTES {
        return None;
    }
    let sent = u64::from_be_bytes(v[0..8].try_into().ok()?);
    let key = u32::from_be_bytes(v[12..16].try_into().ok()?);
    let seq = u64::from_be_bytes(v[16..24].try_into().ok()?);
    Some((sent, key, seq))
}

fn key_bytes(key: u32) -> Vec<u8> {
    format!("soak-key-{key}").into_bytes()
}

/// Records a run is asked for, and so the room its acknowledged and seen logs reserve up front:
/// growing a multi-GiB log by doubling under the shared lock paused the producers for seconds,
/// which the latency histograms then blamed on the broker.
fn expected_records(args: &SoakArgs) -> usize {
    (args.rate * args.duration as f64 * 1.02) as usize + 4096
}

/// A record on its way out: who it is, and when it was due at the asked rate.
struct Outgoing {
    key: u32,
    seq: u64,
    intended_us: u64,
    value: Vec<u8>,
}

/// Counters shared by the tasks and the reporter.
#[derive(Default)]
struct Shared {
    acked: Vec<Acked>,
    produce_errors: u64,
    publish: Option<Histogram<u64>>,
    period_publish: Option<Histogram<u64>>,
    e2e: Option<Histogram<u64>>,
    consumed: Vec<u64>,
    /// Group members that have joined (producers start when all have, or after a while).
    joined: usize,
    /// When the load ends (set when the producers start).
    end: Option<Instant>,
}

/// A node the soak started.
struct SpawnedNode {
    child: Option<Child>,
    /// Its Kafka listener (fixed, so a restart keeps the bootstrap list valid).
    listen: String,
    data_dir: PathBuf,
    /// `serve` arguments beyond the listener and data directory.
    extra: Vec<String>,
}

impl SpawnedNode {
    fn start(data_dir: PathBuf, listen: String, extra: Vec<String>) -> Result<Self, String> {
        let mut node = Self { child: None, listen, data_dir, extra };
        node.launch()?;
        Ok(node)
    }

    fn launch(&mut self) -> Result<(), String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        // The broker's log goes beside its data directory, so a failed run can be read.
        let log_path = self.data_dir.with_extension("log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("{}: {e}", log_path.display()))?;
        let mut child = Command::new(exe)
            .args(["serve", "--flush", "always", "--listen", &self.listen])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.extra)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start a broker: {e}"))?;
        let stdout = child.stdout.take().expect("piped");
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).map_err(|e| e.to_string())?;
        if !line.starts_with("moldau listening on") {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("spawned broker did not start: {line:?} (see {})", log_path.display()));
        }
        self.child = Some(child);
        Ok(())
    }

    fn kill_and_restart(&mut self) -> Result<(), String> {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.launch()
    }
}

impl Drop for SpawnedNode {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
    }
}

/// A free port on `ip`.
fn free_port(ip: &str) -> Result<u16, String> {
    std::net::TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("{ip}: {e}"))
}

/// The nodes the soak started: one broker (data in `dir`), or `count` nodes (in `dir/node-N`) on 127.0.0.1..=count, each a
/// metadata voter and a broker with one shard (they share this machine's cores).
fn spawn_nodes(dir: &std::path::Path, count: usize) -> Result<Vec<SpawnedNode>, String> {
    if count == 1 {
        let listen = format!("127.0.0.1:{}", free_port("127.0.0.1")?);
        return Ok(vec![SpawnedNode::start(dir.to_path_buf(), listen, Vec::new())?]);
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let ips: Vec<String> = (1..=count).map(|i| format!("127.0.0.{i}")).collect();
    let mut voters = Vec::new();
    for (i, ip) in ips.iter().enumerate() {
        voters.push(format!("{}@{ip}:{}", i + 1, free_port(ip)?));
    }
    let voters = voters.join(",");
    let mut nodes = Vec::new();
    for (i, ip) in ips.iter().enumerate() {
        let extra = vec![
            "--node-id".into(),
            (i + 1).to_string(),
            "--voters".into(),
            voters.clone(),
            "--shards".into(),
            "1".into(),
        ];
        nodes.push(SpawnedNode::start(dir.join(format!("node-{}", i + 1)), format!("{ip}:{}", free_port(ip)?), extra)?);
    }
    Ok(nodes)
}

/// The node that leads a random partition of `topic` now (by the metadata of any node), as an
/// index into the spawned nodes; a random node when no leader is known.
fn leader_of_random_partition(bootstrap: &str, topic: &str, partitions: i32, nodes: usize) -> (usize, Option<i32>) {
    let partition = rand::rng().random_range(0..partitions);
    let leader = crate::io::block_on(async {
        let client = KafkaClient::connect(bootstrap, "moldau-soak-admin").await.ok()?;
        let info = client.topic(topic, false).await.ok()?;
        info.partitions.iter().find(|p| p.0 == partition).map(|p| p.1).filter(|l| *l >= 1)
    });
    match leader {
        Some(id) if (id as usize) <= nodes => (id as usize - 1, Some(partition)),
        _ => (rand::rng().random_range(0..nodes), None),
    }
}

fn parse_range(text: &str) -> Result<(u64, u64), String> {
    let (a, b) = text.split_once('-').unwrap_or((text, text));
    match (a.trim().parse::<u64>(), b.trim().parse::<u64>()) {
        (Ok(a), Ok(b)) if a > 0 && a <= b => Ok((a, b)),
        _ => Err(format!("--kill-every {text:?}: expected MIN-MAX seconds, e.g. 5-15")),
    }
}

/// Runs the soak. Returns the report; an error only for failures to run at all.
pub fn run(args: SoakArgs) -> Result<SoakReport, String> {
    if args.message_size < HEADER_BYTES {
        return Err(format!("--message-size must be at least {HEADER_BYTES}"));
    }
    if args.producers == 0 || args.keys == 0 || args.partitions <= 0 || args.rate <= 0.0 {
        return Err("--producers, --keys, --partitions and --rate must be positive".into());
    }
    let kill_range = args.kill_every.as_deref().map(parse_range).transpose()?;
    if kill_range.is_some() && !args.spawn_broker {
        return Err("--kill-every needs --spawn-broker (the soak only kills a broker it started)".into());
    }
    if args.nodes == 0 || (args.nodes > 1 && !args.spawn_broker) {
        return Err("--nodes must be positive and needs --spawn-broker (the soak starts the nodes itself)".into());
    }
    let dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("moldau-soak-{}", uuid::Uuid::new_v4().simple())));
    let mut spawned = if args.spawn_broker { spawn_nodes(&dir, args.nodes)? } else { Vec::new() };
    let bootstrap = if spawned.is_empty() {
        args.bootstrap.clone()
    } else {
        spawned.iter().map(|n| n.listen.as_str()).collect::<Vec<_>>().join(",")
    };
    let topic = args
        .topic
        .clone()
        .unwrap_or_else(|| format!("moldau-soak-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]));
    // Replicated over the spawned nodes; on a given cluster, its default factor.
    let replication = if spawned.len() > 1 { spawned.len().min(3) as i16 } else { -1 };
    let mut topic_configs = BTreeMap::new();
    if replication >= 3 {
        topic_configs.insert("min.insync.replicas".to_owned(), "2".to_owned());
    }
    crate::io::block_on(async {
        // A new cluster takes a moment to elect its controller and register its brokers.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let outcome = match KafkaClient::connect(&bootstrap, "moldau-soak-admin").await {
                Ok(client) => client.create_topic(&topic, args.partitions, replication, &topic_configs).await,
                Err(e) => Err(e),
            };
            match outcome {
                Ok(()) => return Ok(()),
                Err(e) if e.code() == Some(36) => return Ok(()),
                Err(e) if Instant::now() < deadline && !spawned.is_empty() => {
                    tracing::debug!(error = %e, "soak: topic not created yet; retrying");
                    crate::io::sleep(Duration::from_millis(300)).await;
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    })?;
    eprintln!(
        "soak: topic {topic} ({} partitions{}), {} producers over {} keys at {} msg/s, {} groups x {} consumers, {} s{}",
        args.partitions,
        if spawned.len() > 1 {
            format!(", {} nodes, replication factor {replication}", spawned.len())
        } else {
            String::new()
        },
        args.producers,
        args.keys,
        args.rate,
        args.consumer_groups,
        args.consumers,
        args.duration,
        kill_range
            .map(|(a, b)| format!(", {} SIGKILL every {a}-{b} s", if spawned.len() > 1 { "leader" } else { "broker" }))
            .unwrap_or_default()
    );
    let shared = Arc::new(Mutex::new(Shared {
        publish: Some(new_histogram()),
        period_publish: Some(new_histogram()),
        e2e: Some(new_histogram()),
        consumed: vec![0; args.consumer_groups],
        acked: Vec::with_capacity(expected_records(&args)),
        ..Shared::default()
    }));
    let (seen_tx, seen_rx) = mpsc::channel::<(usize, Vec<Seen>)>();
    let mut threads = Vec::new();
    // Each group's members on their own thread; they join before the load starts, as a
    // benchmark's consumers would be subscribed before its producers begin.
    for group in 0..args.consumer_groups {
        let (args, shared, bootstrap, topic, seen_tx) =
            (args.clone(), shared.clone(), bootstrap.clone(), topic.clone(), seen_tx.clone());
        threads.push(std::thread::spawn(move || {
            let seen = crate::io::block_on(consumers(args, bootstrap, topic, shared, group));
            let _ = seen_tx.send((group, seen));
        }));
    }
    let members = args.consumer_groups * args.consumers.max(1);
    let join_deadline = Instant::now() + Duration::from_secs(30);
    while shared.lock().map_err(|_| "poisoned")?.joined < members && Instant::now() < join_deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let start = Instant::now();
    let end = start + Duration::from_secs(args.duration);
    shared.lock().map_err(|_| "poisoned")?.end = Some(end);
    // Producers on one thread.
    {
        let (args, shared, bootstrap, topic) = (args.clone(), shared.clone(), bootstrap.clone(), topic.clone());
        threads.push(std::thread::spawn(move || crate::io::block_on(producers(args, bootstrap, topic, shared, end))));
    }
    drop(seen_tx);
    // Reporter and fault injector on this thread.
    let mut kills = 0u64;
    let mut next_kill = kill_range.map(|(a, b)| Instant::now() + Duration::from_secs(rand::rng().random_range(a..=b)));
    let mut next_report = start + Duration::from_secs(args.report_every);
    let mut periods = Vec::new();
    while Instant::now() < end + Duration::from_secs(1) && threads.iter().any(|t| !t.is_finished()) {
        std::thread::sleep(Duration::from_millis(100));
        if let Some(at) = next_kill
            && !spawned.is_empty()
            && Instant::now() >= at
            && Instant::now() < end
        {
            if spawned.len() == 1 {
                eprintln!("soak: SIGKILL broker (restart {})", kills + 1);
                spawned[0].kill_and_restart()?;
            } else {
                let (node, partition) = leader_of_random_partition(&bootstrap, &topic, args.partitions, spawned.len());
                match partition {
                    Some(p) => {
                        eprintln!("soak: SIGKILL node {} (leader of partition {p}; restart {})", node + 1, kills + 1)
                    }
                    None => eprintln!("soak: SIGKILL node {} (no leader known; restart {})", node + 1, kills + 1),
                }
                spawned[node].kill_and_restart()?;
            }
            kills += 1;
            let (a, b) = kill_range.expect("set");
            next_kill = Some(Instant::now() + Duration::from_secs(rand::rng().random_range(a..=b)));
        }
        if Instant::now() >= next_report {
            next_report += Duration::from_secs(args.report_every);
            let mut s = shared.lock().map_err(|_| "poisoned")?;
            let period = s.period_publish.replace(new_histogram()).unwrap_or_else(new_histogram);
            let p99 = summarize(&period).p99_us;
            periods.push(p99);
            let acked = s.acked.len();
            eprintln!(
                "soak [{:>5}s] acknowledged {acked}  consumed {:?}  pending {:?}  produce errors {}  publish p99 {:.3} ms  kills {kills}",
                start.elapsed().as_secs(),
                s.consumed,
                s.consumed.iter().map(|c| (acked as i64 - *c as i64).max(0)).collect::<Vec<_>>(),
                s.produce_errors,
                p99 as f64 / 1000.0
            );
        }
    }
    for t in threads {
        let _ = t.join();
    }
    let mut seen_by_group: Vec<Vec<Seen>> = vec![Vec::new(); args.consumer_groups];
    for (group, seen) in seen_rx.iter() {
        seen_by_group[group] = seen;
    }
    let s = shared.lock().map_err(|_| "poisoned")?;
    let groups: Vec<GroupVerdict> = seen_by_group.iter().map(|seen| verify(&s.acked, seen)).collect();
    let passed = groups.iter().all(|g| g.lost == 0 && g.corrupted == 0);
    let report = SoakReport {
        duration_secs: args.duration,
        acknowledged: s.acked.len() as u64,
        target_rate: args.rate,
        achieved_rate: s.acked.len() as f64 / args.duration.max(1) as f64,
        produce_errors: s.produce_errors,
        broker_kills: kills,
        groups,
        publish_latency: s.publish.as_ref().map(summarize).unwrap_or_default(),
        end_to_end_latency: s.e2e.as_ref().map(summarize).unwrap_or_default(),
        publish_p99_by_period_us: periods,
        passed,
    };
    drop(s);
    println!(
        "== soak {} s: {} acknowledged, {} produce errors (retried), {} broker kills",
        report.duration_secs, report.acknowledged, report.produce_errors, report.broker_kills
    );
    println!("rate: {:.0} msg/s acknowledged of {:.0} asked", report.achieved_rate, report.target_rate);
    if report.achieved_rate < report.target_rate * 0.95 && report.broker_kills == 0 {
        println!("warning: the load fell short of the asked rate (more --producers, or the broker is saturated)");
    }
    for (i, g) in report.groups.iter().enumerate() {
        println!(
            "group {i}: consumed {}  lost {}  redelivered {}  duplicated {}  out of order {}  corrupted {}",
            g.consumed, g.lost, g.redelivered, g.duplicated, g.out_of_order, g.corrupted
        );
    }
    println!("publish latency     {}", report.publish_latency.line());
    println!("end-to-end latency  {}", report.end_to_end_latency.line());
    println!(
        "{}",
        if report.passed {
            "PASSED: no acknowledged record was lost"
        } else {
            "FAILED: acknowledged records were lost or corrupted"
        }
    );
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if !spawned.is_empty() && args.data_dir.is_none() {
        let logs: Vec<PathBuf> = spawned.iter().map(|n| n.data_dir.with_extension("log")).collect();
        drop(spawned);
        if report.passed {
            let _ = std::fs::remove_dir_all(&dir);
            for log in logs {
                let _ = std::fs::remove_file(log);
            }
        } else {
            eprintln!(
                "soak: the nodes' data and logs are kept: {}",
                logs.iter().map(|l| l.display().to_string()).collect::<Vec<_>>().join(" ")
            );
        }
    }
    Ok(report)
}

/// Produces until `end`: each producer owns the keys `k % producers == id`, sends batches per
/// partition with one request in flight per partition, and retries a failed batch until it is
/// acknowledged (or the run ends).
async fn producers(args: SoakArgs, bootstrap: String, topic: String, shared: Arc<Mutex<Shared>>, end: Instant) {
    let mut tasks = Vec::new();
    for id in 0..args.producers {
        let (args, bootstrap, topic, shared) = (args.clone(), bootstrap.clone(), topic.clone(), shared.clone());
        tasks.push(crate::io::spawn(async move {
            let client = loop {
                match KafkaClient::connect(&bootstrap, &format!("moldau-soak-producer-{id}")).await {
                    Ok(c) => break c,
                    Err(_) if Instant::now() < end => crate::io::sleep(Duration::from_millis(200)).await,
                    Err(_) => return,
                }
            };
            let keys: Vec<u32> = (0..args.keys).filter(|k| (*k as usize) % args.producers == id).collect();
            if keys.is_empty() {
                return;
            }
            let rate = args.rate / args.producers as f64;
            let mut seqs: HashMap<u32, u64> = HashMap::new();
            let start = Instant::now();
            let start_us = wall_clock_us();
            // Latency runs from when a record was due at the asked rate, not from when a
            // stalled producer got round to sending it (no coordinated omission).
            let intended_us = |index: u64| start_us + (index as f64 * 1e6 / rate) as u64;
            let mut sent = 0u64;
            let mut injected_dups = 0u64;
            let mut next_key = 0usize;
            while Instant::now() < end {
                // Gather the records due now into per-partition batches.
                let due = ((start.elapsed().as_secs_f64() * rate) as u64)
                    .saturating_sub(sent)
                    .min(BATCH_RECORDS as u64 * args.partitions as u64);
                if due == 0 {
                    crate::io::sleep(Duration::from_millis(1)).await;
                    continue;
                }
                let mut batches: BTreeMap<i32, Vec<Outgoing>> = BTreeMap::new();
                for index in sent..sent + due {
                    let key = keys[next_key % keys.len()];
                    next_key += 1;
                    let seq = seqs.entry(key).or_default();
                    *seq += 1;
                    let partition = crate::client::partition_for_key(&key_bytes(key), args.partitions);
                    let intended = intended_us(index);
                    batches.entry(partition).or_default().push(Outgoing {
                        key,
                        seq: *seq,
                        intended_us: intended,
                        value: encode_value(args.message_size, intended, key, *seq, id as u32),
                    });
                }
                sent += due;
                // Partitions in parallel (one request in flight each), each partition's batches
                // in order.
                let sends = batches.into_iter().map(|(partition, records)| {
                    let mut repeats_left = 0;
                    // The duplicate hook acts in producer 0 only, so the count is exact.
                    if id == 0 && injected_dups < args.inject_duplicate {
                        injected_dups += 1;
                        repeats_left = 1;
                    }
                    let (client, topic, shared, message_size) = (&client, &topic, &shared, args.message_size);
                    async move {
                        let build = |chunk: &[Outgoing]| {
                            let mut builder = BatchBuilder::new(chunk.len() * (message_size + 32), crate::io::now_ms());
                            for record in chunk {
                                builder.push(Some(&key_bytes(record.key)), &record.value, crate::io::now_ms());
                            }
                            builder.finish()
                        };
                        for whole in records.chunks(BATCH_RECORDS) {
                            // The duplicate hook sends the batch's first record once more, alone
                            // (so each injection duplicates exactly one record).
                            let mut sends = vec![whole];
                            if std::mem::take(&mut repeats_left) > 0 {
                                sends.push(&whole[..1]);
                            }
                            for chunk in sends {
                                let Some(base) =
                                    send_until_acked(client, topic, partition, build(chunk), shared, end).await
                                else {
                                    continue;
                                };
                                let now = wall_clock_us();
                                let mut guard = shared.lock().expect("shared");
                                let s = &mut *guard;
                                for (i, sent) in chunk.iter().enumerate() {
                                    let offset = base + i as i64;
                                    s.acked.push(Acked { partition, offset, key: sent.key, seq: sent.seq });
                                    for h in [s.publish.as_mut(), s.period_publish.as_mut()].into_iter().flatten() {
                                        record(h, now.saturating_sub(sent.intended_us));
                                    }
                                }
                            }
                        }
                    }
                });
                futures_util::future::join_all(sends).await;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// Sends a batch with acks=all until acknowledged; `None` if the run ended first.
async fn send_until_acked(
    client: &KafkaClient,
    topic: &str,
    partition: i32,
    batch: Bytes,
    shared: &Mutex<Shared>,
    end: Instant,
) -> Option<i64> {
    let give_up = end + Duration::from_secs(30);
    loop {
        match client.produce(topic, partition, batch.clone(), -1, 10_000).await {
            Ok(base) => return Some(base),
            Err(e) => {
                shared.lock().expect("shared").produce_errors += 1;
                tracing::debug!(error = %e, "soak produce failed; retrying");
                if Instant::now() > give_up {
                    return None;
                }
                crate::io::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Session timeout of the soak's group members.
const SESSION_TIMEOUT_MS: i32 = 10_000;
/// How often members heartbeat and commit.
const COMMIT_EVERY: Duration = Duration::from_millis(500);

/// One consumer group of `args.consumers` real members (JoinGroup/SyncGroup, range assignment,
/// heartbeats, offset commits), reading `topic` until the run is over and nothing new arrives.
/// After a rebalance or a broker restart a member resumes from the group's committed offsets, so
/// records can be delivered again (at-least-once); those are counted as redelivered. Returns
/// everything the group saw, in the order it saw it.
async fn consumers(
    args: SoakArgs,
    bootstrap: String,
    topic: String,
    shared: Arc<Mutex<Shared>>,
    group: usize,
) -> Vec<Seen> {
    let group_name = format!("{topic}-group-{group}");
    let seen_log: Rc<RefCell<Vec<Seen>>> = Rc::new(RefCell::new(Vec::with_capacity(expected_records(&args))));
    // Highest offset the group has seen per partition: anything at or below it is a redelivery.
    let high: Rc<RefCell<HashMap<i32, i64>>> = Rc::new(RefCell::new(HashMap::new()));
    let members = args.consumers.max(1);
    let drained = Rc::new(std::cell::Cell::new(0usize));
    let mut tasks = Vec::new();
    for id in 0..members {
        let (args, bootstrap, topic, shared, group_name) =
            (args.clone(), bootstrap.clone(), topic.clone(), shared.clone(), group_name.clone());
        let (seen_log, high, drained) = (seen_log.clone(), high.clone(), drained.clone());
        let inject_loss = if id == 0 { args.inject_loss } else { 0 };
        tasks.push(crate::io::spawn(async move {
            let mut member = Member::new(&bootstrap, &group_name, &topic, args.partitions, id, group);
            let mut skipped = 0u64;
            let mut idle_since: Option<Instant> = None;
            let mut counted_join = false;
            loop {
                let end = shared.lock().expect("shared").end;
                let over = end.is_some_and(|e| Instant::now() > e);
                if !member.ready().await {
                    if over && end.is_some_and(|e| Instant::now() > e + Duration::from_secs(60)) {
                        break;
                    }
                    crate::io::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                if !counted_join {
                    counted_join = true;
                    shared.lock().expect("shared").joined += 1;
                }
                let got = match member.poll().await {
                    Some(fetched) => {
                        let now_us = wall_clock_us();
                        let mut got = 0;
                        let mut latencies = Vec::new();
                        for (partition, from, records) in fetched {
                            let mut high = high.borrow_mut();
                            let top = high.entry(partition).or_insert(-1);
                            let mut next = from;
                            let _ = for_each_record(&records, |r| {
                                if r.offset < from {
                                    return;
                                }
                                next = r.offset + 1;
                                let Some((sent, key, seq)) = r.value.and_then(decode_value) else { return };
                                if skipped < inject_loss {
                                    skipped += 1;
                                    return;
                                }
                                seen_log.borrow_mut().push(Seen { partition, offset: r.offset, key, seq });
                                if r.offset > *top {
                                    *top = r.offset;
                                    latencies.push(now_us.saturating_sub(sent));
                                    got += 1;
                                }
                            });
                            member.advance(partition, next);
                        }
                        if !latencies.is_empty() {
                            let mut s = shared.lock().expect("shared");
                            s.consumed[group] += latencies.len() as u64;
                            if let Some(h) = s.e2e.as_mut() {
                                for l in latencies {
                                    record(h, l);
                                }
                            }
                        }
                        got
                    }
                    None => 0,
                };
                // After the run: stop once nothing new has arrived for a while.
                if over {
                    if got > 0 {
                        idle_since = None;
                    } else if idle_since.get_or_insert_with(Instant::now).elapsed() > Duration::from_secs(5)
                        || end.is_some_and(|e| Instant::now() > e + Duration::from_secs(60))
                    {
                        break;
                    }
                }
            }
            // Leave together, so no member is rebalanced onto partitions while still draining.
            member.commit_now().await;
            drained.set(drained.get() + 1);
            while drained.get() < members {
                crate::io::sleep(Duration::from_millis(100)).await;
            }
            member.leave().await;
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    Rc::try_unwrap(seen_log).map(RefCell::into_inner).unwrap_or_default()
}

/// A soak group member: its connection, group membership and read positions, rebuilt after any
/// failure.
struct Member {
    bootstrap: String,
    group: String,
    topic: String,
    partitions: i32,
    client_id: String,
    client: Option<KafkaClient>,
    membership: Option<GroupConsumer>,
    /// (topic, partition, next offset) for the assigned partitions.
    positions: Vec<(String, i32, i64)>,
    last_commit: Instant,
}

impl Member {
    fn new(bootstrap: &str, group: &str, topic: &str, partitions: i32, id: usize, group_index: usize) -> Self {
        Self {
            bootstrap: bootstrap.to_owned(),
            group: group.to_owned(),
            topic: topic.to_owned(),
            partitions,
            client_id: format!("moldau-soak-consumer-{group_index}-{id}"),
            client: None,
            membership: None,
            positions: Vec::new(),
            last_commit: Instant::now(),
        }
    }

    /// Connects and joins as needed; false while that fails.
    async fn ready(&mut self) -> bool {
        if self.client.is_none() {
            self.membership = None;
            self.client = KafkaClient::connect(&self.bootstrap, &self.client_id).await.ok();
        }
        let Some(client) = self.client.as_ref() else { return false };
        if self.membership.is_none() {
            match GroupConsumer::join(client, &self.group, &self.topic, self.partitions, SESSION_TIMEOUT_MS).await {
                Ok(joined) => {
                    tracing::debug!(member = %self.client_id, assignment = ?joined.assignment, "soak member joined");
                    self.membership = Some(joined);
                    if let Err(e) = self.load_positions().await {
                        tracing::debug!(member = %self.client_id, error = %e, "soak member could not load positions");
                        self.reset();
                        return false;
                    }
                }
                Err(e) => {
                    tracing::debug!(member = %self.client_id, error = %e, "soak member could not join");
                    self.reset();
                    return false;
                }
            }
        }
        true
    }

    /// Positions from the group's committed offsets (the log start where none is committed).
    async fn load_positions(&mut self) -> Result<(), ClientError> {
        let client = self.client.as_ref().expect("connected");
        let assignment = self.membership.as_ref().map(|m| m.assignment.clone()).unwrap_or_default();
        let committed = client.committed_offsets(&self.group).await?;
        let mut positions = Vec::new();
        for p in assignment {
            let offset = match committed.iter().find(|(t, cp, o)| *t == self.topic && *cp == p && *o >= 0) {
                Some((_, _, o)) => *o,
                None => client.list_offset(&self.topic, p, -2).await?.0,
            };
            positions.push((self.topic.clone(), p, offset));
        }
        self.positions = positions;
        Ok(())
    }

    fn reset(&mut self) {
        self.client = None;
        self.membership = None;
        self.positions.clear();
    }

    /// Moves the read position of `partition` to `next`.
    fn advance(&mut self, partition: i32, next: i64) {
        if let Some(pos) = self.positions.iter_mut().find(|p| p.1 == partition) {
            pos.2 = pos.2.max(next);
        }
    }

    /// One fetch of the assigned partitions (and a heartbeat with a commit now and then).
    /// Returns (partition, offset asked for, record batches) for each partition with data, or
    /// `None` after a failure (already handled); [`Member::advance`] moves the positions on.
    async fn poll(&mut self) -> Option<Vec<(i32, i64, Bytes)>> {
        if self.last_commit.elapsed() >= COMMIT_EVERY {
            self.last_commit = Instant::now();
            let offsets = self.committable();
            let membership = self.membership.as_mut().expect("joined");
            let outcome = match membership.commit(&offsets).await {
                Ok(()) => membership.heartbeat().await,
                Err(e) => Err(e),
            };
            match outcome {
                Ok(()) => {}
                Err(e) if needs_rejoin(&e) => {
                    tracing::debug!(member = %self.client_id, error = %e, "soak member rejoins");
                    let rejoined = membership.rejoin(self.partitions).await;
                    tracing::debug!(member = %self.client_id, result = ?rejoined.as_ref().map(|()| &membership.assignment), "soak member rejoined");
                    if rejoined.is_err() || self.load_positions().await.is_err() {
                        self.reset();
                    }
                    return None;
                }
                Err(e) => {
                    tracing::debug!(member = %self.client_id, error = %e, "soak member lost its membership");
                    self.reset();
                    return None;
                }
            }
        }
        if self.positions.is_empty() {
            crate::io::sleep(Duration::from_millis(100)).await;
            return None;
        }
        let client = self.client.as_ref().expect("connected");
        let results = match client.fetch_many(&self.positions, 1 << 20, 200).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(member = %self.client_id, error = %e, "soak member fetch failed");
                self.reset();
                crate::io::sleep(Duration::from_millis(100)).await;
                return None;
            }
        };
        let mut out = Vec::new();
        for (pos, result) in self.positions.iter_mut().zip(results) {
            match result {
                Ok(fetched) if !fetched.records.is_empty() => out.push((pos.1, pos.2, fetched.records)),
                Ok(_) => {}
                // The data before the log start is gone (retention): go on from the start; the
                // verdict reports what was never seen.
                Err(e) if e.code() == Some(1) => {
                    if let Ok((start, _)) = client.list_offset(&pos.0, pos.1, -2).await {
                        pos.2 = start;
                    }
                }
                Err(_) => {}
            }
        }
        Some(out)
    }

    async fn commit_now(&mut self) {
        if let Some(membership) = self.membership.as_ref() {
            let _ = membership.commit(&self.committable()).await;
        }
    }

    /// (partition, next offset to read) of every assigned partition: what a commit stores.
    fn committable(&self) -> Vec<(i32, i64)> {
        self.positions.iter().map(|(_, p, o)| (*p, *o)).collect()
    }

    async fn leave(&mut self) {
        if let Some(membership) = self.membership.take() {
            // Best effort at the end of the run: the coordinator expires the session otherwise.
            let _ = membership.leave().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acked(n: u64) -> Vec<Acked> {
        (0..n)
            .map(|i| Acked { partition: (i % 2) as i32, offset: (i / 2) as i64, key: (i % 2) as u32, seq: i / 2 + 1 })
            .collect()
    }

    fn seen_all(acked: &[Acked]) -> Vec<Seen> {
        acked.iter().map(|a| Seen { partition: a.partition, offset: a.offset, key: a.key, seq: a.seq }).collect()
    }

    #[test]
    fn a_clean_run_passes() {
        let a = acked(100);
        assert_eq!(verify(&a, &seen_all(&a)), GroupVerdict { consumed: 100, ..GroupVerdict::default() });
    }

    #[test]
    fn an_injected_loss_is_detected() {
        let a = acked(100);
        let mut seen = seen_all(&a);
        seen.remove(37);
        let v = verify(&a, &seen);
        assert_eq!(v.lost, 1);
        assert_eq!(v.consumed, 99);
    }

    #[test]
    fn redelivery_at_the_same_offset_is_not_a_duplicate() {
        let a = acked(100);
        let mut seen = seen_all(&a);
        // A rebalance: the group reads offsets 40.. of both partitions again.
        let again: Vec<Seen> = seen.iter().filter(|s| s.offset >= 40).copied().collect();
        seen.extend(again);
        let v = verify(&a, &seen);
        assert_eq!((v.redelivered, v.duplicated, v.lost, v.out_of_order, v.corrupted), (20, 0, 0, 0, 0));
    }

    #[test]
    fn an_injected_duplicate_is_detected() {
        let a = acked(100);
        let mut seen = seen_all(&a);
        // The same key and sequence again, at a later offset (a retried batch appended twice).
        let dup = Seen { offset: 1000, ..seen[10] };
        seen.push(dup);
        let v = verify(&a, &seen);
        assert_eq!((v.duplicated, v.lost, v.out_of_order), (1, 0, 0));
    }

    #[test]
    fn reordering_and_corruption_are_detected() {
        let a = acked(10);
        let mut seen = seen_all(&a);
        seen.swap(0, 2); // key 0: seq 2 then seq 1
        let v = verify(&a, &seen);
        assert_eq!(v.out_of_order, 1);
        let mut seen = seen_all(&a);
        seen[3].seq += 100; // the record at an acknowledged offset is not the one acknowledged
        let v = verify(&a, &seen);
        assert_eq!(v.corrupted, 1);
    }

    #[test]
    fn values_round_trip_and_ranges_parse() {
        let v = encode_value(64, 1_700_000_000_000_000, 7, 42, 1);
        assert_eq!(decode_value(&v), Some((1_700_000_000_000_000, 7, 42)));
        assert_eq!(parse_range("5-15"), Ok((5, 15)));
        assert_eq!(parse_range("10"), Ok((10, 10)));
        assert!(parse_range("15-5").is_err() && parse_range("x").is_err());
    }
}
