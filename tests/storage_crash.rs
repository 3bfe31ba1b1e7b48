//! Crash safety: a child process appends with `flush = always` and prints every offset as it
//! becomes durable; the parent SIGKILLs it at random moments, reopens the log, and checks that
//! every offset reported durable is there with the same bytes.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use moldau::io::{Faults, block_on};
use moldau::model::batch::{self, validate_all};
use moldau::model::records::{EncodeOptions, KeyValue, encode_batch};
use moldau::storage::{FlushPolicy, Log, LogConfig, LogContext, ReadCache};
use rand::Rng;

const CHILD_DIR_ENV: &str = "MOLDAU_CRASH_CHILD_DIR";
const CHILD_SEED_ENV: &str = "MOLDAU_CRASH_CHILD_SEED";
/// Set for the recycling test: 2 MiB segments (a recycled file must hold at least 1 MiB).
const CHILD_BIG_SEGMENTS_ENV: &str = "MOLDAU_CRASH_CHILD_BIG_SEGMENTS";

fn log_config(big: bool) -> LogConfig {
    LogConfig {
        segment_bytes: if big { 2 << 20 } else { 256 * 1024 },
        flush: FlushPolicy::Always,
        index_interval_bytes: 4096,
        ..LogConfig::default()
    }
}

fn context() -> LogContext {
    LogContext { cache: Rc::new(std::cell::RefCell::new(ReadCache::new(1 << 20))), faults: Faults::none() }
}

/// The batch for `seed`: deterministic, so the parent can rebuild it.
fn batch_for(seed: u64) -> BytesMut {
    let records = 1 + (seed % 5) as usize;
    let values: Vec<KeyValue> = (0..records)
        .map(|i| {
            let mut v = format!("seed={seed} record={i} ").into_bytes();
            v.resize(64 + (seed as usize * 7919) % 6000, b'a' + (seed % 26) as u8);
            (Some(Bytes::from(seed.to_string())), Some(Bytes::from(v)))
        })
        .collect();
    encode_batch(&values, &EncodeOptions { compression: 0, timestamp_ms: Some(seed as i64) })
}

#[test]
#[ignore = "child process of sigkill_during_appends_loses_no_durable_offset; runs only when spawned"]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return;
    };
    let first_seed: u64 = std::env::var(CHILD_SEED_ENV).unwrap().parse().unwrap();
    block_on(async move {
        let big = std::env::var_os(CHILD_BIG_SEGMENTS_ENV).is_some();
        let log = Log::open(Path::new(&dir), log_config(big), &context()).await.unwrap();
        println!("ready");
        let next = Rc::new(Cell::new(first_seed));
        let mut tasks = Vec::new();
        // Several appenders at once, so group commit is in play when the kill lands.
        for _ in 0..4 {
            let log = log.clone();
            let next = next.clone();
            tasks.push(moldau::io::spawn(async move {
                loop {
                    let seed = next.get();
                    next.set(seed + 1);
                    let batch = batch_for(seed);
                    let spans = validate_all(&batch, usize::MAX).unwrap();
                    let info = log.append(batch, &spans, 0, 0).unwrap();
                    info.durable.wait().await.unwrap();
                    println!("durable {seed} {}", info.base_offset);
                }
            }));
        }
        for task in tasks {
            let _ = task.await;
        }
    });
}

fn run_child_and_kill(dir: &Path, first_seed: u64, kill_after: Duration) -> Vec<(u64, i64)> {
    run_child_and_kill_when(dir, first_seed, false, |started| started.elapsed() >= kill_after)
}

/// Runs the crash child (with 2 MiB segments when `big_segments`) and SIGKILLs it once
/// `kill_now` (asked every few milliseconds, with when the child started) says so, or after 30 s.
fn run_child_and_kill_when(
    dir: &Path,
    first_seed: u64,
    big_segments: bool,
    kill_now: impl Fn(std::time::Instant) -> bool,
) -> Vec<(u64, i64)> {
    let mut command = Command::new(std::env::current_exe().unwrap());
    if big_segments {
        command.env(CHILD_BIG_SEGMENTS_ENV, "1");
    }
    let mut child = command
        .args(["--ignored", "--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR_ENV, dir)
        .env(CHILD_SEED_ENV, first_seed.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut reported = Vec::new();
        let mut ready = false;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // libtest prints "test crash_child ... " without a newline before our first line.
            if line.ends_with("ready") {
                ready = true;
            }
            let Some(at) = line.find("durable ") else {
                continue;
            };
            let mut parts = line[at..].split_whitespace();
            if parts.next() == Some("durable") {
                let seed = parts.next().unwrap().parse().unwrap();
                let base = parts.next().unwrap().parse().unwrap();
                reported.push((seed, base));
            }
        }
        (ready, reported)
    });
    let started = std::time::Instant::now();
    while !kill_now(started) && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().expect("SIGKILL child"); // std's kill sends SIGKILL
    child.wait().unwrap();
    let (ready, reported) = reader.join().unwrap();
    assert!(ready, "child never opened the log");
    reported
}

fn read_log(dir: &Path, big_segments: bool) -> BTreeMap<i64, Bytes> {
    block_on(async {
        let log = Log::open(dir, log_config(big_segments), &context()).await.unwrap();
        let mut out = BTreeMap::new();
        let mut offset = log.log_start_offset();
        loop {
            let result = log.read(offset, 1 << 20, i64::MAX).await.unwrap();
            if result.batches.is_empty() {
                break;
            }
            for b in result.batches {
                let header = batch::validate(&b).expect("recovered batches are valid");
                assert_eq!(header.base_offset, offset, "offsets are contiguous after recovery");
                offset = header.last_offset() + 1;
                out.insert(header.base_offset, b);
            }
        }
        assert_eq!(offset, log.log_end_offset());
        log.close().await.unwrap();
        out
    })
}

/// A fresh directory under target/ (removed when the test passes).
fn test_dir(prefix: &str) -> tempfile::TempDir {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("storage-tests");
    std::fs::create_dir_all(&root).unwrap();
    tempfile::Builder::new().prefix(prefix).tempdir_in(root).unwrap()
}

#[test]
fn sigkill_during_appends_loses_no_durable_offset() {
    let dir = test_dir("crash");
    let mut rng = rand::rng();
    let mut all_reported: Vec<(u64, i64)> = Vec::new();
    for round in 0..6u64 {
        let kill_after = Duration::from_millis(rng.random_range(150..900));
        let reported = run_child_and_kill(dir.path(), round * 1_000_000, kill_after);
        all_reported.extend(&reported);
        let stored = read_log(dir.path(), false);
        for &(seed, base) in &all_reported {
            let mut expected = batch_for(seed);
            batch::stamp(&mut expected, base, 0);
            let got = stored
                .get(&base)
                .unwrap_or_else(|| panic!("round {round}: durable batch seed {seed} at offset {base} is missing"));
            assert!(got[..] == expected[..], "round {round}: batch at offset {base} changed");
        }
        eprintln!(
            "round {round}: killed after {kill_after:?}, {} durable batches reported, {} stored",
            reported.len(),
            stored.len()
        );
    }
    assert!(all_reported.len() > 50, "the child should have made progress ({} reports)", all_reported.len());
}

/// Appends `count` batches (seeds from `first_seed`) and closes the log cleanly.
fn append_batches(dir: &Path, config: LogConfig, first_seed: u64, count: u64) -> Vec<(u64, i64)> {
    block_on(async {
        let log = Log::open(dir, config, &context()).await.unwrap();
        let mut appended = Vec::new();
        for seed in first_seed..first_seed + count {
            let batch = batch_for(seed);
            let spans = validate_all(&batch, usize::MAX).unwrap();
            let info = log.append(batch, &spans, 0, 0).unwrap();
            info.durable.wait().await.unwrap();
            appended.push((seed, info.base_offset));
        }
        log.close().await.unwrap();
        appended
    })
}

fn segment_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".log"))
        .collect();
    names.sort();
    names
}

#[test]
fn a_recycled_segment_file_never_brings_its_old_batches_back_after_a_crash() {
    use std::os::unix::fs::MetadataExt;
    let dir = test_dir("recycle-crash");
    let dir = dir.path();
    // Three 2 MiB segments and a bit, then retention keeps only the newest 2 MiB: the oldest
    // segment's file (valid batches, valid CRCs) is kept for reuse instead of deleted.
    let first = append_batches(dir, log_config(true), 0, 2000);
    assert!(segment_files(dir).len() >= 3, "{:?}", segment_files(dir));
    let recycled = dir.join("recycled.segment");
    let (start, kept_inode) = block_on(async {
        let config = LogConfig { retention_bytes: 2 << 20, retention_ms: -1, ..log_config(true) };
        let log = Log::open(dir, config, &context()).await.unwrap();
        let outcome = log.enforce_retention(moldau::io::now_ms()).await.unwrap();
        assert!(outcome.segments_deleted >= 1, "{outcome:?}");
        let start = log.log_start_offset();
        log.close().await.unwrap();
        (start, std::fs::metadata(&recycled).expect("a removed segment is kept for reuse").ino())
    });
    assert!(std::fs::metadata(&recycled).unwrap().len() >= 1 << 20);
    // A child appends until the log has rolled into the recycled file and written into it, and
    // is killed in the middle of its appends.
    let before = segment_files(dir);
    let reported = run_child_and_kill_when(dir, 1_000_000, true, |_| {
        let names = segment_files(dir);
        let reused = !recycled.exists() && names.len() > before.len();
        reused && names.last().is_some_and(|n| std::fs::metadata(dir.join(n)).is_ok_and(|m| m.ino() == kept_inode))
    });
    assert!(!recycled.exists(), "the child never reached the recycled file");
    let newest = segment_files(dir).last().cloned().unwrap();
    assert_eq!(std::fs::metadata(dir.join(&newest)).unwrap().ino(), kept_inode, "{newest} is the recycled file");
    // Recovery: exactly what was appended, from the log start on; no batch from the file's
    // previous life.
    let stored = read_log(dir, true);
    let expected: BTreeMap<i64, u64> =
        first.iter().chain(&reported).filter(|(_, base)| *base >= start).map(|(seed, base)| (*base, *seed)).collect();
    for (base, seed) in &expected {
        let mut batch = batch_for(*seed);
        batch::stamp(&mut batch, *base, 0);
        assert!(stored.get(base).is_some_and(|got| got[..] == batch[..]), "durable batch at {base} (seed {seed})");
    }
    for (base, got) in &stored {
        assert!(*base >= start, "offset {base} below the log start {start} came back");
        if !expected.contains_key(base) {
            // Appended but not yet reported durable when the kill came: one of the child's.
            let key = moldau::model::records::decode_records(got.clone()).unwrap()[0].key.clone().unwrap();
            let seed: u64 = std::str::from_utf8(&key).unwrap().parse().unwrap();
            assert!(seed >= 1_000_000, "batch at {base} is seed {seed}, from before the recycling");
        }
    }
    println!(
        "recycled file reused: {} kept from before, {} durable batches reported before the kill, {} stored",
        expected.len() - reported.len(),
        reported.len(),
        stored.len()
    );
}

#[test]
fn a_recycled_segment_file_reopened_after_clean_closes_serves_exactly_the_new_batches() {
    use std::os::unix::fs::MetadataExt;
    let dir = test_dir("recycle-clean");
    let dir = dir.path();
    let first = append_batches(dir, log_config(true), 0, 2000);
    let retention = LogConfig { retention_bytes: 2 << 20, retention_ms: -1, ..log_config(true) };
    let (start, kept_inode) = block_on(async {
        let log = Log::open(dir, retention.clone(), &context()).await.unwrap();
        assert!(log.enforce_retention(moldau::io::now_ms()).await.unwrap().segments_deleted >= 1);
        let start = log.log_start_offset();
        log.close().await.unwrap();
        (start, std::fs::metadata(dir.join("recycled.segment")).expect("a removed segment is kept").ino())
    });
    // Appends until the log has rolled into the recycled file and written a little into it
    // (far less than the old batches it still holds), then a clean close; twice, so the second
    // round appends after a clean reopen, where recovery no longer zeroes the tail.
    let mut expected: BTreeMap<i64, u64> =
        first.iter().filter(|(_, base)| *base >= start).map(|(seed, base)| (*base, *seed)).collect();
    let mut seed = 1_000_000;
    for round in 0..2 {
        let appended = block_on(async {
            let log = Log::open(dir, retention.clone(), &context()).await.unwrap();
            let mut appended = Vec::new();
            let mut in_recycled = 0;
            while in_recycled < 20 {
                let batch = batch_for(seed);
                let spans = validate_all(&batch, usize::MAX).unwrap();
                let info = log.append(batch, &spans, 0, 0).unwrap();
                info.durable.wait().await.unwrap();
                appended.push((seed, info.base_offset));
                seed += 1;
                let newest = segment_files(dir).last().cloned().unwrap();
                if std::fs::metadata(dir.join(newest)).unwrap().ino() == kept_inode {
                    in_recycled += 1;
                }
            }
            log.close().await.unwrap();
            appended
        });
        expected.extend(appended.iter().map(|(seed, base)| (*base, *seed)));
        let stored = read_log(dir, true);
        let stored_bases: Vec<i64> = stored.keys().copied().collect();
        let expected_bases: Vec<i64> = expected.keys().copied().collect();
        assert_eq!(stored_bases, expected_bases, "round {round}: exactly the appended batches, none of the old ones");
        for (base, seed) in &expected {
            let mut batch = batch_for(*seed);
            batch::stamp(&mut batch, *base, 0);
            assert_eq!(stored[base][..], batch[..], "round {round}: batch at {base}");
        }
    }
}
