//! `moldau soak`: bounded, verifying load. Producers write sequence-numbered records under many
//! keys (each key belongs to one producer, so its sequence is strictly increasing); consumer
//! groups read everything; at the end every acknowledged record must have been seen by every
//! group. Optionally the tool starts a broker itself and SIGKILLs and restarts it at random
//! intervals. The run fails loudly when any acknowledged record is lost.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use rand::Rng;
use serde::Serialize;

use super::stats::{LatencySummary, new_histogram, record, summarize, wall_clock_us};
use crate::cli::DEFAULT_BOOTSTRAP;
use crate::client::KafkaClient;
use crate::client::records::{BatchBuilder, for_each_record};

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
    /// Data directory of the spawned broker (default: a new temporary one).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// With --spawn-broker: SIGKILL and restart it every MIN-MAX seconds (random), e.g. 5-15.
    #[arg(long, value_name = "MIN-MAX")]
    pub kill_every: Option<String>,
    /// Write the final report here as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Test hook: consumers pretend not to see this many records (the run must then fail).
    #[arg(long, hide = true, default_value_t = 0)]
    pub inject_loss: u64,
    /// Test hook: producers send this many acknowledged batches a second time.
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
    /// Records seen more than once (same key and sequence).
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

fn encode_value(size: usize, key: u32, seq: u64, producer: u32) -> Vec<u8> {
    let mut v = vec![b'.'; size.max(HEADER_BYTES)];
    v[0..8].copy_from_slice(&wall_clock_us().to_be_bytes());
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

/// Counters shared by the tasks and the reporter.
#[derive(Default)]
struct Shared {
    acked: Vec<Acked>,
    produce_errors: u64,
    publish: Option<Histogram<u64>>,
    period_publish: Option<Histogram<u64>>,
    e2e: Option<Histogram<u64>>,
    consumed: Vec<u64>,
}

/// The broker the soak started, if it did.
struct SpawnedBroker {
    child: Option<Child>,
    port: u16,
    data_dir: PathBuf,
}

impl SpawnedBroker {
    fn start(data_dir: PathBuf, port: u16) -> Result<Self, String> {
        let mut broker = Self { child: None, port, data_dir };
        broker.launch()?;
        Ok(broker)
    }

    fn launch(&mut self) -> Result<(), String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut child = Command::new(exe)
            .args(["serve", "--flush", "always", "--listen"])
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--data-dir")
            .arg(&self.data_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start a broker: {e}"))?;
        let stdout = child.stdout.take().expect("piped");
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).map_err(|e| e.to_string())?;
        if !line.starts_with("moldau listening on") {
            return Err(format!("spawned broker did not start: {line:?}"));
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

impl Drop for SpawnedBroker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
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
    let mut spawned = if args.spawn_broker {
        let port =
            std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| e.to_string())?.port();
        let dir = args
            .data_dir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join(format!("moldau-soak-{}", uuid::Uuid::new_v4().simple())));
        Some(SpawnedBroker::start(dir, port)?)
    } else {
        None
    };
    let bootstrap = match &spawned {
        Some(b) => format!("127.0.0.1:{}", b.port),
        None => args.bootstrap.clone(),
    };
    let topic = args
        .topic
        .clone()
        .unwrap_or_else(|| format!("moldau-soak-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]));
    crate::io::block_on(async {
        let client = KafkaClient::connect(&bootstrap, "moldau-soak-admin").await.map_err(|e| e.to_string())?;
        match client.create_topic(&topic, args.partitions, -1, &BTreeMap::new()).await {
            Ok(()) => Ok(()),
            Err(e) if e.code() == Some(36) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    })?;
    eprintln!(
        "soak: topic {topic} ({} partitions), {} producers over {} keys at {} msg/s, {} groups x {} consumers, {} s{}",
        args.partitions,
        args.producers,
        args.keys,
        args.rate,
        args.consumer_groups,
        args.consumers,
        args.duration,
        kill_range.map(|(a, b)| format!(", broker SIGKILL every {a}-{b} s")).unwrap_or_default()
    );
    let shared = Arc::new(Mutex::new(Shared {
        publish: Some(new_histogram()),
        period_publish: Some(new_histogram()),
        e2e: Some(new_histogram()),
        consumed: vec![0; args.consumer_groups],
        ..Shared::default()
    }));
    let start = Instant::now();
    let end = start + Duration::from_secs(args.duration);
    let (seen_tx, seen_rx) = mpsc::channel::<(usize, Vec<Seen>)>();
    let mut threads = Vec::new();
    // Producers on one thread, each group's consumers on their own.
    {
        let (args, shared, bootstrap, topic) = (args.clone(), shared.clone(), bootstrap.clone(), topic.clone());
        threads.push(std::thread::spawn(move || crate::io::block_on(producers(args, bootstrap, topic, shared, end))));
    }
    for group in 0..args.consumer_groups {
        let (args, shared, bootstrap, topic, seen_tx) =
            (args.clone(), shared.clone(), bootstrap.clone(), topic.clone(), seen_tx.clone());
        threads.push(std::thread::spawn(move || {
            let seen = crate::io::block_on(consumers(args, bootstrap, topic, shared, group, end));
            let _ = seen_tx.send((group, seen));
        }));
    }
    drop(seen_tx);
    // Reporter and fault injector on this thread.
    let mut kills = 0u64;
    let mut next_kill = kill_range.map(|(a, b)| Instant::now() + Duration::from_secs(rand::rng().random_range(a..=b)));
    let mut next_report = start + Duration::from_secs(args.report_every);
    let mut periods = Vec::new();
    while Instant::now() < end + Duration::from_secs(1) && threads.iter().any(|t| !t.is_finished()) {
        std::thread::sleep(Duration::from_millis(100));
        if let (Some(at), Some(broker)) = (next_kill, spawned.as_mut())
            && Instant::now() >= at
            && Instant::now() < end
        {
            eprintln!("soak: SIGKILL broker (restart {})", kills + 1);
            broker.kill_and_restart()?;
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
                s.consumed.iter().map(|c| acked as i64 - *c as i64).collect::<Vec<_>>(),
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
            "group {i}: consumed {}  lost {}  duplicated {}  out of order {}  corrupted {}",
            g.consumed, g.lost, g.duplicated, g.out_of_order, g.corrupted
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
    if let Some(b) = spawned.as_ref()
        && args.data_dir.is_none()
    {
        let dir = b.data_dir.clone();
        drop(spawned);
        let _ = std::fs::remove_dir_all(dir);
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
            let mut sent = 0u64;
            let mut injected_dups = 0u64;
            let mut next_key = 0usize;
            while Instant::now() < end {
                // Gather the records due now into per-partition batches.
                let due =
                    ((start.elapsed().as_secs_f64() * rate) as u64).saturating_sub(sent).min(BATCH_RECORDS as u64 * 4);
                if due == 0 {
                    crate::io::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                let mut batches: BTreeMap<i32, Vec<(u32, u64, Vec<u8>)>> = BTreeMap::new();
                for _ in 0..due {
                    let key = keys[next_key % keys.len()];
                    next_key += 1;
                    let seq = seqs.entry(key).or_default();
                    *seq += 1;
                    let partition = crate::cli::produce::partition_for_key(&key_bytes(key), args.partitions);
                    batches.entry(partition).or_default().push((
                        key,
                        *seq,
                        encode_value(args.message_size, key, *seq, id as u32),
                    ));
                }
                sent += due;
                for (partition, records) in batches {
                    for chunk in records.chunks(BATCH_RECORDS) {
                        let mut builder =
                            BatchBuilder::new(chunk.len() * (args.message_size + 32), crate::util::now_ms());
                        for (key, _, value) in chunk {
                            builder.push(Some(&key_bytes(*key)), value, crate::util::now_ms());
                        }
                        let batch = builder.finish();
                        let sent_at = wall_clock_us();
                        let mut repeats = 1;
                        // The duplicate hook acts in producer 0 only, so the count is exact.
                        if id == 0 && injected_dups < args.inject_duplicate {
                            injected_dups += 1;
                            repeats = 2;
                        }
                        for _ in 0..repeats {
                            let base = send_until_acked(&client, &topic, partition, batch.clone(), &shared, end).await;
                            let Some(base) = base else { continue };
                            let now = wall_clock_us();
                            let mut guard = shared.lock().expect("shared");
                            let s = &mut *guard;
                            for (i, (key, seq, _)) in chunk.iter().enumerate() {
                                s.acked.push(Acked { partition, offset: base + i as i64, key: *key, seq: *seq });
                            }
                            for h in [s.publish.as_mut(), s.period_publish.as_mut()].into_iter().flatten() {
                                for _ in 0..chunk.len() {
                                    record(h, now.saturating_sub(sent_at));
                                }
                            }
                        }
                    }
                }
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

/// One group's consumers: each reads its share of the partitions from the beginning until the
/// run is over and it has caught up with what was acknowledged.
async fn consumers(
    args: SoakArgs,
    bootstrap: String,
    topic: String,
    shared: Arc<Mutex<Shared>>,
    group: usize,
    end: Instant,
) -> Vec<Seen> {
    let mut tasks = Vec::new();
    for id in 0..args.consumers.max(1) {
        let parts: Vec<i32> = (0..args.partitions).filter(|p| (*p as usize) % args.consumers.max(1) == id).collect();
        let (bootstrap, topic, shared) = (bootstrap.clone(), topic.clone(), shared.clone());
        let inject_loss = if id == 0 { args.inject_loss } else { 0 };
        tasks.push(crate::io::spawn(async move {
            let mut seen = Vec::new();
            let mut positions: Vec<(String, i32, i64)> = parts.iter().map(|p| (topic.clone(), *p, 0)).collect();
            let mut skipped = 0u64;
            let mut client = None;
            let mut idle_since: Option<Instant> = None;
            loop {
                if client.is_none() {
                    client = KafkaClient::connect(&bootstrap, &format!("moldau-soak-consumer-{group}-{id}")).await.ok();
                    if client.is_none() {
                        crate::io::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                }
                let c = client.as_ref().expect("connected");
                let results = match c.fetch_many(&positions, 1 << 20, 200).await {
                    Ok(r) => r,
                    Err(_) => {
                        client = None;
                        crate::io::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let now_us = wall_clock_us();
                let mut got = 0;
                for (pos, result) in positions.iter_mut().zip(results) {
                    let Ok(fetched) = result else { continue };
                    let mut next = pos.2;
                    let mut latencies = Vec::new();
                    let _ = for_each_record(&fetched.records, |r| {
                        if r.offset < pos.2 {
                            return;
                        }
                        next = r.offset + 1;
                        if let Some((sent, key, seq)) = r.value.and_then(decode_value) {
                            if skipped < inject_loss {
                                skipped += 1;
                                return;
                            }
                            seen.push(Seen { partition: pos.1, offset: r.offset, key, seq });
                            latencies.push(now_us.saturating_sub(sent));
                            got += 1;
                        }
                    });
                    pos.2 = next;
                    if !latencies.is_empty() {
                        let mut s = shared.lock().expect("shared");
                        s.consumed[group] += latencies.len() as u64;
                        if let Some(h) = s.e2e.as_mut() {
                            for l in latencies {
                                record(h, l);
                            }
                        }
                    }
                }
                // After the run: stop once nothing new has arrived for a while.
                if Instant::now() > end {
                    if got > 0 {
                        idle_since = None;
                    } else if idle_since.get_or_insert_with(Instant::now).elapsed() > Duration::from_secs(5) {
                        break;
                    }
                    if Instant::now() > end + Duration::from_secs(60) {
                        break;
                    }
                }
            }
            seen
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        if let Ok(seen) = t.await {
            all.extend(seen);
        }
    }
    all
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
        let v = encode_value(64, 7, 42, 1);
        let (_, key, seq) = decode_value(&v).unwrap();
        assert_eq!((key, seq), (7, 42));
        assert_eq!(parse_range("5-15"), Ok((5, 15)));
        assert_eq!(parse_range("10"), Ok((10, 10)));
        assert!(parse_range("15-5").is_err() && parse_range("x").is_err());
    }
}
