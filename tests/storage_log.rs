//! Partition log behaviour on real files: round trips through the cache and the disk, index and
//! time lookups, retention, recovery from torn and corrupted files, injected I/O faults, and the
//! O_DIRECT / io_uring plumbing.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use moldau::io::{FaultOp, Faults, block_on};
use moldau::model::batch::{self, validate_all};
use moldau::model::records::{EncodeOptions, KeyValue, encode_batch};
use moldau::storage::{FlushPolicy, Log, LogConfig, LogContext, ReadCache, StorageError, TimestampType};
use proptest::prelude::*;

mod common;
use common::TempDir;

/// A test's log directory (on a real disk: O_DIRECT needs one): removed when the test passes,
/// kept for a look when it fails.
fn test_dir(name: &str) -> TempDir {
    TempDir::new(name)
}

fn context(cache_bytes: u64) -> LogContext {
    LogContext { cache: Rc::new(RefCell::new(ReadCache::new(cache_bytes))), faults: Faults::none() }
}

fn config(segment_bytes: u64, flush: FlushPolicy) -> LogConfig {
    LogConfig { segment_bytes, flush, index_interval_bytes: 1024, ..LogConfig::default() }
}

/// A batch of `records` records whose values encode `seed`, with timestamp `ts`.
fn make_batch(seed: u64, records: usize, value_bytes: usize, ts: i64) -> BytesMut {
    let values: Vec<KeyValue> = (0..records)
        .map(|i| {
            let mut v = vec![(seed % 251) as u8; value_bytes];
            v.extend_from_slice(&seed.to_be_bytes());
            v.extend_from_slice(&(i as u32).to_be_bytes());
            (Some(Bytes::from(format!("key-{seed}-{i}"))), Some(Bytes::from(v)))
        })
        .collect();
    encode_batch(&values, &EncodeOptions { compression: 0, timestamp_ms: Some(ts) })
}

fn append(log: &Log, batch: BytesMut, now: i64) -> moldau::storage::AppendInfo {
    let spans = validate_all(&batch, usize::MAX).expect("valid batch");
    log.append(batch, &spans, 0, now).expect("append")
}

/// Reads everything from `from` to the log end, batch by batch.
async fn read_all(log: &Log, from: i64, max_bytes: usize) -> Vec<Bytes> {
    read_below(log, from, max_bytes, i64::MAX).await
}

/// Every batch from `from` whose base offset is below `upper` (what the partition layer asks
/// for when it serves only durable data).
async fn read_below(log: &Log, from: i64, max_bytes: usize, upper: i64) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut offset = from;
    loop {
        let result = log.read(offset, max_bytes, upper).await.expect("read");
        if result.batches.is_empty() {
            break;
        }
        for b in result.batches {
            let header = batch::BatchHeader::parse(&b).unwrap();
            assert!(header.last_offset() >= offset, "read returned a batch wholly before the offset");
            offset = header.last_offset() + 1;
            out.push(b);
        }
    }
    out
}

/// Asserts two batch lists are equal without dumping megabytes of bytes on failure.
fn assert_same_batches(got: &[Bytes], want: &[Bytes], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: batch count");
    if let Some(i) = (0..got.len()).find(|&i| got[i] != want[i]) {
        panic!("{what}: batch {i} differs ({} vs {} bytes)", got[i].len(), want[i].len());
    }
}

/// Stamps a copy of `batch` the way the log does, for comparisons.
fn stamped(batch: &BytesMut, base_offset: i64) -> Bytes {
    let mut copy = batch.clone();
    batch::stamp(&mut copy, base_offset, 0);
    copy.freeze()
}

#[test]
fn append_and_read_back_from_cache_and_disk_across_segments_and_reopen() {
    let dir = test_dir("roundtrip");
    block_on(async {
        // A tiny cache so most reads go to disk; small segments so the log rolls often.
        let ctx = context(8 * 1024);
        let log = Log::open(&dir, config(64 * 1024, FlushPolicy::Always), &ctx).await.unwrap();
        let mut expected = Vec::new();
        for seed in 0..200u64 {
            let batch = make_batch(seed, 1 + (seed as usize % 7), 10 + (seed as usize * 37) % 3000, 1000 + seed as i64);
            let info = append(&log, batch.clone(), 0);
            info.durable.wait().await.unwrap();
            expected.push(stamped(&batch, info.base_offset));
        }
        let snapshot = log.snapshot();
        assert!(snapshot.segments > 3, "expected several segments, got {}", snapshot.segments);
        assert_eq!(snapshot.durable_offset, snapshot.log_end_offset);
        assert_same_batches(&read_all(&log, 0, 10_000).await, &expected, "live read");
        log.close().await.unwrap();

        let ctx = context(8 * 1024);
        let log = Log::open(&dir, config(64 * 1024, FlushPolicy::Always), &ctx).await.unwrap();
        assert_eq!(log.log_end_offset(), snapshot.log_end_offset);
        assert_same_batches(&read_all(&log, 0, 1).await, &expected, "after reopen");
        // Reads from the middle start with the batch that holds the offset.
        for target in [0, 1, 17, 300, snapshot.log_end_offset - 1] {
            let result = log.read(target, 1, i64::MAX).await.unwrap();
            let header = batch::BatchHeader::parse(&result.batches[0]).unwrap();
            assert!(header.base_offset <= target && header.last_offset() >= target);
        }
        let err = log.read(snapshot.log_end_offset + 1, 100, i64::MAX).await.unwrap_err();
        assert!(matches!(err, StorageError::OffsetOutOfRange { .. }));
        log.close().await.unwrap();
    });
}

#[test]
fn time_index_finds_first_offset_at_or_after_a_timestamp() {
    let dir = test_dir("timeindex");
    block_on(async {
        let ctx = context(1024);
        let log = Log::open(&dir, config(32 * 1024, FlushPolicy::Never), &ctx).await.unwrap();
        let mut bases = Vec::new();
        for seed in 0..100u64 {
            let info = append(&log, make_batch(seed, 3, 500, 10_000 + 10 * seed as i64), 0);
            bases.push(info.base_offset);
        }
        log.flush().await.unwrap();
        for seed in [0u64, 1, 50, 99] {
            let found = log.offset_for_timestamp(10_000 + 10 * seed as i64).await.unwrap().unwrap();
            assert_eq!(found.offset, bases[seed as usize]);
            // A timestamp between two batches lands on the later one.
            if seed < 99 {
                let found = log.offset_for_timestamp(10_000 + 10 * seed as i64 + 5).await.unwrap().unwrap();
                assert_eq!(found.offset, bases[seed as usize + 1]);
            }
        }
        assert_eq!(log.offset_for_timestamp(1_000_000).await.unwrap(), None);
        let max = log.offset_of_max_timestamp().await.unwrap().unwrap();
        assert_eq!(max.timestamp, 10_000 + 990);
        assert_eq!(max.offset, bases[99]);
        log.close().await.unwrap();
        // And after reopening, from the saved time indexes.
        let log = Log::open(&dir, config(32 * 1024, FlushPolicy::Never), &context(1024)).await.unwrap();
        let found = log.offset_for_timestamp(10_000 + 10 * 42).await.unwrap().unwrap();
        assert_eq!(found.offset, bases[42]);
        log.close().await.unwrap();
    });
}

#[test]
fn log_append_time_overwrites_timestamps() {
    let dir = test_dir("logappend");
    block_on(async {
        let mut cfg = config(1 << 20, FlushPolicy::Always);
        cfg.timestamp_type = TimestampType::LogAppendTime;
        let log = Log::open(&dir, cfg, &context(1 << 20)).await.unwrap();
        let info = append(&log, make_batch(1, 2, 10, 5), 777_000);
        assert_eq!(info.log_append_time_ms, Some(777_000));
        info.durable.wait().await.unwrap();
        let read = log.read(0, 1000, i64::MAX).await.unwrap();
        let header = batch::validate(&read.batches[0]).expect("CRC rewritten");
        assert!(header.is_log_append_time());
        assert_eq!(header.max_timestamp, 777_000);
        log.close().await.unwrap();
    });
}

#[test]
fn retention_by_size_time_and_delete_records() {
    let dir = test_dir("retention");
    block_on(async {
        let mut cfg = config(16 * 1024, FlushPolicy::Never);
        cfg.retention_ms = -1;
        let log = Log::open(&dir, cfg.clone(), &context(1 << 20)).await.unwrap();
        for seed in 0..100u64 {
            append(&log, make_batch(seed, 1, 1000, 1_000 + seed as i64), 0);
        }
        log.flush().await.unwrap();
        let before = log.snapshot();
        assert!(before.segments >= 6);

        // Size: keep at most ~40 KiB.
        cfg.retention_bytes = 40 * 1024;
        log.set_config(cfg.clone());
        let outcome = log.enforce_retention(0).await.unwrap();
        assert!(outcome.segments_deleted > 0);
        let after = log.snapshot();
        assert!(after.size_bytes <= 40 * 1024 + 16 * 1024, "size {}", after.size_bytes);
        assert!(after.log_start_offset > 0);
        assert_eq!(after.log_end_offset, before.log_end_offset, "retention never touches the end");
        let err = log.read(0, 100, i64::MAX).await.unwrap_err();
        assert!(matches!(err, StorageError::OffsetOutOfRange { .. }));
        // Files of deleted segments are gone.
        let logs = std::fs::read_dir(&dir)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "log"))
            .count();
        assert_eq!(logs, after.segments);

        // DeleteRecords moves the start inside a segment; reads below it fail.
        let start = log.delete_records_before(after.log_start_offset + 30).await.unwrap();
        assert_eq!(start, after.log_start_offset + 30);
        assert!(log.read(start - 1, 100, i64::MAX).await.is_err());
        assert!(!log.read(start, 100, i64::MAX).await.unwrap().batches.is_empty());

        // Time: everything is older than 1 ms at "now" = 10_000_000, so all but a fresh active
        // segment goes, and the log start reaches the end.
        cfg.retention_ms = 1;
        cfg.retention_bytes = -1;
        log.set_config(cfg.clone());
        log.enforce_retention(10_000_000).await.unwrap();
        let end = log.snapshot();
        assert_eq!(end.log_start_offset, end.log_end_offset);
        log.close().await.unwrap();

        // The moved start survives a restart.
        let log = Log::open(&dir, cfg, &context(1 << 20)).await.unwrap();
        assert_eq!(log.log_start_offset(), end.log_start_offset);
        assert_eq!(log.log_end_offset(), end.log_end_offset);
        log.close().await.unwrap();
    });
}

/// Appends 40 batches of two records (about 1.4 KiB each) and flushes; returns each batch's
/// base offset and stamped bytes.
async fn forty_batches(log: &Log) -> Vec<(i64, Bytes)> {
    let mut expected = Vec::new();
    for seed in 0..40u64 {
        let batch = make_batch(seed, 2, 700, seed as i64);
        let info = append(log, batch.clone(), 0);
        expected.push((info.base_offset, stamped(&batch, info.base_offset)));
    }
    log.flush().await.unwrap();
    expected
}

#[test]
fn truncate_to_removes_the_tail_and_new_appends_reuse_offsets() {
    let dir = test_dir("truncate");
    block_on(async {
        let cfg = config(8 * 1024, FlushPolicy::Always);
        let log = Log::open(&dir, cfg.clone(), &context(4 * 1024)).await.unwrap();
        let mut expected = forty_batches(&log).await;
        // Offset 31 lies inside the batch based at 30: truncation cuts from 30.
        log.truncate_to(31).await.unwrap();
        assert_eq!(log.log_end_offset(), 30);
        expected.truncate(15);
        let batch = make_batch(999, 3, 100, 5);
        let info = append(&log, batch.clone(), 0);
        info.durable.wait().await.unwrap();
        assert_eq!(info.base_offset, 30);
        let mut want: Vec<Bytes> = expected.iter().map(|(_, b)| b.clone()).collect();
        want.push(stamped(&batch, 30));
        assert_same_batches(&read_all(&log, 0, 4096).await, &want, "after truncation");
        log.close().await.unwrap();
        let log = Log::open(&dir, cfg, &context(4 * 1024)).await.unwrap();
        assert_same_batches(&read_all(&log, 0, 4096).await, &want, "truncation is durable");
        log.close().await.unwrap();
    });
}

#[test]
fn truncating_at_a_segment_base_keeps_the_segment_before_it_whole() {
    let dir = test_dir("truncate-at-base");
    block_on(async {
        let cfg = config(8 * 1024, FlushPolicy::Always);
        let log = Log::open(&dir, cfg.clone(), &context(4 * 1024)).await.unwrap();
        let expected = forty_batches(&log).await;
        let segments = segment_files(&dir);
        assert!(segments.len() >= 3, "{segments:?}");
        // The third segment's base offset, from its file name.
        let base: i64 = segments[2].file_stem().unwrap().to_str().unwrap().parse().unwrap();
        log.truncate_to(base).await.unwrap();
        assert_eq!(log.log_end_offset(), base);
        let want: Vec<Bytes> = expected.iter().filter(|(o, _)| *o < base).map(|(_, b)| b.clone()).collect();
        assert_same_batches(&read_all(&log, 0, 4096).await, &want, "everything before the cut");
        assert_eq!(segment_files(&dir).len(), 2);
        let batch = make_batch(999, 3, 100, 5);
        let info = append(&log, batch.clone(), 0);
        info.durable.wait().await.unwrap();
        assert_eq!(info.base_offset, base);
        let mut want = want;
        want.push(stamped(&batch, base));
        log.close().await.unwrap();
        let log = Log::open(&dir, cfg, &context(4 * 1024)).await.unwrap();
        assert_same_batches(&read_all(&log, 0, 4096).await, &want, "after a reopen");
        log.close().await.unwrap();
    });
}

#[test]
fn start_at_empties_the_log_and_replica_appends_go_on_from_there_across_a_reopen() {
    let dir = test_dir("start-at");
    block_on(async {
        let cfg = config(8 * 1024, FlushPolicy::Always);
        let log = Log::open(&dir, cfg.clone(), &context(4 * 1024)).await.unwrap();
        for seed in 0..20u64 {
            append(&log, make_batch(seed, 2, 700, seed as i64), 0);
        }
        log.flush().await.unwrap();
        assert!(segment_files(&dir).len() > 1);
        // A follower that ended at 40 while its leader's log starts at 500.
        log.start_at(500).await.unwrap();
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (500, 500));
        assert!(log.read(40, 4096, i64::MAX).await.is_err(), "nothing below the new start");
        assert_eq!(segment_files(&dir).len(), 1, "one empty segment left");
        // Starting over leaves no gap: the log is still checked as one without any.
        assert!(!dir.join("offset-gaps").exists() && !dir.join("cleaner-offset-checkpoint").exists());
        let batch = stamped(&make_batch(77, 3, 100, 5), 500);
        let spans = validate_all(&batch, usize::MAX).unwrap();
        let info = log.append_replica(batch.clone(), &spans, 0).unwrap();
        info.durable.wait().await.unwrap();
        assert_eq!(info.base_offset, 500);
        log.close().await.unwrap();
        let log = Log::open(&dir, cfg, &context(4 * 1024)).await.unwrap();
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (500, 503));
        assert_same_batches(&read_all(&log, 500, 4096).await, &[batch], "after a reopen");
        log.close().await.unwrap();
    });
}

/// Builds a log of `batches` batches, closes it, and returns the stamped batches.
fn build_closed_log(dir: &Path, batches: u64, segment_bytes: u64) -> Vec<Bytes> {
    block_on(async {
        let log = Log::open(dir, config(segment_bytes, FlushPolicy::Always), &context(1 << 20)).await.unwrap();
        let mut expected = Vec::new();
        for seed in 0..batches {
            let batch = make_batch(seed, 1 + seed as usize % 4, 50 + (seed as usize * 131) % 900, seed as i64);
            let info = append(&log, batch.clone(), 0);
            expected.push(stamped(&batch, info.base_offset));
        }
        log.close().await.unwrap();
        expected
    })
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    files.sort();
    files
}

/// Reopens and checks that exactly the batches before the damage survive.
fn reopen_and_check_prefix(dir: &Path, expected: &[Bytes], segment_bytes: u64) -> usize {
    block_on(async {
        let log = Log::open(dir, config(segment_bytes, FlushPolicy::Always), &context(1 << 20)).await.unwrap();
        let got = read_all(&log, 0, 1 << 20).await;
        assert!(got.len() <= expected.len());
        assert_same_batches(&got, &expected[..got.len()], "surviving batches are byte-identical");
        let end = got.last().map_or(0, |b| batch::BatchHeader::parse(b).unwrap().last_offset() + 1);
        assert_eq!(log.log_end_offset(), end, "nothing after the damage is served");
        // The log keeps working after recovery.
        let info = append(&log, make_batch(7777, 1, 10, 1), 0);
        info.durable.wait().await.unwrap();
        assert_eq!(info.base_offset, end);
        log.close().await.unwrap();
        got.len()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn round_trip_over_random_batch_and_segment_sizes(
        sizes in proptest::collection::vec((1usize..20, 0usize..6000), 1..60),
        segment_kib in 4u64..256,
        cache_kib in 0u64..64,
        flush in prop_oneof![Just(FlushPolicy::Always), Just(FlushPolicy::Never), Just(FlushPolicy::IntervalMs(2))],
    ) {
        let dir = test_dir("prop-roundtrip");
        let got = block_on(async {
            let log = Log::open(&dir, config(segment_kib * 1024, flush), &context(cache_kib * 1024)).await.unwrap();
            let mut expected = Vec::new();
            for (seed, (records, value)) in sizes.iter().enumerate() {
                let batch = make_batch(seed as u64, *records, *value, seed as i64);
                let info = append(&log, batch.clone(), 0);
                expected.push(stamped(&batch, info.base_offset));
            }
            log.flush().await.unwrap();
            let live = read_all(&log, 0, 3000).await;
            log.close().await.unwrap();
            let log = Log::open(&dir, config(segment_kib * 1024, flush), &context(cache_kib * 1024)).await.unwrap();
            let reopened = read_all(&log, 0, 3000).await;
            log.close().await.unwrap();
            (expected, live, reopened)
        });
        assert_same_batches(&got.1, &got.0, "live");
        assert_same_batches(&got.2, &got.0, "reopened");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn recovery_after_cutting_the_last_segment_anywhere(cut_seed in any::<u64>()) {
        let dir = test_dir("prop-cut");
        let expected = build_closed_log(&dir, 60, 1 << 30);
        let files = segment_files(&dir);
        let last = files.last().unwrap();
        let len = std::fs::metadata(last).unwrap().len();
        let cut = cut_seed % len;
        let f = std::fs::OpenOptions::new().write(true).open(last).unwrap();
        f.set_len(cut).unwrap();
        drop(f);
        // Index files may now point past the cut: recovery must cope.
        let survivors = reopen_and_check_prefix(&dir, &expected, 1 << 30);
        // Every batch wholly before the cut survives.
        let whole_before_cut = expected.iter().scan(0u64, |pos, b| { *pos += b.len() as u64; Some(*pos) }).filter(|end| *end <= cut).count();
        prop_assert_eq!(survivors, whole_before_cut);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_flipped_byte_is_never_served_and_everything_before_it_is(
        position_seed in any::<u64>(),
        flip in 1u8..=255,
        segment_kib in prop_oneof![Just(8u64), Just(1u64 << 20)],
        crashed in any::<bool>(),
        gapped in any::<bool>(),
    ) {
        let dir = test_dir("prop-flip");
        let expected = build_closed_log(&dir, 60, segment_kib * 1024);
        if gapped {
            // As if compaction had run: offsets may skip, so a raised base offset is not damage.
            std::fs::write(dir.join("offset-gaps"), b"").unwrap();
        }
        if crashed {
            // As if the broker had died: no clean-shutdown marker, so recovery checks the whole
            // active segment.
            std::fs::remove_file(dir.join("clean-shutdown")).unwrap();
        }
        let files = segment_files(&dir);
        // Bytes of data per file: sealed files hold exactly their data; the active one is
        // preallocated past it.
        let total: u64 = expected.iter().map(|b| b.len() as u64).sum();
        let mut lens: Vec<u64> = files.iter().map(|f| std::fs::metadata(f).unwrap().len()).collect();
        let sealed: u64 = lens[..lens.len() - 1].iter().sum();
        *lens.last_mut().unwrap() = total - sealed;
        let global = position_seed % total;
        let (mut file_index, mut target) = (0, global);
        while target >= lens[file_index] {
            target -= lens[file_index];
            file_index += 1;
        }
        let mut bytes = std::fs::read(&files[file_index]).unwrap();
        bytes[target as usize] ^= flip;
        std::fs::write(&files[file_index], &bytes).unwrap();
        let (hit, offset_in_batch) = {
            let mut start = 0u64;
            let mut found = None;
            for (i, b) in expected.iter().enumerate() {
                if global < start + b.len() as u64 {
                    found = Some((i, global - start));
                    break;
                }
                start += b.len() as u64;
            }
            found.unwrap()
        };
        // Read everything sequentially after reopening, stopping at the first error.
        let served = block_on(async {
            let log = Log::open(&dir, config(segment_kib * 1024, FlushPolicy::Always), &context(1 << 20)).await.unwrap();
            let mut served = Vec::new();
            let mut offset = 0;
            while let Ok(result) = log.read(offset, 1 << 20, i64::MAX).await {
                if result.batches.is_empty() {
                    break;
                }
                for b in result.batches {
                    offset = batch::BatchHeader::parse(&b).unwrap().last_offset() + 1;
                    served.push(b);
                }
            }
            log.close().await.unwrap();
            served
        });
        if (12..16).contains(&offset_in_batch) || (gapped && offset_in_batch < 8) {
            // The partition leader epoch is neither under the CRC nor checkable: Kafka's format
            // cannot detect damage there, so only require the batches before it. A damaged base
            // offset is caught in a log without gaps (each batch begins where the one before
            // ended); in one with gaps, only when it went down.
            assert_same_batches(&served[..hit], &expected[..hit], "before the damage");
        } else {
            assert_same_batches(&served, &expected[..hit], "served exactly the batches before the damage");
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}

#[test]
fn missing_or_damaged_indexes_are_rebuilt() {
    let dir = test_dir("indexes");
    let expected = build_closed_log(&dir, 80, 16 * 1024);
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        match path.extension().and_then(|x| x.to_str()) {
            Some("index") if path.to_string_lossy().contains("000000000") => {
                std::fs::write(&path, b"garbage!").unwrap();
            }
            Some("timeindex") => std::fs::remove_file(&path).unwrap(),
            _ => {}
        }
    }
    assert_eq!(reopen_and_check_prefix(&dir, &expected, 16 * 1024), expected.len());
}

#[test]
fn failed_write_fails_the_append_and_keeps_durable_data_readable() {
    let dir = test_dir("fault-write");
    block_on(async {
        let ctx = context(1 << 20);
        let log = Log::open(&dir, config(1 << 20, FlushPolicy::Always), &ctx).await.unwrap();
        let good = make_batch(1, 2, 100, 1);
        let info = append(&log, good.clone(), 0);
        info.durable.wait().await.unwrap();
        ctx.faults.fail_next(FaultOp::Write, libc::EIO);
        let info = append(&log, make_batch(2, 2, 100, 2), 0);
        let err = info.durable.wait().await.unwrap_err();
        assert!(matches!(err, StorageError::Offline(_)), "{err}");
        assert!(log.snapshot().offline);
        // No more appends, the durable offset stays where it was, and what is below it reads.
        let spans = validate_all(&good, usize::MAX).unwrap();
        assert!(matches!(log.append(good.clone(), &spans, 0, 0), Err(StorageError::Offline(_))));
        assert_eq!(log.durable_offset(), 2);
        let read = read_below(&log, 0, 1 << 20, log.durable_offset()).await;
        assert_eq!(read, vec![stamped(&good, 0)]);
        let _ = log.close().await;
        // After a restart, the log is healthy again from its durable state.
        let log = Log::open(&dir, config(1 << 20, FlushPolicy::Always), &context(1 << 20)).await.unwrap();
        assert_eq!(log.log_end_offset(), 2);
        log.close().await.unwrap();
    });
}

#[test]
fn failed_fdatasync_is_never_acknowledged() {
    let dir = test_dir("fault-sync");
    block_on(async {
        let ctx = context(1 << 20);
        let log = Log::open(&dir, config(1 << 20, FlushPolicy::Always), &ctx).await.unwrap();
        ctx.faults.fail_next(FaultOp::Sync, libc::EIO);
        let info = append(&log, make_batch(1, 1, 10, 1), 0);
        assert!(info.durable.wait().await.is_err());
        assert_eq!(log.snapshot().durable_offset, 0, "a failed sync never counts as durable");
        assert!(log.is_offline());
        let _ = log.close().await;
    });
}

#[test]
fn disk_full_is_an_error_not_a_panic() {
    let dir = test_dir("fault-enospc");
    block_on(async {
        let ctx = context(1 << 20);
        let mut cfg = config(8 * 1024, FlushPolicy::Always);
        cfg.preallocate = true;
        let log = Log::open(&dir, cfg, &ctx).await.unwrap();
        let info = append(&log, make_batch(1, 1, 5000, 1), 0);
        info.durable.wait().await.unwrap();
        // The next batch rolls a new segment whose preallocation hits a full disk.
        ctx.faults.fail_always(FaultOp::Allocate, libc::ENOSPC);
        let info = append(&log, make_batch(2, 1, 5000, 1), 0);
        let err = info.durable.wait().await.unwrap_err();
        assert!(matches!(err, StorageError::Offline(ref m) if m.contains("No space")), "{err}");
        let _ = log.close().await;
    });
}

#[test]
fn stalled_fdatasync_groups_concurrent_appends_into_one_commit() {
    let dir = test_dir("group-commit");
    block_on(async {
        let ctx = context(1 << 20);
        let log = Log::open(&dir, config(1 << 30, FlushPolicy::Always), &ctx).await.unwrap();
        ctx.faults.stall_syncs(std::time::Duration::from_millis(50));
        let syncs_before = ctx.faults.performed(FaultOp::Sync);
        let mut durables = Vec::new();
        for seed in 0..100 {
            durables.push(append(&log, make_batch(seed, 1, 100, 1), 0).durable);
            if seed % 25 == 0 {
                moldau::io::sleep(std::time::Duration::from_millis(1)).await;
            }
        }
        for d in durables {
            d.wait().await.unwrap();
        }
        let syncs = ctx.faults.performed(FaultOp::Sync) - syncs_before;
        assert!(syncs < 20, "100 appends took {syncs} fdatasyncs; group commit should need a handful");
        ctx.faults.heal();
        log.close().await.unwrap();
    });
}

/// Submissions made so far on this thread's io_uring (its SQ tail, from /proc/self/fdinfo).
fn io_uring_submissions() -> u64 {
    let fd = moldau::io::runtime_ring_fd().expect("inside the runtime");
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap();
    let line = info.lines().find(|l| l.starts_with("SqTail:")).expect("an io_uring descriptor");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn segments_are_opened_with_o_direct_and_written_through_io_uring() {
    let dir = test_dir("odirect");
    block_on(async {
        assert!(moldau::io::runtime_uses_io_uring(), "the runtime must drive io_uring");
        let log = Log::open(&dir, config(1 << 20, FlushPolicy::Always), &context(1 << 20)).await.unwrap();
        let fd = log.active_segment_fd().expect("segment file open");
        let fdinfo = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap();
        let flags_line = fdinfo.lines().find(|l| l.starts_with("flags:")).unwrap();
        let flags = u32::from_str_radix(flags_line.split_whitespace().nth(1).unwrap(), 8).unwrap();
        assert_ne!(flags & libc::O_DIRECT as u32, 0, "segment not opened O_DIRECT: {flags_line}");
        let before = io_uring_submissions();
        for seed in 0..10 {
            append(&log, make_batch(seed, 1, 100, 1), 0).durable.wait().await.unwrap();
        }
        let after = io_uring_submissions();
        // Each durable append needs at least one durable (RWF_DSYNC) write submitted to the ring.
        assert!(after - before >= 10, "io_uring submissions grew by {} for 10 durable appends", after - before);
        log.close().await.unwrap();
    });
}

#[test]
fn preallocation_steps_ahead_of_the_data_and_an_idle_partition_costs_no_disk() {
    use std::os::unix::fs::MetadataExt;
    let dir = test_dir("prealloc");
    block_on(async {
        let ctx = context(1 << 20);
        let mut cfg = config(1 << 30, FlushPolicy::Always);
        cfg.preallocate = true;
        let log = Log::open(&dir, cfg, &ctx).await.unwrap();
        let file = dir.join("00000000000000000000.log");
        let allocated = || std::fs::metadata(&file).unwrap().blocks() * 512;
        assert_eq!(allocated(), 0, "a new, empty partition allocates nothing");
        append(&log, make_batch(1, 1, 100, 1), 0).durable.wait().await.unwrap();
        let small = allocated();
        assert!(small > 0 && small <= 16 << 20, "the first write preallocates one step: {small}");
        // Writing on grows the preallocation ahead of the data, a step at a time.
        let mut written = 0u64;
        let mut seed = 2;
        while written < 8 << 20 {
            let batch = make_batch(seed, 64, 1000, 1);
            written += batch.len() as u64;
            append(&log, batch, 0).durable.wait().await.unwrap();
            seed += 1;
        }
        let big = allocated();
        assert!(big >= written, "data is inside the allocation ({big} < {written})");
        assert!(big <= written + (16 << 20), "preallocated at most one step ahead: {big} for {written}");
        assert!(big < 1 << 30, "never the whole segment up front");
        log.close().await.unwrap();
    });
}

/// The first hole (or unwritten extent: ext4 reports those as holes when no page cache holds
/// them, which O_DIRECT guarantees) at or after byte `from` of `path`.
fn first_hole(path: &Path, from: u64) -> u64 {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(path).unwrap();
    // SAFETY: plain lseek on a descriptor that `file` keeps open.
    let at = unsafe { libc::lseek(file.as_raw_fd(), from as libc::off_t, libc::SEEK_HOLE) };
    assert!(at >= 0, "SEEK_HOLE: {}", std::io::Error::last_os_error());
    at as u64
}

#[test]
fn small_durable_appends_find_blocks_zero_filled_ahead_and_zeros_never_land_on_data() {
    for prepare in [false, true] {
        let dir = test_dir(&format!("prepare-{prepare}"));
        let (expected, data_end) = block_on(async {
            let mut cfg = config(64 << 20, FlushPolicy::Always);
            cfg.prepare_ahead_bytes = if prepare { moldau::storage::PREPARE_AHEAD_BYTES } else { 0 };
            let log = Log::open(&dir, cfg, &context(0)).await.unwrap();
            let mut expected = Vec::new();
            let mut seed = 0;
            while log.snapshot().size_bytes < 3 << 20 {
                // Mostly one durable append at a time; now and then a burst of appends that
                // share write rounds (larger jobs, reaching further while zeros are in flight).
                let burst = if seed % 100 == 99 { 40 } else { 1 };
                let mut last = None;
                for _ in 0..burst {
                    let batch = make_batch(seed, 2, 1000, 1);
                    let info = append(&log, batch.clone(), 0);
                    expected.push(stamped(&batch, info.base_offset));
                    last = Some(info);
                    seed += 1;
                }
                last.unwrap().durable.wait().await.unwrap();
            }
            let data_end = log.snapshot().size_bytes;
            log.close().await.unwrap();
            (expected, data_end)
        });
        let hole = first_hole(&dir.join("00000000000000000000.log"), data_end);
        if prepare {
            assert!(
                hole >= data_end + (1 << 20),
                "blocks past the data are written: first hole {hole}, data {data_end}"
            );
        } else {
            assert!(hole < data_end + (64 << 10), "without zero-fill the blocks past the data are unwritten: {hole}");
        }
        block_on(async {
            let log = Log::open(&dir, config(64 << 20, FlushPolicy::Always), &context(0)).await.unwrap();
            let got = read_all(&log, 0, 1 << 20).await;
            assert_same_batches(&got, &expected, "every batch reads back intact after the zero writes");
            log.close().await.unwrap();
        });
        if prepare {
            // A clean restart leaves the written blocks past the data as they are.
            let again = first_hole(&dir.join("00000000000000000000.log"), data_end);
            assert_eq!(again, hole, "the blocks zero-filled ahead stay written across a clean restart");
        }
    }
}

#[test]
fn after_a_clean_restart_zero_filling_ahead_goes_on_from_the_first_unwritten_block() {
    let dir = test_dir("prepare-resume");
    let path = dir.join("00000000000000000000.log");
    let mut cfg = config(64 << 20, FlushPolicy::Always);
    cfg.prepare_ahead_bytes = 0;
    let mut expected = Vec::new();
    let data_end = block_on(async {
        let log = Log::open(&dir, cfg.clone(), &context(0)).await.unwrap();
        for seed in 0..3 {
            let batch = make_batch(seed, 2, 1000, 1);
            let info = append(&log, batch.clone(), 0);
            expected.push(stamped(&batch, info.base_offset));
            info.durable.wait().await.unwrap();
        }
        let end = log.snapshot().size_bytes;
        log.close().await.unwrap();
        end
    });
    // The blocks past the data written for 1.5 MiB (as zero-filling ahead leaves them), the rest
    // of the preallocation unwritten.
    let written_to = data_end.div_ceil(4096) * 4096 + (3 << 19);
    {
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let from = data_end.div_ceil(4096) * 4096;
        file.write_all_at(&vec![0u8; (written_to - from) as usize], from).unwrap();
        file.sync_all().unwrap();
    }
    assert_eq!(first_hole(&path, data_end), written_to);
    // One small durable append after a clean restart, zero-filling ahead on: its zero write
    // starts at the first unwritten block, so the written blocks reach 1 MiB further. (Started
    // at the data's end instead, it would rewrite blocks already written and move nothing.)
    block_on(async {
        cfg.prepare_ahead_bytes = moldau::storage::PREPARE_AHEAD_BYTES;
        let log = Log::open(&dir, cfg, &context(0)).await.unwrap();
        let batch = make_batch(99, 2, 1000, 1);
        let info = append(&log, batch.clone(), 0);
        expected.push(stamped(&batch, info.base_offset));
        info.durable.wait().await.unwrap();
        log.close().await.unwrap();
    });
    assert_eq!(first_hole(&path, data_end), written_to + (1 << 20), "the zero write went on from the hole");
    block_on(async {
        let log = Log::open(&dir, config(64 << 20, FlushPolicy::Always), &context(0)).await.unwrap();
        let got = read_all(&log, 0, 1 << 20).await;
        assert_same_batches(&got, &expected, "every batch reads back intact");
        log.close().await.unwrap();
    });
}

#[test]
fn replica_appends_across_a_gap_wider_than_a_segment_can_span_start_a_new_segment() {
    let dir = test_dir("wide-gap");
    block_on(async {
        let cfg = config(1 << 20, FlushPolicy::Always);
        let log = Log::open(&dir, cfg.clone(), &context(1 << 20)).await.unwrap();
        // Into the empty first segment (based at 0), then past a second gap in the same append.
        let far = 5_000_000_000i64;
        let first = stamped(&make_batch(1, 3, 100, 5), far);
        let second = stamped(&make_batch(2, 2, 100, 6), far + 3);
        let third = stamped(&make_batch(3, 4, 100, 7), 2 * far);
        let mut both = BytesMut::new();
        both.extend_from_slice(&second);
        both.extend_from_slice(&third);
        let both = both.freeze();
        for records in [first.clone(), both] {
            let spans = validate_all(&records, usize::MAX).unwrap();
            let info = log.append_replica(records, &spans, 0).unwrap();
            info.durable.wait().await.unwrap();
        }
        assert_eq!(log.log_end_offset(), 2 * far + 4);
        let want = [first, second, third];
        assert_same_batches(&read_all(&log, 0, 1 << 20).await, &want, "read across the gaps");
        log.close().await.unwrap();
        let log = Log::open(&dir, cfg, &context(1 << 20)).await.unwrap();
        assert_eq!(log.log_end_offset(), 2 * far + 4);
        assert_same_batches(&read_all(&log, 0, 1 << 20).await, &want, "after a reopen");
        assert_same_batches(&read_all(&log, far + 4, 1 << 20).await, &want[1..], "from inside a batch");
        log.close().await.unwrap();
    });
}
