//! The cost of checking a produced batch's records (model::validate), per codec, against the
//! batch checks every produce already pays (framing and CRC-32C): the ratio is what the record
//! checks add.
//!
//! Run: `cargo bench --bench validate`. Results are in docs/performance.md.

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use moldau::model::batch::validate;
use moldau::model::records::{EncodeOptions, KeyValue, encode_batch};
use moldau::model::validate::{RecordRules, check_records};

/// A batch of 256 records of 1 KiB (keys, values with some repetition, as logs and JSON have).
fn batch(codec: i16) -> Vec<u8> {
    let values: Vec<KeyValue> = (0..256)
        .map(|i| {
            let value: String = (0..200).map(|j| format!("f{}={} ", j % 7, (i * 31 + j * 17) % 1000)).collect();
            (Some(Bytes::from(format!("key-{i}"))), Some(Bytes::from(value.into_bytes()[..1000].to_vec())))
        })
        .collect();
    encode_batch(&values, &EncodeOptions { compression: codec, ..EncodeOptions::default() }).to_vec()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("produce checks");
    group.sample_size(20);
    for (codec, name) in [(0, "none"), (1, "gzip"), (2, "snappy"), (3, "lz4"), (4, "zstd")] {
        let bytes = batch(codec);
        // Throughput in uncompressed record bytes, so codecs compare on the same work.
        group.throughput(Throughput::Bytes(256 * 1024));
        group.bench_with_input(BenchmarkId::new("crc and framing", name), &bytes, |b, bytes| {
            b.iter(|| validate(bytes).unwrap())
        });
        let mut scratch = Vec::new();
        group.bench_with_input(BenchmarkId::new("crc, framing and records", name), &bytes, |b, bytes| {
            b.iter(|| {
                let header = validate(bytes).unwrap();
                check_records(bytes, &header, &RecordRules { require_keys: true, timestamps: None }, &mut scratch)
                    .unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
