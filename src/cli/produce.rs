//! `moldau produce`: one record per input line, optionally keyed.

use std::io::BufRead;
use std::path::PathBuf;

use bytes::Bytes;

use super::{DEFAULT_BOOTSTRAP, connect};
use crate::client::ClientError;
use crate::client::records::{EncodeOptions, KeyValue, compression_id, encode_batch};

/// Records per produced batch at most.
const MAX_RECORDS_PER_BATCH: usize = 500;

/// Arguments of `moldau produce`.
#[derive(clap::Args, Debug)]
pub struct ProduceArgs {
    /// Broker(s), host:port[,host:port...].
    #[arg(long, default_value = DEFAULT_BOOTSTRAP)]
    bootstrap: String,
    /// Topic to produce to (created with broker defaults if the broker allows it).
    #[arg(long)]
    topic: String,
    /// Partition; by default keyed records go to hash(key) % partitions and unkeyed ones round
    /// robin.
    #[arg(long)]
    partition: Option<i32>,
    /// Read lines from this file instead of stdin.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Split each line at the first occurrence of this separator into key and value.
    #[arg(long)]
    key_separator: Option<String>,
    /// Use this key for every record.
    #[arg(long, conflicts_with = "key_separator")]
    key: Option<String>,
    /// acks: 0, 1 or -1 (all).
    #[arg(long, default_value_t = -1, allow_hyphen_values = true)]
    acks: i16,
    /// Compression: none, gzip, snappy, lz4, zstd.
    #[arg(long, default_value = "none")]
    compression: String,
}

/// Kafka's default partitioner hash (murmur2, as the Java client uses), so keyed records land
/// where other clients would put them.
pub fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let length = data.len() as u32;
    let mut h: u32 = SEED ^ length;
    let chunks = data.chunks_exact(4);
    let tail = chunks.remainder();
    for chunk in chunks {
        let mut k = u32::from_le_bytes(chunk.try_into().expect("4 bytes"));
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    match tail.len() {
        3 => {
            h ^= u32::from(tail[2]) << 16;
            h ^= u32::from(tail[1]) << 8;
            h ^= u32::from(tail[0]);
            h = h.wrapping_mul(M);
        }
        2 => {
            h ^= u32::from(tail[1]) << 8;
            h ^= u32::from(tail[0]);
            h = h.wrapping_mul(M);
        }
        1 => {
            h ^= u32::from(tail[0]);
            h = h.wrapping_mul(M);
        }
        _ => {}
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// The partition Kafka's default partitioner picks for `key`.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    ((murmur2(key) & 0x7fff_ffff) % partitions as u32) as i32
}

/// Runs `moldau produce`.
pub async fn run(args: ProduceArgs) -> Result<(), ClientError> {
    let compression = compression_id(&args.compression)
        .ok_or_else(|| ClientError::Unavailable(format!("unknown compression {:?}", args.compression)))?;
    if !matches!(args.acks, -1..=1) {
        return Err(ClientError::Unavailable("--acks must be 0, 1 or -1".into()));
    }
    let client = connect(&args.bootstrap).await?;
    let topic = client.topic(&args.topic, true).await?;
    let partitions = topic.partitions.len() as i32;
    if let Some(p) = args.partition
        && (p < 0 || p >= partitions)
    {
        return Err(ClientError::Unavailable(format!("topic {} has no partition {p}", args.topic)));
    }
    let reader: Box<dyn BufRead> = match &args.file {
        Some(path) => Box::new(std::io::BufReader::new(
            std::fs::File::open(path).map_err(|e| ClientError::Unavailable(format!("{}: {e}", path.display())))?,
        )),
        None => Box::new(std::io::BufReader::new(std::io::stdin())),
    };
    let mut pending: Vec<Vec<KeyValue>> = vec![Vec::new(); partitions as usize];
    let mut round_robin = 0i32;
    let mut sent = 0usize;
    let options = EncodeOptions { compression, timestamp_ms: None };
    let flush = |partition: i32, records: Vec<KeyValue>| {
        let batch = encode_batch(&records, &options).freeze();
        let client = &client;
        let topic = &args.topic;
        async move { client.produce(topic, partition, batch, args.acks, 30_000).await }
    };
    for line in reader.lines() {
        let line = line.map_err(|e| ClientError::Unavailable(format!("reading input: {e}")))?;
        let (key, value) = match (&args.key_separator, &args.key) {
            (Some(sep), _) => match line.split_once(sep.as_str()) {
                Some((k, v)) => (Some(Bytes::from(k.to_owned())), Bytes::from(v.to_owned())),
                None => (None, Bytes::from(line)),
            },
            (None, Some(key)) => (Some(Bytes::from(key.clone())), Bytes::from(line)),
            (None, None) => (None, Bytes::from(line)),
        };
        let partition = match (args.partition, &key) {
            (Some(p), _) => p,
            (None, Some(k)) => partition_for_key(k, partitions),
            (None, None) => {
                round_robin = (round_robin + 1) % partitions;
                round_robin
            }
        };
        let bucket = &mut pending[partition as usize];
        bucket.push((key, Some(value)));
        if bucket.len() >= MAX_RECORDS_PER_BATCH {
            let records = std::mem::take(bucket);
            sent += records.len();
            flush(partition, records).await?;
        }
    }
    for (partition, records) in pending.into_iter().enumerate() {
        if !records.is_empty() {
            sent += records.len();
            flush(partition as i32, records).await?;
        }
    }
    eprintln!("produced {sent} records to {}", args.topic);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafkas_reference_values() {
        // Values from the Java client's Utils.murmur2 test vectors.
        assert_eq!(murmur2(b"21") as i32, -973932308);
        assert_eq!(murmur2(b"foobar") as i32, -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string") as i32, -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string") as i32, -1486304829);
        assert_eq!(murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") as i32, -58897971);
        assert_eq!(murmur2(b"abc") as i32, 479470107);
    }
}
