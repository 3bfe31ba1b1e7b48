//! Log compaction on real files: the cleaner keeps exactly the newest record of every key in what
//! it cleaned, drops tombstones after `delete.retention.ms`, leaves offsets as they were, and a
//! pass cut short at any disk operation (the process dying there) loses nothing.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use moldau::io::{FaultOp, Faults, RateLimit, block_on};
use moldau::model::batch::{BatchHeader, validate_all};
use moldau::model::records::{
    BatchBuilder, BatchFields, ConsumedRecord, EncodeOptions, decode_records, encode_batch_with_headers,
};
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
        // Until a compacted segment takes its place, every batch follows the one before.
        let gaps_file = dir.0.join("offset-gaps");
        assert!(!gaps_file.exists());
        let outcome = log.compact(now, end, 1 << 20, &RateLimit::unlimited()).await.unwrap();
        assert!(outcome.segments_rewritten > 0 && outcome.records_removed > 0, "{outcome:?}");
        assert!(gaps_file.exists(), "the log is known to have gaps");
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

/// Every batch header in the log, in offset order.
async fn headers(log: &Log) -> Vec<BatchHeader> {
    let mut out: Vec<BatchHeader> = Vec::new();
    let mut offset = log.log_start_offset();
    loop {
        let result = log.read(offset, 64 * 1024, i64::MAX).await.unwrap();
        let fresh: Vec<BatchHeader> = result
            .batches
            .iter()
            .map(|b| BatchHeader::parse(b).unwrap())
            .filter(|h| out.last().is_none_or(|l| h.base_offset > l.base_offset))
            .collect();
        let Some(last) = fresh.last() else { return out };
        offset = last.last_offset() + 1;
        out.extend(fresh);
    }
}

/// A batch with one record per key of `keys` (values tagged `tag`), from idempotent producer
/// `producer` (id, base sequence) if given.
fn keyed_batch(keys: &[u8], tag: u32, producer: Option<(i64, i32)>, ts: i64) -> BytesMut {
    let mut builder = BatchBuilder::new(256, ts);
    for key in keys {
        builder.push(Some(format!("key-{key}").as_bytes()), &value_bytes(tag), ts);
    }
    let fields = match producer {
        Some((producer_id, base_sequence)) => {
            BatchFields { attributes: 0, producer_id, producer_epoch: 0, base_sequence }
        }
        None => BatchFields::default(),
    };
    BytesMut::from(&builder.finish_with(&fields)[..])
}

async fn append_batch(log: &Log, batch: BytesMut, now: i64) -> i64 {
    let spans = validate_all(&batch, usize::MAX).unwrap();
    let info = log.append(batch, &spans, 0, now).unwrap();
    info.durable.wait().await.unwrap();
    info.base_offset
}

/// (base offset, base sequence, records) of producer 9's batches.
async fn producer_batches(log: &Log) -> Vec<(i64, i32, i32)> {
    headers(log)
        .await
        .into_iter()
        .filter(|h| h.producer_id == 9)
        .map(|h| (h.base_offset, h.base_sequence, h.records_count))
        .collect()
}

#[test]
fn an_idempotent_producers_last_batch_stays_emptied_and_its_earlier_ones_go() {
    let dir = TempDir::new("compaction-producer");
    block_on(async {
        let now = moldau::io::now_ms();
        let log = Log::open(&dir.0, config(2 * 1024), &context(Faults::none())).await.unwrap();
        // Producer 9 writes keys 0-3 twice (sequences 0 and 4); plain writes overwrite them.
        append_batch(&log, keyed_batch(&[0, 1, 2, 3], 0, Some((9, 0)), now), now).await;
        let last = append_batch(&log, keyed_batch(&[0, 1, 2, 3], 1, Some((9, 4)), now), now).await;
        for tag in 2..40 {
            append_batch(&log, keyed_batch(&[0, 1, 2, 3], tag, None, now), now).await;
        }
        let end = log.log_end_offset();
        let outcome = log.compact(now, end, 1 << 20, &RateLimit::unlimited()).await.unwrap();
        assert!(outcome.records_removed >= 8, "{outcome:?}");
        // Its sequence numbers stay in the log (a follower or a restart rebuilds its state from
        // there), its records go.
        assert_eq!(producer_batches(&log).await, vec![(last, 4, 0)]);
        log.close().await.unwrap();
        let log = Log::open(&dir.0, config(2 * 1024), &context(Faults::none())).await.unwrap();
        assert_eq!(producer_batches(&log).await, vec![(last, 4, 0)], "after a reopen");
        // Another pass keeps it while it is still the producer's last batch...
        for tag in 40..60 {
            append_batch(&log, keyed_batch(&[0, 1, 2, 3], tag, None, now), now).await;
        }
        log.compact(now, log.log_end_offset(), 1 << 20, &RateLimit::unlimited()).await.unwrap();
        assert_eq!(producer_batches(&log).await, vec![(last, 4, 0)], "still its last batch");
        // ...and drops it once a later one is cleaned.
        let newer = append_batch(&log, keyed_batch(&[0, 1, 2, 3], 60, Some((9, 8)), now), now).await;
        for tag in 61..100 {
            append_batch(&log, keyed_batch(&[0, 1, 2, 3], tag, None, now), now).await;
        }
        log.compact(now, log.log_end_offset(), 1 << 20, &RateLimit::unlimited()).await.unwrap();
        assert_eq!(producer_batches(&log).await, vec![(newer, 8, 0)]);
        let values: Vec<u32> = read_records(&log).await.iter().map(|r| r.offset as u32).collect();
        assert!(values.len() < 4 * 100 / 2, "the log was compacted: {} records", values.len());
        log.close().await.unwrap();
    });
}

/// The clean offset in the cleaner's checkpoint file (none yet: nothing is clean).
fn checkpoint(dir: &Path) -> i64 {
    match std::fs::read_to_string(dir.join("cleaner-offset-checkpoint")) {
        Ok(text) => text.split_whitespace().next().unwrap().parse().unwrap(),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => i64::MIN,
        Err(err) => panic!("{err}"),
    }
}

#[test]
fn a_truncation_during_a_pass_stops_it_and_nothing_past_the_cut_counts_as_clean() {
    // The pass's map alone reads ~100 KiB at 256 KiB/s: cut into while mapping (nothing swapped
    // yet, so nothing may be lost), then while rewriting (what was swapped before the cut
    // stays swapped, as in Kafka; the checkpoint must not pass the cut).
    truncate_during_a_pass(&TempDir::new("compaction-truncation"), 150, true);
    truncate_during_a_pass(&TempDir::new("compaction-truncation"), 700, false);
}

fn truncate_during_a_pass(dir: &TempDir, delay_ms: u64, mapping: bool) {
    block_on(async {
        let now = moldau::io::now_ms();
        let log = Log::open(&dir.0, config(4 * 1024), &context(Faults::none())).await.unwrap();
        let writes: Vec<Write> =
            (0..600).map(|i| Write { key: (i * 7 % 29) as u8, value: Some(i), timestamp: now }).collect();
        let offsets = append_all(&log, &writes, 4, 0).await;
        let end = log.log_end_offset();
        // Below what the pass may clean: an unclean truncation (below the high watermark).
        let cut = offsets[offsets.len() * 2 / 3].0;
        let cleaner = {
            let log = log.clone();
            moldau::io::spawn(async move {
                let pace = RateLimit::new(256.0 * 1024.0, 16.0 * 1024.0);
                log.compact(now, end, 1 << 20, &pace).await
            })
        };
        moldau::io::sleep(std::time::Duration::from_millis(delay_ms)).await;
        log.truncate_to(cut).await.unwrap();
        let outcome = cleaner.await.unwrap().unwrap();
        assert!(outcome.cleaned_offset <= cut, "{outcome:?}");
        assert!(checkpoint(&dir.0) <= cut, "{outcome:?}");
        let kept = offsets.iter().take_while(|(o, _)| *o < cut).count();
        let (writes, offsets) = (&writes[..kept], &offsets[..kept]);
        if mapping {
            assert_eq!(outcome.segments_rewritten, 0, "cut while mapping: {outcome:?}");
            check(&read_records(&log).await, writes, offsets, None, i64::MIN);
            // A full pass afterwards leaves exactly the newest records below the cut.
            let outcome = log.compact(now, cut, 1 << 20, &RateLimit::unlimited()).await.unwrap();
            check(&read_records(&log).await, writes, offsets, Some(outcome.cleaned_offset), i64::MIN);
        } else {
            log.compact(now, cut, 1 << 20, &RateLimit::unlimited()).await.unwrap();
        }
        // A truncation below the checkpoint lowers the file too.
        let cleaned = checkpoint(&dir.0);
        let lower = offsets[kept / 4].0;
        assert!(lower < cleaned, "{lower} {cleaned}");
        log.truncate_to(lower).await.unwrap();
        assert!(checkpoint(&dir.0) <= lower, "the checkpoint on disk follows the truncation");
        log.close().await.unwrap();
    });
}

#[test]
fn truncating_into_a_gap_after_a_segments_last_batch_ends_the_log_there() {
    let dir = TempDir::new("compaction-truncate-gap");
    block_on(async {
        let now = moldau::io::now_ms();
        let log = Log::open(&dir.0, config(2 * 1024), &context(Faults::none())).await.unwrap();
        // Key 0 in the first half of every batch run, later overwritten: segment tails empty.
        let writes: Vec<Write> = (0..400)
            .map(|i| Write { key: if i % 40 < 20 { 100 } else { (i % 7) as u8 }, value: Some(i), timestamp: now })
            .collect();
        append_all(&log, &writes, 2, 0).await;
        let end = log.log_end_offset();
        log.compact(now, end, 1 << 20, &RateLimit::unlimited()).await.unwrap();
        // A segment whose last batch ends before the next segment's base: a gap to cut into.
        let mut bases: Vec<i64> = std::fs::read_dir(&dir.0)
            .unwrap()
            .filter_map(|e| e.unwrap().file_name().to_str()?.strip_suffix(".log")?.parse().ok())
            .collect();
        bases.sort_unstable();
        let headers = headers(&log).await;
        let gap = bases.windows(2).find_map(|w| {
            let last = headers.iter().filter(|h| h.base_offset < w[1]).map(|h| h.last_offset()).max()?;
            (last + 2 < w[1]).then_some((last + 1, w[1]))
        });
        let (gap_start, next_base) = gap.expect("a segment ending in a gap");
        let offset = (gap_start + next_base) / 2;
        log.truncate_to(offset).await.unwrap();
        assert_eq!(log.log_end_offset(), offset, "the log ends where it was cut, not at the gap's end");
        let more = append_all(&log, &[Write { key: 1, value: Some(9_999), timestamp: now }], 1, 0).await;
        assert_eq!(more[0].0, offset);
        log.close().await.unwrap();
        let log = Log::open(&dir.0, config(2 * 1024), &context(Faults::none())).await.unwrap();
        assert_eq!(log.log_end_offset(), offset + 1);
        let last = read_records(&log).await.pop().unwrap();
        assert_eq!((last.offset, last.value), (offset, Some(value_bytes(9_999))));
        log.close().await.unwrap();
    });
}
