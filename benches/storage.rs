//! Storage engine benchmarks (criterion), plus an HDR-histogram latency report for durable
//! appends under `flush = always`.
//!
//! Run: `cargo bench --bench storage` (data goes under target/, on the real disk). Results and
//! the machine's own limits measured with fio the same day are in docs/performance.md.

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use moldau::io::{AlignedBuf, DirectFile, Faults, OpenMode, PAGE_BYTES};
use moldau::model::batch::validate_all;
use moldau::model::records::{EncodeOptions, KeyValue, encode_batch};
use moldau::storage::{FlushPolicy, Log, LogConfig, LogContext, ReadCache};

fn bench_dir(name: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-storage");
    std::fs::create_dir_all(&root).unwrap();
    let dir = root.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// One batch of about `bytes` bytes (records of 1 KiB, or one record when smaller).
fn batch_of(bytes: usize) -> BytesMut {
    let record_bytes = bytes.min(1024);
    let records = (bytes / record_bytes).max(1);
    let values: Vec<KeyValue> =
        (0..records).map(|i| (None, Some(Bytes::from(vec![(i % 251) as u8; record_bytes - 16])))).collect();
    encode_batch(&values, &EncodeOptions::default())
}

async fn open(dir: &std::path::Path, flush: FlushPolicy, cache_bytes: u64) -> Log {
    let ctx = LogContext { cache: Rc::new(RefCell::new(ReadCache::new(cache_bytes))), faults: Faults::none() };
    let config = LogConfig { flush, ..LogConfig::default() };
    Log::open(dir, config, &ctx).await.unwrap()
}

/// Appends `copies` (pre-built, so building them is not timed) one after another, each waiting
/// for the previous one's acknowledgement as a produce with acks=1 would under the policy. Between
/// appends the task yields, as a shard does between requests, so the flusher writes behind.
async fn append_all(log: &Log, copies: Vec<BytesMut>, flush: FlushPolicy) {
    for batch in copies {
        let spans = validate_all(&batch, usize::MAX).unwrap();
        let info = log.append(batch, &spans, 0, 0).unwrap();
        if flush == FlushPolicy::Always {
            info.durable.wait().await.unwrap();
        } else {
            log.wait_for_write_room().await;
            moldau::io::yield_now().await;
        }
    }
    log.flush().await.unwrap();
}

fn append_throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("append_throughput");
    group.sample_size(10).measurement_time(Duration::from_secs(8));
    for &(label, size) in &[("16KiB", 16 << 10), ("64KiB", 64 << 10), ("1MiB", 1 << 20)] {
        for flush in [FlushPolicy::Always, FlushPolicy::IntervalMs(5), FlushPolicy::Never] {
            let template = batch_of(size);
            let batches_per_iter = ((64 << 20) / template.len()).max(1);
            group.throughput(Throughput::Bytes((template.len() * batches_per_iter) as u64));
            let id = BenchmarkId::new(label, flush.to_string());
            group.bench_function(id, |b| {
                let runtime = moldau::io::new_runtime().unwrap();
                let dir = bench_dir(&format!("append-{label}-{}", flush.to_string().replace(':', "-")));
                let log = runtime.block_on(open(&dir, flush, 256 << 20));
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let copies: Vec<BytesMut> = (0..batches_per_iter).map(|_| template.clone()).collect();
                        let start = Instant::now();
                        runtime.block_on(append_all(&log, copies, flush));
                        total += start.elapsed();
                    }
                    total
                });
                runtime.block_on(log.delete()).unwrap();
            });
        }
    }
    group.finish();
}

fn append_latency(c: &mut Criterion) {
    let mut group = c.benchmark_group("append_latency_always");
    group.sample_size(20).measurement_time(Duration::from_secs(5));
    for &(label, size) in &[("100B", 100), ("1KiB", 1024), ("4KiB", 4096)] {
        let template = batch_of(size);
        group.bench_function(label, |b| {
            let runtime = moldau::io::new_runtime().unwrap();
            let dir = bench_dir(&format!("latency-{label}"));
            let log = runtime.block_on(open(&dir, FlushPolicy::Always, 64 << 20));
            b.iter_custom(|iters| {
                let copies: Vec<BytesMut> = (0..iters).map(|_| template.clone()).collect();
                let start = Instant::now();
                runtime.block_on(async {
                    for batch in copies {
                        let spans = validate_all(&batch, usize::MAX).unwrap();
                        log.append(batch, &spans, 0, 0).unwrap().durable.wait().await.unwrap();
                    }
                });
                start.elapsed()
            });
            runtime.block_on(log.delete()).unwrap();
        });
    }
    group.finish();
}

fn read_throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("read_throughput");
    group.sample_size(10).measurement_time(Duration::from_secs(6));
    let total_bytes = 256usize << 20;
    for (label, cache_bytes) in [("cache", 512u64 << 20), ("disk", 0)] {
        let runtime = moldau::io::new_runtime().unwrap();
        let dir = bench_dir(&format!("read-{label}"));
        let log = runtime.block_on(open(&dir, FlushPolicy::Never, cache_bytes));
        let template = batch_of(64 << 10);
        let copies: Vec<BytesMut> = (0..total_bytes / template.len()).map(|_| template.clone()).collect();
        runtime.block_on(append_all(&log, copies, FlushPolicy::Never));
        let end = log.log_end_offset();
        group.throughput(Throughput::Bytes(total_bytes as u64));
        group.bench_function(label, |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let mut offset = 0;
                    let mut bytes = 0usize;
                    while offset < end {
                        let result = log.read(offset, 1 << 20, i64::MAX).await.unwrap();
                        bytes += result.bytes();
                        let last = result.batches.last().unwrap();
                        let header = moldau::model::batch::BatchHeader::parse(last).unwrap();
                        offset = header.last_offset() + 1;
                    }
                    bytes
                })
            });
        });
        runtime.block_on(log.delete()).unwrap();
    }
    group.finish();
}

fn batch_validation(c: &mut Criterion) {
    let mut group = c.benchmark_group("batch_validation");
    for &(label, size) in &[("1KiB", 1 << 10), ("16KiB", 16 << 10), ("1MiB", 1 << 20)] {
        let batch = batch_of(size);
        group.throughput(Throughput::Bytes(batch.len() as u64));
        group.bench_function(label, |b| b.iter(|| validate_all(std::hint::black_box(&batch), usize::MAX).unwrap()));
    }
    group.finish();
}

/// Prints `what`: p50, p90, p99, p99.9 and max of `histogram` (nanoseconds), in microseconds.
fn print_percentiles(what: &str, histogram: &hdrhistogram::Histogram<u64>) {
    let us = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{what}: p50 {:.1} us  p90 {:.1} us  p99 {:.1} us  p99.9 {:.1} us  max {:.1} us",
        us(0.5),
        us(0.9),
        us(0.99),
        us(0.999),
        histogram.max() as f64 / 1000.0
    );
}

/// Durable-append latency percentiles (HDR histogram) for small batches under `flush = always`,
/// to compare with fio's fdatasync percentiles.
fn latency_percentiles() {
    let runtime = moldau::io::new_runtime().unwrap();
    // 4 KiB twice, side by side: zero-filling ahead of the data off (the default: appends fill
    // fallocated, unwritten blocks) and on.
    for &(label, size, prepare) in &[("100B", 100usize, true), ("4KiB", 4096, false), ("4KiB", 4096, true)] {
        let dir = bench_dir(&format!("hdr-{label}-{prepare}"));
        let ctx = LogContext { cache: Rc::new(RefCell::new(ReadCache::new(64 << 20))), faults: Faults::none() };
        let prepare_ahead_bytes = if prepare { moldau::storage::PREPARE_AHEAD_BYTES } else { 0 };
        let config = LogConfig { flush: FlushPolicy::Always, prepare_ahead_bytes, ..LogConfig::default() };
        let log = runtime.block_on(Log::open(&dir, config, &ctx)).unwrap();
        let template = batch_of(size);
        let mut histogram = hdrhistogram::Histogram::<u64>::new(3).unwrap();
        runtime.block_on(async {
            for i in 0..20_000 {
                let batch = template.clone();
                let start = Instant::now();
                let spans = validate_all(&batch, usize::MAX).unwrap();
                log.append(batch, &spans, 0, 0).unwrap().durable.wait().await.unwrap();
                if i >= 1000 {
                    histogram.record(start.elapsed().as_nanos() as u64).unwrap();
                }
            }
        });
        let zero_fill = if prepare { "zero-filled ahead" } else { "into fallocated blocks" };
        print_percentiles(&format!("durable append {label} (flush=always, {zero_fill}, 19000 samples)"), &histogram);
        runtime.block_on(log.delete()).unwrap();
    }
}

/// Durable 4 KiB appends into a log under retention (16 MiB segments, 32 MiB kept, retention
/// enforced every 500 appends as the shard's ticker would): with the removed segments' files
/// written again (recycled) against unlinked and new ones allocated each time, side by side.
fn retention_percentiles() {
    let runtime = moldau::io::new_runtime().unwrap();
    for recycle_segments in [false, true] {
        let label = if recycle_segments { "recycled" } else { "deleted" };
        let dir = bench_dir(&format!("hdr-retention-{label}"));
        let ctx = LogContext { cache: Rc::new(RefCell::new(ReadCache::new(64 << 20))), faults: Faults::none() };
        let config = LogConfig {
            segment_bytes: 16 << 20,
            retention_bytes: 32 << 20,
            retention_ms: -1,
            recycle_segments,
            ..LogConfig::default()
        };
        let log = runtime.block_on(Log::open(&dir, config, &ctx)).unwrap();
        let template = batch_of(4096);
        let mut histogram = hdrhistogram::Histogram::<u64>::new(3).unwrap();
        let mut removed = 0;
        runtime.block_on(async {
            for i in 0..40_000 {
                if i % 500 == 0 {
                    removed += log.enforce_retention(moldau::io::now_ms()).await.unwrap().segments_deleted;
                }
                let batch = template.clone();
                let start = Instant::now();
                let spans = validate_all(&batch, usize::MAX).unwrap();
                log.append(batch, &spans, 0, 0).unwrap().durable.wait().await.unwrap();
                if i >= 10_000 {
                    histogram.record(start.elapsed().as_nanos() as u64).unwrap();
                }
            }
        });
        let what = format!("durable append 4KiB under retention, segments {label} ({removed} removed, 30000 samples)");
        print_percentiles(&what, &histogram);
        runtime.block_on(log.delete()).unwrap();
    }
}

/// The baseline for the durable-append percentiles, measured in the same run: 4 KiB O_DIRECT
/// writes (`moldau::io::DirectFile` on the same ring, sequential, one page each) each followed by
/// fdatasync, into blocks already written and into fallocated (unwritten) ones: what the disk and
/// the runtime cost without the log. Each write rewrites the page it lands on, as fio's
/// overwrite mode does. The same again with `RWF_DSYNC` writes (one operation, no fdatasync).
fn raw_write_sync_percentiles() {
    let runtime = moldau::io::new_runtime().unwrap();
    for (written, dsync) in [(true, false), (true, true), (false, false), (false, true)] {
        let label = if written { "written" } else { "unwritten" };
        let how = if dsync { "RWF_DSYNC write" } else { "write + fdatasync" };
        let dir = bench_dir(&format!("raw-{label}-{dsync}"));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("file");
        let bytes: u64 = 80 << 20;
        let histogram = runtime.block_on(async {
            let file = DirectFile::open(&path, OpenMode::CreateOrOpen, Faults::none()).await.unwrap();
            let mut page = AlignedBuf::with_capacity(PAGE_BYTES);
            page.extend_from_slice(&[7u8; PAGE_BYTES]);
            if written {
                let mut chunk = AlignedBuf::with_capacity(1 << 20);
                chunk.extend_from_slice(&vec![1u8; 1 << 20]);
                for i in 0..bytes >> 20 {
                    let (result, back) = file.write_all_at(chunk, i << 20).await;
                    result.unwrap();
                    chunk = back;
                }
            } else {
                file.allocate(0, bytes).await.unwrap();
            }
            file.sync_data().await.unwrap();
            let mut histogram = hdrhistogram::Histogram::<u64>::new(3).unwrap();
            for i in 0..20_000u64 {
                let start = Instant::now();
                let position = i * PAGE_BYTES as u64;
                if dsync {
                    let (result, back) = file.write_all_at_durable(page, position).await;
                    result.unwrap();
                    page = back;
                } else {
                    let (result, back) = file.write_all_at(page, position).await;
                    result.unwrap();
                    page = back;
                    file.sync_data().await.unwrap();
                }
                if i >= 1000 {
                    histogram.record(start.elapsed().as_nanos() as u64).unwrap();
                }
            }
            histogram
        });
        print_percentiles(&format!("raw 4KiB {how} into {label} blocks (19000 samples)"), &histogram);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Writes `mib` MiB of 1 KiB records over `keys` keys (16 records a batch) into `log`.
async fn append_keyed(log: &Log, mib: usize, keys: usize, round: usize) {
    let batches = mib * 1024 / 16;
    for b in 0..batches {
        let values: Vec<KeyValue> = (0..16)
            .map(|j| {
                let key = (b * 16 + j) % keys;
                (Some(Bytes::from(format!("key-{key}"))), Some(Bytes::from(vec![(round % 251) as u8; 1000])))
            })
            .collect();
        let batch = encode_batch(&values, &EncodeOptions::default());
        let spans = validate_all(&batch, usize::MAX).unwrap();
        log.append(batch, &spans, 0, 0).unwrap();
        log.wait_for_write_room().await;
    }
    log.flush().await.unwrap();
}

/// Durable 4 KiB appends to `log` until `stop` says so (at most `max` samples).
async fn durable_appends(log: &Log, max: usize, stop: impl Fn() -> bool) -> hdrhistogram::Histogram<u64> {
    let template = batch_of(4096);
    let mut histogram = hdrhistogram::Histogram::<u64>::new(3).unwrap();
    for _ in 0..max {
        if stop() {
            break;
        }
        let batch = template.clone();
        let start = Instant::now();
        let spans = validate_all(&batch, usize::MAX).unwrap();
        log.append(batch, &spans, 0, 0).unwrap().durable.wait().await.unwrap();
        histogram.record(start.elapsed().as_nanos() as u64).unwrap();
    }
    histogram
}

/// The log cleaner: its throughput over 64 MiB of 1 KiB records on 8 192 keys (8 MiB
/// segments), and the durable 4 KiB append percentiles of another log on the same shard alone
/// and while the cleaner runs paced at 32 MiB/s, measured in the same run.
fn compaction_percentiles() {
    let runtime = moldau::io::new_runtime().unwrap();
    runtime.block_on(async {
        let ctx = LogContext { cache: Rc::new(RefCell::new(ReadCache::new(64 << 20))), faults: Faults::none() };
        let config = LogConfig {
            segment_bytes: 8 << 20,
            flush: FlushPolicy::Never,
            compact: true,
            delete_retention: false,
            min_cleanable_dirty_ratio: 0.0,
            ..LogConfig::default()
        };
        let source = Log::open(&bench_dir("compact-source"), config, &ctx).await.unwrap();
        let victim = Log::open(
            &bench_dir("compact-victim"),
            LogConfig { flush: FlushPolicy::Always, ..LogConfig::default() },
            &ctx,
        )
        .await
        .unwrap();
        append_keyed(&source, 64, 8192, 0).await;
        let before = source.snapshot().size_bytes;
        let started = Instant::now();
        let end = source.log_end_offset();
        let outcome =
            source.compact(moldau::io::now_ms(), end, 1 << 22, &moldau::io::RateLimit::unlimited()).await.unwrap();
        let secs = started.elapsed().as_secs_f64();
        println!(
            "cleaner, unpaced: read {:.1} MiB and rewrote {} segments in {secs:.2} s ({:.0} MiB/s read); {:.1} -> {:.1} MiB",
            outcome.bytes_read as f64 / 1048576.0,
            outcome.segments_rewritten,
            outcome.bytes_read as f64 / 1048576.0 / secs,
            before as f64 / 1048576.0,
            source.snapshot().size_bytes as f64 / 1048576.0,
        );
        let alone = durable_appends(&victim, 10_000, || false).await;
        print_percentiles("durable append 4KiB, no cleaner running (10000 samples)", &alone);
        append_keyed(&source, 64, 8192, 1).await;
        let end = source.log_end_offset();
        let cleaner = source.clone();
        let task = moldau::io::spawn(async move {
            let pace = moldau::io::RateLimit::new(32.0 * 1048576.0, 1048576.0);
            cleaner.compact(moldau::io::now_ms(), end, 1 << 22, &pace).await.unwrap()
        });
        let during = durable_appends(&victim, 100_000, || task.is_finished()).await;
        let outcome = task.await.unwrap();
        print_percentiles(
            &format!(
                "durable append 4KiB while the cleaner runs at 32 MiB/s ({} segments, {} samples)",
                outcome.segments_rewritten,
                during.len()
            ),
            &during,
        );
        println!(
            "p99 while cleaning / alone: {:.2}x",
            during.value_at_quantile(0.99) as f64 / alone.value_at_quantile(0.99) as f64
        );
        source.delete().await.unwrap();
        victim.delete().await.unwrap();
    });
}

criterion_group!(benches, append_throughput, append_latency, read_throughput, batch_validation);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    // Only under `cargo bench` (which passes --bench): `cargo test` runs each criterion bench
    // once as a smoke test, and these are minutes of disk work.
    // `cargo bench --bench storage -- compaction` runs only the cleaner's section,
    let bench = std::env::args().any(|a| a == "--bench");
    // `-- raw` only the baseline.
    let only = |name: &str| std::env::args().any(|a| a == name);
    if bench && !only("compaction") {
        raw_write_sync_percentiles();
        if !only("raw") {
            latency_percentiles();
            retention_percentiles();
        }
    }
    if bench && !only("raw") {
        compaction_percentiles();
    }
}
