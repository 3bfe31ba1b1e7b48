//! The load generator: producer and consumer tasks spread over threads (one io_uring executor
//! each), recording publish latency (send → acknowledgement) and end-to-end latency (intended
//! send time carried in the first 8 bytes of each value → consumed) into HDR histograms.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::rc::Rc;
use std::sync::{Arc, Barrier, mpsc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};

use super::stats::{latency_us, new_histogram, record, wall_clock_us};
use super::workload::{KeyMode, Rate, Workload};
use crate::client::KafkaClient;
use crate::io::LocalSignal;
use crate::model::records::{BatchBuilder, EncodeOptions, compression_id, encode_batch, for_each_record};

/// How long producers wait for outstanding acknowledgements after the run.
const DRAIN: Duration = Duration::from_secs(10);
/// Most bytes of batches in one produce request (Kafka's `max.request.size` default).
const MAX_REQUEST_BYTES: usize = 1024 * 1024;
/// How long consumers keep reading after the run to catch up.
const CONSUMER_DRAIN: Duration = Duration::from_secs(3);

/// When the phases of a run begin and end (shared by all threads).
#[derive(Clone, Copy, Debug)]
pub struct Timeline {
    /// Producers start.
    pub start: Instant,
    /// Measurement starts.
    pub measure_from: Instant,
    /// Production stops.
    pub end: Instant,
}

impl Timeline {
    fn measuring(&self, at: Instant) -> bool {
        at >= self.measure_from && at < self.end
    }
}

/// Counters and histograms of one thread for one period.
#[derive(Clone)]
pub struct Sample {
    /// Messages acknowledged.
    pub produced: u64,
    /// Value bytes acknowledged.
    pub produced_bytes: u64,
    /// Messages consumed.
    pub consumed: u64,
    /// Value bytes consumed.
    pub consumed_bytes: u64,
    /// Failed produce requests.
    pub errors: u64,
    /// Publish latency (µs).
    pub publish: Histogram<u64>,
    /// End-to-end latency (µs).
    pub e2e: Histogram<u64>,
}

impl Sample {
    fn new() -> Self {
        Self {
            produced: 0,
            produced_bytes: 0,
            consumed: 0,
            consumed_bytes: 0,
            errors: 0,
            publish: new_histogram(),
            e2e: new_histogram(),
        }
    }

    /// Adds another sample into this one.
    pub fn merge(&mut self, other: &Sample) {
        self.produced += other.produced;
        self.produced_bytes += other.produced_bytes;
        self.consumed += other.consumed;
        self.consumed_bytes += other.consumed_bytes;
        self.errors += other.errors;
        let _ = self.publish.add(&other.publish);
        let _ = self.e2e.add(&other.e2e);
    }

    fn take(&mut self) -> Sample {
        std::mem::take(self)
    }
}

impl Default for Sample {
    fn default() -> Self {
        Self::new()
    }
}

/// What worker threads report to the coordinating thread.
pub enum Report {
    /// The last second of one thread.
    Interval(Sample),
    /// Everything a thread measured in the measured window.
    Final(Sample),
    /// A thread hit an error that stops it.
    Failed(String),
}

struct ThreadState {
    interval: RefCell<Sample>,
    measured: RefCell<Sample>,
    timeline: Timeline,
}

impl ThreadState {
    fn with(&self, at: Instant, f: impl Fn(&mut Sample)) {
        f(&mut self.interval.borrow_mut());
        if self.timeline.measuring(at) {
            f(&mut self.measured.borrow_mut());
        }
    }
}

/// One producer's job.
#[derive(Clone, Debug)]
pub struct ProducerSpec {
    /// Index (for naming and seeding).
    pub id: usize,
    /// Topic-partitions it writes to.
    pub targets: Vec<(String, i32)>,
    /// Partitions per topic (for keyed partitioning).
    pub partitions: i32,
}

/// One consumer's job.
#[derive(Clone, Debug)]
pub struct ConsumerSpec {
    /// Index.
    pub id: usize,
    /// Group index.
    pub group: usize,
    /// Topic-partitions it reads.
    pub parts: Vec<(String, i32)>,
}

/// What a worker thread runs.
pub struct ThreadPlan {
    /// Producers.
    pub producers: Vec<ProducerSpec>,
    /// Consumers.
    pub consumers: Vec<ConsumerSpec>,
}

/// Runs one worker thread's producers and consumers until the end of the run.
pub fn run_thread(
    bootstrap: String,
    workload: Arc<Workload>,
    plan: ThreadPlan,
    ready: Arc<Barrier>,
    timeline: Arc<std::sync::Mutex<Option<Timeline>>>,
    reports: mpsc::Sender<Report>,
) {
    crate::io::block_on(async move {
        // Consumers position themselves at the end before anyone produces.
        let mut consumers = Vec::new();
        for spec in plan.consumers {
            match Consumer::connect(&bootstrap, spec).await {
                Ok(c) => consumers.push(c),
                Err(e) => {
                    let _ = reports.send(Report::Failed(e));
                    ready.wait();
                    ready.wait();
                    let _ = reports.send(Report::Final(Sample::default()));
                    return;
                }
            }
        }
        ready.wait(); // consumers positioned
        ready.wait(); // the coordinator has set the timeline
        let timeline = timeline.lock().expect("timeline").expect("set before the second barrier");
        let state = Rc::new(ThreadState {
            interval: RefCell::new(Sample::new()),
            measured: RefCell::new(Sample::new()),
            timeline,
        });
        let ticker = {
            let state = state.clone();
            let reports = reports.clone();
            crate::io::spawn(async move {
                loop {
                    crate::io::sleep(Duration::from_secs(1)).await;
                    let sample = state.interval.borrow_mut().take();
                    if reports.send(Report::Interval(sample)).is_err() {
                        return;
                    }
                }
            })
        };
        let mut tasks = Vec::new();
        for spec in plan.producers {
            tasks.push(crate::io::spawn(producer(bootstrap.clone(), workload.clone(), spec, state.clone())));
        }
        for consumer in consumers {
            tasks.push(crate::io::spawn(consumer.run(state.clone())));
        }
        for task in tasks {
            if let Ok(Err(e)) = task.await {
                let _ = reports.send(Report::Failed(e));
            }
        }
        drop(ticker);
        let last = state.interval.borrow_mut().take();
        let _ = reports.send(Report::Interval(last));
        let measured = state.measured.borrow_mut().take();
        let _ = reports.send(Report::Final(measured));
    });
}

/// A partly filled batch for one target.
struct Pending {
    builder: BatchBuilder,
    intended_us: Vec<u64>,
    opened: Instant,
}

async fn producer(
    bootstrap: String,
    workload: Arc<Workload>,
    spec: ProducerSpec,
    state: Rc<ThreadState>,
) -> Result<(), String> {
    let client = Rc::new(
        KafkaClient::connect(&bootstrap, &format!("moldau-bench-producer-{}", spec.id))
            .await
            .map_err(|e| e.to_string())?,
    );
    let timeline = state.timeline;
    let mut rng = rand::rngs::SmallRng::seed_from_u64(spec.id as u64 + 1);
    let filler: Vec<u8> = (0..workload.message_size + 4096).map(|_| rng.random()).collect();
    let per_producer_rate = match workload.rate() {
        Rate::Max => None,
        Rate::PerSecond(total) => Some(total / f64::from(workload.producers as u32)),
    };
    let compression = compression_id(&workload.compression).unwrap_or(0);
    let key_mode = workload.key_mode();
    let linger = Duration::from_millis(workload.linger_ms);
    let records_per_batch = (workload.batch_bytes / workload.message_size).max(1);
    let in_flight = Rc::new(Cell::new(0usize));
    let done = Rc::new(LocalSignal::new());
    let mut pending: HashMap<usize, Pending> = HashMap::new();
    let mut sticky = spec.id % spec.targets.len();
    let mut sent_messages: u64 = 0;
    let start_wall_us = wall_clock_us();
    let start = Instant::now();
    let mut key_buf = String::new();
    let mut filler_at = 0usize;

    // Closed batches wait here until a request slot is free; each request then takes the oldest
    // batch of every partition that has one, up to MAX_REQUEST_BYTES (as Kafka's Java producer
    // drains a broker's ready batches into one request). So a broker that answers slowly gets
    // fewer, larger requests, and the window grows from max_in_flight batches to
    // max_in_flight requests.
    let mut ready: BTreeMap<usize, VecDeque<Pending>> = BTreeMap::new();
    let mut ready_bytes = 0usize;
    let mut first_target = 0usize;

    let send = |batches: Vec<(usize, Pending)>| {
        let mut parts = Vec::with_capacity(batches.len());
        let mut counts = Vec::with_capacity(batches.len());
        for (target, batch) in batches {
            let (topic, partition) = spec.targets[target].clone();
            let built = batch.builder.finish();
            let bytes = if compression == 0 { built } else { recompress(&built, compression) };
            parts.push((topic, partition, bytes));
            counts.push(batch.intended_us);
        }
        in_flight.set(in_flight.get() + 1);
        let (client, state, in_flight, done, acks) =
            (client.clone(), state.clone(), in_flight.clone(), done.clone(), workload.acks);
        let message_size = workload.message_size as u64;
        crate::io::spawn_detached(async move {
            let results = client.produce_batches(parts, acks, 30_000).await;
            let now = Instant::now();
            let now_us = wall_clock_us();
            for (result, intended) in results.into_iter().zip(counts) {
                let count = intended.len() as u64;
                match result {
                    Ok(_) => state.with(now, |s| {
                        s.produced += count;
                        s.produced_bytes += count * message_size;
                        if acks != 0 {
                            for &intended in &intended {
                                record(&mut s.publish, latency_us(intended, now_us));
                            }
                        }
                    }),
                    Err(e) => {
                        tracing::warn!(error = %e, "produce failed");
                        state.with(now, |s| s.errors += 1);
                    }
                }
            }
            in_flight.set(in_flight.get() - 1);
            done.notify();
        });
    };
    // Sends requests while a slot is free and batches are ready.
    let mut dispatch = |ready: &mut BTreeMap<usize, VecDeque<Pending>>, ready_bytes: &mut usize| {
        while in_flight.get() < workload.max_in_flight && !ready.is_empty() {
            let targets: Vec<usize> =
                ready.range(first_target..).chain(ready.range(..first_target)).map(|(t, _)| *t).collect();
            let mut batches = Vec::new();
            let mut bytes = 0usize;
            for target in targets {
                let queue = ready.get_mut(&target).expect("listed");
                let size = queue.front().map_or(0, |b| b.builder.len());
                if !batches.is_empty() && bytes + size > MAX_REQUEST_BYTES {
                    break;
                }
                let batch = queue.pop_front().expect("non-empty");
                if queue.is_empty() {
                    ready.remove(&target);
                }
                bytes += size;
                first_target = target + 1;
                batches.push((target, batch));
            }
            *ready_bytes -= bytes;
            send(batches);
        }
    };
    let close = |ready: &mut BTreeMap<usize, VecDeque<Pending>>, ready_bytes: &mut usize, target, batch: Pending| {
        *ready_bytes += batch.builder.len();
        ready.entry(target).or_default().push_back(batch);
    };

    loop {
        let now = Instant::now();
        if now >= timeline.end {
            break;
        }
        // Messages due now: a batch's worth at max rate; on a fixed rate, those whose scheduled
        // time has come.
        let due = match per_producer_rate {
            None => records_per_batch as u64,
            Some(rate) => {
                let scheduled = ((now - start).as_secs_f64() * rate) as u64;
                scheduled.saturating_sub(sent_messages)
            }
        };
        if due == 0 {
            // Sleep to the next scheduled message or the oldest batch's linger deadline (or
            // until a request slot frees up for a ready batch).
            let next_message = per_producer_rate
                .map(|rate| start + Duration::from_secs_f64((sent_messages + 1) as f64 / rate))
                .unwrap_or(now);
            let linger_deadline = pending.values().map(|p| p.opened + linger).min().unwrap_or(next_message);
            let wake = next_message.min(linger_deadline).max(now + Duration::from_micros(200));
            if ready.is_empty() {
                crate::io::sleep(wake - now).await;
            } else {
                let _ = crate::io::timeout(wake - now, done.notified()).await;
                dispatch(&mut ready, &mut ready_bytes);
            }
        }
        for _ in 0..due {
            let intended_us = match per_producer_rate {
                None => wall_clock_us(),
                Some(rate) => start_wall_us + ((sent_messages as f64 / rate) * 1e6) as u64,
            };
            sent_messages += 1;
            let key: Option<&[u8]> = match &key_mode {
                KeyMode::None => None,
                KeyMode::Random => {
                    key_buf.clear();
                    key_buf.push_str(&format!("{:016x}", rng.random::<u64>()));
                    Some(key_buf.as_bytes())
                }
                KeyMode::Distinct(n) => {
                    key_buf.clear();
                    key_buf.push_str(&format!("key-{}", rng.random_range(0..*n)));
                    Some(key_buf.as_bytes())
                }
            };
            let target = match key {
                None => sticky,
                Some(k) => {
                    let topic_index = (sent_messages as usize) % workload.topics.max(1);
                    let partition = crate::client::partition_for_key(k, spec.partitions) as usize;
                    (topic_index * spec.partitions as usize + partition) % spec.targets.len()
                }
            };
            filler_at = (filler_at + 97) % 4096;
            let mut value = filler[filler_at..filler_at + workload.message_size].to_vec();
            value[..8].copy_from_slice(&intended_us.to_be_bytes());
            let batch = pending.entry(target).or_insert_with(|| Pending {
                builder: BatchBuilder::new(workload.batch_bytes, (intended_us / 1000) as i64),
                intended_us: Vec::with_capacity(records_per_batch),
                opened: Instant::now(),
            });
            batch.builder.push(key, &value, (intended_us / 1000) as i64);
            batch.intended_us.push(intended_us);
            if batch.builder.len() >= workload.batch_bytes {
                let full = pending.remove(&target).expect("present");
                close(&mut ready, &mut ready_bytes, target, full);
                if key.is_none() {
                    sticky = (sticky + 1) % spec.targets.len();
                }
                dispatch(&mut ready, &mut ready_bytes);
                // A full request's worth waiting: wait for a slot (the producer's buffer is
                // full, as Kafka's blocks at `buffer.memory`).
                while ready_bytes >= MAX_REQUEST_BYTES {
                    done.notified().await;
                    dispatch(&mut ready, &mut ready_bytes);
                }
            }
        }
        // Batches that waited long enough go out part-filled.
        let now = Instant::now();
        let ripe: Vec<usize> = pending.iter().filter(|(_, p)| now >= p.opened + linger).map(|(t, _)| *t).collect();
        for target in ripe {
            let batch = pending.remove(&target).expect("present");
            close(&mut ready, &mut ready_bytes, target, batch);
            if target == sticky {
                sticky = (sticky + 1) % spec.targets.len();
            }
        }
        dispatch(&mut ready, &mut ready_bytes);
        while ready_bytes >= MAX_REQUEST_BYTES {
            done.notified().await;
            dispatch(&mut ready, &mut ready_bytes);
        }
    }
    for (target, batch) in pending.drain() {
        close(&mut ready, &mut ready_bytes, target, batch);
    }
    let deadline = Instant::now() + DRAIN;
    while (!ready.is_empty() || in_flight.get() > 0) && Instant::now() < deadline {
        dispatch(&mut ready, &mut ready_bytes);
        let _ = crate::io::timeout(Duration::from_millis(100), done.notified()).await;
    }
    Ok(())
}

/// Re-encodes an uncompressed batch with `compression` (the protocol library's encoder).
fn recompress(built: &Bytes, compression: i16) -> Bytes {
    let mut records = Vec::new();
    let _ = for_each_record(built, |r| {
        records.push((r.key.map(Bytes::copy_from_slice), r.value.map(Bytes::copy_from_slice)))
    });
    encode_batch(&records, &EncodeOptions { compression, timestamp_ms: None }).freeze()
}

struct Consumer {
    client: KafkaClient,
    positions: Vec<(String, i32, i64)>,
}

impl Consumer {
    async fn connect(bootstrap: &str, spec: ConsumerSpec) -> Result<Self, String> {
        let client = KafkaClient::connect(bootstrap, &format!("moldau-bench-consumer-{}-{}", spec.group, spec.id))
            .await
            .map_err(|e| e.to_string())?;
        let mut positions = Vec::new();
        for (topic, partition) in spec.parts {
            let end = client.list_offset(&topic, partition, -1).await.map_err(|e| e.to_string())?.0;
            positions.push((topic, partition, end));
        }
        Ok(Self { client, positions })
    }

    async fn run(mut self, state: Rc<ThreadState>) -> Result<(), String> {
        if self.positions.is_empty() {
            return Ok(());
        }
        let stop = state.timeline.end + CONSUMER_DRAIN;
        while Instant::now() < stop {
            let results = match self.client.fetch_many(&self.positions, 4 << 20, 100).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "fetch failed");
                    crate::io::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let now = Instant::now();
            let now_us = wall_clock_us();
            for (position, result) in self.positions.iter_mut().zip(results) {
                let Ok(fetched) = result else { continue };
                let mut next = position.2;
                let mut count = 0u64;
                let mut bytes = 0u64;
                let mut latencies = Vec::new();
                let _ = for_each_record(&fetched.records, |r| {
                    if r.offset < position.2 {
                        return;
                    }
                    next = r.offset + 1;
                    count += 1;
                    if let Some(v) = r.value {
                        bytes += v.len() as u64;
                        if v.len() >= 8 {
                            let intended = u64::from_be_bytes(v[..8].try_into().expect("8 bytes"));
                            latencies.push(latency_us(intended, now_us));
                        }
                    }
                });
                position.2 = next;
                if count > 0 {
                    state.with(now, |s| {
                        s.consumed += count;
                        s.consumed_bytes += bytes;
                        for &l in &latencies {
                            record(&mut s.e2e, l);
                        }
                    });
                }
            }
        }
        Ok(())
    }
}
