//! `moldau bench`: an OpenMessaging-Benchmark-style load tool that speaks the Kafka protocol to
//! any broker; `moldau bench-sink`: a broker that acknowledges and discards, to measure the
//! tool's own ceiling; `moldau soak`: bounded, verifying load.

pub mod load;
pub mod plot;
pub mod sink;
pub mod soak;
pub mod stats;
pub mod workload;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier, mpsc};
use std::time::{Duration, Instant};

use serde::Serialize;

use load::{ConsumerSpec, ProducerSpec, Report, Sample, ThreadPlan, Timeline};
use stats::{LatencySummary, summarize};
use workload::Workload;

use crate::client::DEFAULT_BOOTSTRAP;
use crate::client::KafkaClient;

/// Arguments of `moldau bench`. Flags override the workload file.
#[derive(clap::Args, Debug, Default)]
pub struct BenchArgs {
    /// Broker(s), host:port[,host:port...].
    #[arg(long, default_value = DEFAULT_BOOTSTRAP)]
    pub bootstrap: String,
    /// Seconds measured (after the warm-up).
    #[arg(long)]
    pub duration: Option<u64>,
    /// Write the summary here as JSON (the .hgrm files go next to it).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// TOML workload file (keys as the long flags, with underscores).
    #[arg(long)]
    pub workload: Option<PathBuf>,
    /// Topic name (default: a fresh random one).
    #[arg(long)]
    pub topic: Option<String>,
    /// Number of topics.
    #[arg(long)]
    pub topics: Option<usize>,
    /// Partitions per topic.
    #[arg(long)]
    pub partitions: Option<i32>,
    /// Producer tasks.
    #[arg(long)]
    pub producers: Option<usize>,
    /// Consumer tasks per group.
    #[arg(long)]
    pub consumers: Option<usize>,
    /// Consumer groups (each reads everything).
    #[arg(long)]
    pub consumer_groups: Option<usize>,
    /// Message value size in bytes.
    #[arg(long)]
    pub message_size: Option<usize>,
    /// Keys: none, random, or a number of distinct keys.
    #[arg(long)]
    pub keys: Option<String>,
    /// Rate: max, or messages per second in total.
    #[arg(long)]
    pub rate: Option<String>,
    /// acks: 0, 1 or -1.
    #[arg(long, allow_hyphen_values = true)]
    pub acks: Option<i16>,
    /// Compression: none, gzip, snappy, lz4, zstd.
    #[arg(long)]
    pub compression: Option<String>,
    /// Bytes per batch.
    #[arg(long)]
    pub batch_bytes: Option<usize>,
    /// Linger in milliseconds.
    #[arg(long)]
    pub linger_ms: Option<u64>,
    /// Produce requests in flight per producer.
    #[arg(long)]
    pub max_in_flight: Option<usize>,
    /// Replication factor of the topics created (default: the broker's).
    #[arg(long)]
    pub replication_factor: Option<i16>,
    /// Warm-up seconds.
    #[arg(long)]
    pub warmup: Option<u64>,
    /// Worker threads (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Use existing topics instead of creating them.
    #[arg(long)]
    pub no_create: bool,
    /// Render a latency-by-percentile plot (SVG) here.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// After the run, run the same load again while this many partitions are created and deleted
    /// through the protocol (topics of 10), and report publish p99 against the first run.
    #[arg(long, value_name = "PARTITIONS")]
    pub metadata_churn: Option<usize>,
}

impl BenchArgs {
    /// The workload: file (or defaults), then flags.
    pub fn workload(&self) -> Result<Workload, String> {
        let mut w = match &self.workload {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
                Workload::from_toml(&text)?
            }
            None => Workload::default(),
        };
        macro_rules! set {
            ($($field:ident => $target:ident),* $(,)?) => {
                $( if let Some(v) = self.$field.clone() { w.$target = v; } )*
            };
        }
        set!(
            duration => duration_secs, topics => topics, partitions => partitions, producers => producers,
            consumers => consumers, consumer_groups => consumer_groups, message_size => message_size, keys => keys,
            rate => rate, acks => acks, compression => compression, batch_bytes => batch_bytes, linger_ms => linger_ms,
            max_in_flight => max_in_flight, replication_factor => replication_factor, warmup => warmup_secs, threads => threads,
        );
        if self.topic.is_some() {
            w.topic = self.topic.clone();
        }
        if self.no_create {
            w.create_topics = false;
        }
        w.validate()?;
        Ok(w)
    }
}

/// Throughput over the measured window.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Throughput {
    /// Messages.
    pub messages: u64,
    /// Messages per second.
    pub messages_per_sec: f64,
    /// Megabytes (10^6) per second of values.
    pub mb_per_sec: f64,
}

/// One second of the run.
#[derive(Clone, Debug, Serialize)]
pub struct IntervalPoint {
    /// Seconds since producers started.
    pub t_secs: u64,
    /// Produced messages per second.
    pub produced_per_sec: u64,
    /// Consumed messages per second.
    pub consumed_per_sec: u64,
    /// Publish latency p99 in the second (µs).
    pub publish_p99_us: u64,
    /// End-to-end latency p99 in the second (µs).
    pub e2e_p99_us: u64,
}

/// The result of a run (also written as JSON).
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    /// The workload as run.
    pub workload: Workload,
    /// Broker address.
    pub bootstrap: String,
    /// Seconds measured.
    pub measured_secs: f64,
    /// Produced throughput.
    pub produced: Throughput,
    /// Consumed throughput.
    pub consumed: Throughput,
    /// Publish latency (send to acknowledgement).
    pub publish_latency: LatencySummary,
    /// End-to-end latency (intended send to consumption).
    pub end_to_end_latency: LatencySummary,
    /// Failed produce requests.
    pub errors: u64,
    /// Per-second series.
    pub intervals: Vec<IntervalPoint>,
    /// The second run under metadata churn, when asked for.
    pub churn: Option<ChurnReport>,
}

/// The same load again while partitions were created and deleted.
#[derive(Clone, Debug, Serialize)]
pub struct ChurnReport {
    /// Partitions created and then deleted during the measured window.
    pub partitions_churned: usize,
    /// Seconds the churn took (it stops at the end of the window if not done).
    pub churn_secs: f64,
    /// Produced throughput under churn.
    pub produced: Throughput,
    /// Publish latency under churn.
    pub publish_latency: LatencySummary,
    /// Publish p99 under churn over publish p99 of the run without it.
    pub publish_p99_ratio: f64,
    /// Failed produce requests under churn.
    pub errors: u64,
}

/// Partitions of each topic the churn creates and deletes.
const CHURN_PARTITIONS_PER_TOPIC: usize = 10;

fn throughput(messages: u64, bytes: u64, secs: f64) -> Throughput {
    Throughput { messages, messages_per_sec: messages as f64 / secs, mb_per_sec: bytes as f64 / secs / 1e6 }
}

/// Spreads producers and consumers over threads.
fn plan(workload: &Workload, topics: &[(String, i32)]) -> Vec<ThreadPlan> {
    let threads = workload.thread_count();
    let mut plans: Vec<ThreadPlan> =
        (0..threads).map(|_| ThreadPlan { producers: Vec::new(), consumers: Vec::new() }).collect();
    let targets: Vec<(String, i32)> = topics.iter().flat_map(|(t, n)| (0..*n).map(move |p| (t.clone(), p))).collect();
    let partitions = topics.first().map_or(1, |t| t.1);
    let mut slot = 0;
    for id in 0..workload.producers {
        plans[slot % threads].producers.push(ProducerSpec { id, targets: targets.clone(), partitions });
        slot += 1;
    }
    for group in 0..workload.consumer_groups {
        for id in 0..workload.consumers {
            let parts: Vec<(String, i32)> = targets
                .iter()
                .enumerate()
                .filter(|(i, _)| i % workload.consumers == id)
                .map(|(_, t)| t.clone())
                .collect();
            plans[slot % threads].consumers.push(ConsumerSpec { id, group, parts });
            slot += 1;
        }
    }
    plans
}

/// Prepares the topics: creates them (unless told not to) and learns their partition counts.
async fn prepare_topics(
    client: &KafkaClient,
    workload: &Workload,
    names: &[String],
) -> Result<Vec<(String, i32)>, String> {
    let mut topics = Vec::new();
    for name in names {
        if workload.create_topics {
            match client.create_topic(name, workload.partitions, workload.replication_factor, &BTreeMap::new()).await {
                Ok(()) => {}
                Err(e) if e.code() == Some(36) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        let info = client.topic(name, false).await.map_err(|e| e.to_string())?;
        topics.push((name.clone(), info.partitions.len() as i32));
    }
    Ok(topics)
}

/// One measured run over prepared topics.
struct Run {
    report: BenchReport,
    measured: Sample,
}

/// Runs `moldau bench`.
pub fn run(args: BenchArgs) -> Result<BenchReport, String> {
    let workload = Arc::new(args.workload()?);
    let default_topic = format!("moldau-bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let names = workload.topic_names(&default_topic);
    let topics = crate::io::block_on(async {
        let client = KafkaClient::connect(&args.bootstrap, "moldau-bench-admin").await.map_err(|e| e.to_string())?;
        prepare_topics(&client, &workload, &names).await
    })?;
    let outcome = run_measured(&args, &workload, &topics, None).and_then(|first| match args.metadata_churn {
        None => Ok(first),
        Some(partitions) => {
            eprintln!("bench: the same load again, creating and deleting {partitions} partitions meanwhile");
            let churned = run_measured(&args, &workload, &topics, Some(partitions))?;
            Ok(with_churn(first, churned))
        }
    });
    if workload.create_topics {
        crate::io::block_on(async {
            if let Ok(client) = KafkaClient::connect(&args.bootstrap, "moldau-bench-admin").await {
                for (name, _) in &topics {
                    let _ = client.delete_topic(name).await;
                }
            }
        });
    }
    let Run { report, measured } = outcome?;
    print_summary(&report);
    if let Some(path) = &args.json {
        write_outputs(path, &report, &measured)?;
    }
    if let Some(path) = &args.plot {
        let title = format!("{}: latency by percentile", workload.name);
        let svg = plot::latency_plot(&title, &[("publish", &measured.publish), ("end-to-end", &measured.e2e)]);
        std::fs::write(path, svg).map_err(|e| format!("{}: {e}", path.display()))?;
        eprintln!("plot: {}", path.display());
    }
    Ok(report)
}

/// The first run's report with the churned run's numbers attached.
fn with_churn(first: Run, churned: Run) -> Run {
    let mut report = first.report;
    let churn = churned.report.churn.expect("a churned run reports its churn");
    let baseline = report.publish_latency.p99_us.max(1) as f64;
    report.churn = Some(ChurnReport {
        publish_p99_ratio: churned.report.publish_latency.p99_us as f64 / baseline,
        produced: churned.report.produced,
        publish_latency: churned.report.publish_latency,
        errors: churned.report.errors,
        ..churn
    });
    Run { report, measured: first.measured }
}

/// Runs the load once (with `churn` partitions created and deleted during the measured window).
fn run_measured(
    args: &BenchArgs,
    workload: &Arc<Workload>,
    topics: &[(String, i32)],
    churn: Option<usize>,
) -> Result<Run, String> {
    let plans = plan(workload, topics);
    let threads = plans.len();
    eprintln!(
        "bench {}: {} topic(s) x {} partitions, {} producer(s), {} group(s) x {} consumer(s), {} B messages, rate {}, acks {}, {} thread(s); warm-up {} s, measuring {} s",
        workload.name,
        topics.len(),
        topics.first().map_or(0, |t| t.1),
        workload.producers,
        workload.consumer_groups,
        workload.consumers,
        workload.message_size,
        workload.rate,
        workload.acks,
        threads,
        workload.warmup_secs,
        workload.duration_secs
    );
    let ready = Arc::new(Barrier::new(threads + 1));
    let timeline_cell = Arc::new(std::sync::Mutex::new(None));
    let (tx, rx) = mpsc::channel();
    let mut handles = Vec::new();
    for (i, plan) in plans.into_iter().enumerate() {
        let (bootstrap, workload, ready, timeline_cell, tx) =
            (args.bootstrap.clone(), workload.clone(), ready.clone(), timeline_cell.clone(), tx.clone());
        handles.push(
            std::thread::Builder::new()
                .name(format!("moldau-bench-{i}"))
                .spawn(move || load::run_thread(bootstrap, workload, plan, ready, timeline_cell, tx))
                .map_err(|e| e.to_string())?,
        );
    }
    drop(tx);
    ready.wait(); // consumers positioned
    let start = Instant::now() + Duration::from_millis(50);
    let timeline = Timeline {
        start,
        measure_from: start + Duration::from_secs(workload.warmup_secs),
        end: start + Duration::from_secs(workload.warmup_secs + workload.duration_secs),
    };
    *timeline_cell.lock().map_err(|_| "poisoned")? = Some(timeline);
    let churner = churn.map(|partitions| {
        let bootstrap = args.bootstrap.clone();
        std::thread::spawn(move || churn_metadata(&bootstrap, partitions, timeline))
    });
    ready.wait(); // go
    let mut measured = Sample::default();
    let mut finals = 0;
    let mut intervals = Vec::new();
    let mut second = Sample::default();
    let mut last_print = Instant::now();
    let mut failure = None;
    while finals < threads {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(Report::Interval(sample)) => second.merge(&sample),
            Ok(Report::Final(sample)) => {
                measured.merge(&sample);
                finals += 1;
            }
            Ok(Report::Failed(e)) => failure = Some(e),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if last_print.elapsed() >= Duration::from_secs(1) {
            last_print = Instant::now();
            let t = start.elapsed().as_secs();
            let point = IntervalPoint {
                t_secs: t,
                produced_per_sec: second.produced,
                consumed_per_sec: second.consumed,
                publish_p99_us: summarize(&second.publish).p99_us,
                e2e_p99_us: summarize(&second.e2e).p99_us,
            };
            eprintln!(
                "[{t:>4}s{}] produce {:>9} msg/s {:>8.1} MB/s p99 {:>8.3} ms | consume {:>9} msg/s e2e p99 {:>8.3} ms | errors {}",
                if Instant::now() < timeline.measure_from { " warm-up" } else { "" },
                second.produced,
                second.produced_bytes as f64 / 1e6,
                point.publish_p99_us as f64 / 1000.0,
                second.consumed,
                point.e2e_p99_us as f64 / 1000.0,
                second.errors
            );
            intervals.push(point);
            second = Sample::default();
        }
    }
    for h in handles {
        let _ = h.join();
    }
    let churned = match churner.map(|c| c.join()) {
        None => None,
        Some(Ok(result)) => Some(result?),
        Some(Err(_)) => return Err("the metadata churn thread panicked".into()),
    };
    if let Some(e) = failure {
        return Err(e);
    }
    let secs = workload.duration_secs as f64;
    let report = BenchReport {
        workload: (**workload).clone(),
        bootstrap: args.bootstrap.clone(),
        measured_secs: secs,
        produced: throughput(measured.produced, measured.produced_bytes, secs),
        consumed: throughput(measured.consumed, measured.consumed_bytes, secs),
        publish_latency: summarize(&measured.publish),
        end_to_end_latency: summarize(&measured.e2e),
        errors: measured.errors,
        intervals,
        churn: churned.map(|(partitions_churned, churn_secs)| ChurnReport {
            partitions_churned,
            churn_secs,
            produced: Throughput::default(),
            publish_latency: LatencySummary::default(),
            publish_p99_ratio: 0.0,
            errors: 0,
        }),
    };
    Ok(Run { report, measured })
}

/// Creates and deletes topics of [`CHURN_PARTITIONS_PER_TOPIC`] partitions until `partitions`
/// were churned, starting with the measured window and stopping at its end at the latest.
/// Returns the partitions churned and the seconds it took.
fn churn_metadata(bootstrap: &str, partitions: usize, timeline: Timeline) -> Result<(usize, f64), String> {
    std::thread::sleep(timeline.measure_from.saturating_duration_since(Instant::now()));
    let started = Instant::now();
    crate::io::block_on(async {
        let client = KafkaClient::connect(bootstrap, "moldau-bench-churn").await.map_err(|e| e.to_string())?;
        let run = uuid::Uuid::new_v4().simple().to_string();
        let mut churned = 0;
        while churned < partitions && Instant::now() < timeline.end {
            let name = format!("moldau-churn-{}-{churned}", &run[..8]);
            let count = CHURN_PARTITIONS_PER_TOPIC.min(partitions - churned);
            client.create_topic(&name, count as i32, -1, &BTreeMap::new()).await.map_err(|e| e.to_string())?;
            client.delete_topic(&name).await.map_err(|e| e.to_string())?;
            churned += count;
        }
        Ok((churned, started.elapsed().as_secs_f64()))
    })
}

fn print_summary(r: &BenchReport) {
    println!("== {} ({} s measured)", r.workload.name, r.measured_secs);
    println!(
        "produced  {:>12} msgs  {:>12.0} msg/s  {:>9.2} MB/s   errors {}",
        r.produced.messages, r.produced.messages_per_sec, r.produced.mb_per_sec, r.errors
    );
    println!(
        "consumed  {:>12} msgs  {:>12.0} msg/s  {:>9.2} MB/s",
        r.consumed.messages, r.consumed.messages_per_sec, r.consumed.mb_per_sec
    );
    println!("publish latency     {}", r.publish_latency.line());
    println!("end-to-end latency  {}", r.end_to_end_latency.line());
    if let Some(c) = &r.churn {
        println!(
            "under churn of {} partitions ({:.1} s): produced {:.0} msg/s, errors {}",
            c.partitions_churned, c.churn_secs, c.produced.messages_per_sec, c.errors
        );
        println!("publish latency     {}", c.publish_latency.line());
        println!("publish p99 under churn / without: {:.2}", c.publish_p99_ratio);
    }
}

/// Writes the JSON summary and the two `.hgrm` files next to it.
fn write_outputs(path: &Path, report: &BenchReport, measured: &Sample) -> Result<(), String> {
    let json = serde_json::to_string_pretty(report).map_err(|e| e.to_string())?;
    std::fs::write(path, json).map_err(|e| format!("{}: {e}", path.display()))?;
    let stem = path.with_extension("");
    for (suffix, h) in [("publish", &measured.publish), ("e2e", &measured.e2e)] {
        let hgrm = PathBuf::from(format!("{}-{suffix}.hgrm", stem.display()));
        stats::write_hgrm(h, &hgrm).map_err(|e| format!("{}: {e}", hgrm.display()))?;
    }
    eprintln!("wrote {} and {}-{{publish,e2e}}.hgrm", path.display(), stem.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        bench: BenchArgs,
    }

    #[test]
    fn flags_override_the_workload_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("w.toml");
        std::fs::write(&file, "partitions = 4\nproducers = 3\nrate = \"1000\"\n").unwrap();
        let args =
            Wrapper::try_parse_from(["x", "--workload", file.to_str().unwrap(), "--producers", "5", "--acks", "-1"])
                .unwrap();
        let w = args.bench.workload().unwrap();
        assert_eq!((w.partitions, w.producers, w.acks), (4, 5, -1));
        assert_eq!(w.rate, "1000");
    }

    #[test]
    fn bad_flags_get_a_clear_error() {
        let args = Wrapper::try_parse_from(["x", "--rate", "lots"]).unwrap();
        assert!(args.bench.workload().unwrap_err().contains("rate \"lots\""));
        let args = Wrapper::try_parse_from(["x", "--compression", "brotli"]).unwrap();
        assert!(args.bench.workload().unwrap_err().contains("compression"));
        assert!(Wrapper::try_parse_from(["x", "--partitions", "many"]).is_err());
        let args = Wrapper::try_parse_from(["x", "--workload", "/nonexistent.toml"]).unwrap();
        assert!(args.bench.workload().unwrap_err().contains("/nonexistent.toml"));
    }

    #[test]
    fn plan_spreads_tasks_and_splits_partitions_within_a_group() {
        let w = Workload { producers: 2, consumers: 3, consumer_groups: 2, threads: 2, ..Workload::default() };
        let plans = plan(&w, &[("t".to_owned(), 7)]);
        assert_eq!(plans.len(), 2);
        let consumers: Vec<&ConsumerSpec> = plans.iter().flat_map(|p| &p.consumers).collect();
        for group in 0..2 {
            let mut parts: Vec<i32> =
                consumers.iter().filter(|c| c.group == group).flat_map(|c| c.parts.iter().map(|(_, p)| *p)).collect();
            parts.sort();
            assert_eq!(parts, (0..7).collect::<Vec<_>>(), "group {group} covers every partition once");
        }
        assert_eq!(plans.iter().map(|p| p.producers.len()).sum::<usize>(), 2);
    }
}
