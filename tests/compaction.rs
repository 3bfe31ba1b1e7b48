//! Log compaction on real files: the cleaner keeps exactly the newest record of every key in what
//! it cleaned, drops tombstones after `delete.retention.ms`, leaves offsets as they were, and a
//! pass cut short at any disk operation (the process dying there) loses nothing.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;

use bytes::Bytes;
use moldau::io::{FaultOp, Faults, RateLimit, block_on};
use moldau::model::batch::validate_all;
use moldau::model::records::{ConsumedRecord, EncodeOptions, decode_records, encode_batch_with_headers};
use moldau::storage::{FlushPolicy, Log, LogConfig, LogContext, ReadCache};
use proptest::prelude::*;

mod common;
use common::TempDir;

/// One produced record: key, value (`None`: a tombstone) and timestamp.
#[derive(Clone, Debug)]
struct Write {
    key: u8,
    value: Option<u32>,
    timestamp: i64,
}

fn config(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        flush: FlushPolicy::Always,
        index_interval_bytes: 512,
        compact: true,
        delete_retention: false,
        min_cleanable_dirty_ratio: 0.0,
        delete_retention_ms: 1_000,
        ..LogConfig::default()
    }
}

fn context(faults: Faults) -> LogContext {
    LogContext { cache: Rc::new(RefCell::new(ReadCache::new(1 << 20))), faults }
}

fn value_bytes(value: u32) -> Bytes {
    let mut v = format!("value-{value}-").into_bytes();
    v.resize(40 + (value as usize % 200), b'v');
    Bytes::from(v)
}

/// Appends `writes` in batches of `per_batch` records with codec `codec` (a batch's records
/// are stamped with its newest write's timestamp); returns the offset and timestamp each
/// write got.
async fn append_all(log: &Log, writes: &[Write], per_batch: usize, codec: i16) -> Vec<(i64, i64)> {
    let mut offsets = Vec::new();
    for chunk in writes.chunks(per_batch.max(1)) {
        let records = chunk.iter().map(|w| {
            (
                Some(Bytes::from(format!("key-{}", w.key))),
                w.value.map(value_bytes),
                Vec::<(String, Option<Bytes>)>::new(),
            )
        });
        let ts = chunk.iter().map(|w| w.timestamp).max().unwrap();
        let batch = encode_batch_with_headers(records, &EncodeOptions { compression: codec, timestamp_ms: Some(ts) });
        let spans = validate_all(&batch, usize::MAX).unwrap();
        let info = log.append(batch, &spans, 0, ts).unwrap();
        info.durable.wait().await.unwrap();
        offsets.extend((info.base_offset..=info.last_offset).map(|o| (o, ts)));
    }
    offsets
}

/// Every record in the log, in offset order, read batch by batch.
async fn read_records(log: &Log) -> Vec<ConsumedRecord> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    loop {
        let result = log.read(offset, 64 * 1024, i64::MAX).await.unwrap();
        if result.batches.is_empty() {
            return out;
        }
        for batch in result.batches {
            let records = decode_records(batch.clone()).unwrap();
            let header = moldau::model::batch::BatchHeader::parse(&batch).unwrap();
            assert!(header.base_offset >= offset || out.is_empty() || header.last_offset() >= offset);
            offset = header.last_offset() + 1;
            let last = out.last().map_or(i64::MIN, |l: &ConsumedRecord| l.offset);
            out.extend(records.into_iter().filter(|r| r.offset > last));
        }
    }
}

fn key_of(record: &ConsumedRecord) -> u8 {
    std::str::from_utf8(record.key.as_deref().unwrap()).unwrap().strip_prefix("key-").unwrap().parse().unwrap()
}

/// Checks the log against what was written: the newest record of a key is never lost (a
/// tombstone may go once its batch is older than `expired_before`, and below `cleaned` it must
/// have gone); below `cleaned`, a key keeps at most its newest record there; at and above it,
/// everything written is there.
fn check(
    records: &[ConsumedRecord],
    writes: &[Write],
    offsets: &[(i64, i64)],
    cleaned: Option<i64>,
    expired_before: i64,
) {
    let mut newest: BTreeMap<u8, i64> = BTreeMap::new();
    let mut newest_below: BTreeMap<u8, i64> = BTreeMap::new();
    for (write, &(offset, _)) in writes.iter().zip(offsets) {
        newest.insert(write.key, offset);
        if cleaned.is_some_and(|c| offset < c) {
            newest_below.insert(write.key, offset);
        }
    }
    let by_offset: BTreeMap<i64, &ConsumedRecord> = records.iter().map(|r| (r.offset, r)).collect();
    assert_eq!(by_offset.len(), records.len(), "no offset twice");
    assert!(by_offset.keys().all(|o| offsets.iter().any(|(w, _)| w == o)), "only written offsets");
    for (key, newest_offset) in &newest {
        // A key whose deletion went must not come back with an older value.
        if !by_offset.contains_key(newest_offset) {
            let resurrected = records.iter().find(|r| key_of(r) == *key);
            assert!(resurrected.is_none(), "key {key} was deleted but {resurrected:?} is back");
        }
    }
    for (write, &(offset, timestamp)) in writes.iter().zip(offsets) {
        let record = by_offset.get(&offset);
        if let Some(record) = record {
            assert_eq!(key_of(record), write.key, "offset {offset} holds its own key");
            assert_eq!(record.value, write.value.map(value_bytes), "offset {offset} holds its own value");
        }
        let tombstone_may_go = write.value.is_none() && timestamp < expired_before;
        let below_clean = cleaned.is_some_and(|c| offset < c);
        if newest[&write.key] == offset {
            assert!(
                record.is_some() || tombstone_may_go,
                "the newest record of key {} (offset {offset}) is lost",
                write.key
            );
            if below_clean && tombstone_may_go {
                assert!(record.is_none(), "expired tombstone at {offset} is still there");
            }
        } else if below_clean {
            if newest_below[&write.key] != offset {
                assert!(record.is_none(), "offset {offset} of key {} is not its newest but was kept", write.key);
            }
        } else if cleaned.is_some() {
            assert!(record.is_some(), "offset {offset} above the cleaned part is gone");
        }
    }
}

#[test]
fn compaction_keeps_the_newest_record_of_each_key_and_drops_expired_tombstones_across_a_reopen() {
    let dir = TempDir::new("compaction-basic");
    block_on(async {
        let log = Log::open(&dir.0, config(8 * 1024), &context(Faults::none())).await.unwrap();
        let now = moldau::io::now_ms();
        // Old data (its tombstones are past delete.retention.ms), then new data.
        let mut writes: Vec<Write> = (0..600)
            .map(|i| Write {
                key: (i * 7 % 23) as u8,
                value: if i % 37 == 5 { None } else { Some(i) },
                timestamp: now - 60_000,
            })
            .collect();
        writes.extend((600..800).map(|i| Write {
            key: (i % 11) as u8,
            value: (i % 13 != 0).then_some(i),
            timestamp: now,
        }));
        let offsets = append_all(&log, &writes, 4, 0).await;
        let size_before = log.snapshot().size_bytes;
        let end = log.log_end_offset();
        let outcome = log.compact(now, end, 1 << 20, &RateLimit::unlimited()).await.unwrap();
        assert!(outcome.segments_rewritten > 0 && outcome.records_removed > 0, "{outcome:?}");
        let after = log.snapshot();
        assert!(after.size_bytes < size_before / 2, "{} -> {}", size_before, after.size_bytes);
        assert_eq!(after.log_end_offset, end, "offsets never change");
        assert_eq!(after.log_start_offset, 0);
        let records = read_records(&log).await;
        check(&records, &writes, &offsets, Some(outcome.cleaned_offset), now - 1_000);
        // Nothing left to clean until more is written.
        assert!(!log.cleanable(now, end).unwrap().due);
        log.close().await.unwrap();

        // Recovery accepts the gaps; appends go on at the same offsets.
        let log = Log::open(&dir.0, config(8 * 1024), &context(Faults::none())).await.unwrap();
        assert_eq!(log.log_end_offset(), end);
        assert_eq!(read_records(&log).await, records, "the same records after a reopen");
        let more: Vec<Write> =
            (0..50).map(|i| Write { key: (i % 23) as u8, value: Some(10_000 + i), timestamp: now }).collect();
        let more_offsets = append_all(&log, &more, 5, 0).await;
        assert_eq!(more_offsets[0].0, end);
        log.close().await.unwrap();
    });
}

/// Runs a workload, compacts with the disk failing from operation `crash_at` on (the process
/// dying there), reopens, checks nothing was lost, then compacts to the end and checks that
/// exactly the newest records are left.
fn crash_and_recover(
    dir: &Path,
    writes: &[Write],
    per_batch: usize,
    codec: i16,
    segment_bytes: u64,
    crash: (FaultOp, u64),
) {
    block_on(async {
        let now = moldau::io::now_ms();
        let faults = Faults::none();
        let log = Log::open(dir, config(segment_bytes), &context(faults.clone())).await.unwrap();
        let offsets = append_all(&log, writes, per_batch, codec).await;
        let end = log.log_end_offset();
        faults.fail_after(crash.0, crash.1, libc::EIO);
        let _ = log.compact(now, end, 1 << 20, &RateLimit::unlimited()).await;
        drop(log);
        let log = Log::open(dir, config(segment_bytes), &context(Faults::none())).await.unwrap();
        assert_eq!(log.log_end_offset(), end);
        check(&read_records(&log).await, writes, &offsets, None, now - 1_000);
        let outcome = log.compact(now, end, 1 << 20, &RateLimit::unlimited()).await.unwrap();
        let records = read_records(&log).await;
        check(&records, writes, &offsets, Some(outcome.cleaned_offset), now - 1_000);
        log.close().await.unwrap();
    });
}

fn write_strategy() -> impl Strategy<Value = Vec<Write>> {
    let now = moldau::io::now_ms();
    proptest::collection::vec(
        (0u8..30, proptest::option::weighted(0.85, 0u32..1_000_000), prop_oneof![Just(now - 600_000), Just(now)]),
        50..500,
    )
    .prop_map(|v| v.into_iter().map(|(key, value, timestamp)| Write { key, value, timestamp }).collect())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn a_compaction_cut_short_anywhere_loses_nothing_and_the_next_one_leaves_exactly_the_newest(
        writes in write_strategy(),
        per_batch in 1usize..8,
        codec in prop_oneof![Just(0i16), Just(0), Just(1), Just(3), Just(4)],
        segment_kib in 2u64..16,
        crash_on_side_file in any::<bool>(),
        crash_after in 0u64..12,
    ) {
        let dir = TempDir::new("compaction-crash");
        let op = if crash_on_side_file { FaultOp::SideFile } else { FaultOp::Write };
        crash_and_recover(&dir.0, &writes, per_batch, codec, segment_kib * 1024, (op, crash_after));
    }
}
