//! `moldau produce`: one record per input line, optionally keyed.

use std::io::BufRead;
use std::path::PathBuf;

use bytes::Bytes;

use super::{Target, connect};
use crate::client::ClientError;
use crate::client::partition_for_key;
use crate::model::records::{EncodeOptions, KeyValue, compression_id, encode_batch};

/// Records per produced batch at most.
const MAX_RECORDS_PER_BATCH: usize = 500;

/// Arguments of `moldau produce`.
#[derive(clap::Args, Debug)]
pub struct ProduceArgs {
    /// The brokers, and how to secure connections to them.
    #[command(flatten)]
    target: Target,
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

/// Runs `moldau produce`.
pub async fn run(args: ProduceArgs) -> Result<(), ClientError> {
    let compression = compression_id(&args.compression)
        .ok_or_else(|| ClientError::Unavailable(format!("unknown compression {:?}", args.compression)))?;
    if !matches!(args.acks, -1..=1) {
        return Err(ClientError::Unavailable("--acks must be 0, 1 or -1".into()));
    }
    let client = connect(&args.target).await?;
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
