//! `moldau consume`: print records from an offset or the end, optionally following new ones.

use std::io::Write;

use super::{Target, connect};
use crate::client::ClientError;
use crate::model::records::decode_records;

/// Arguments of `moldau consume`.
#[derive(clap::Args, Debug)]
pub struct ConsumeArgs {
    /// The brokers, and how to secure connections to them.
    #[command(flatten)]
    target: Target,
    /// Topic to read.
    #[arg(long)]
    topic: String,
    /// Only this partition (default: all).
    #[arg(long)]
    partition: Option<i32>,
    /// Where to start: beginning, end, or an offset.
    #[arg(long, default_value = "beginning")]
    from: String,
    /// Stop after this many records.
    #[arg(long)]
    count: Option<usize>,
    /// Keep waiting for new records instead of stopping at the end.
    #[arg(long)]
    follow: bool,
    /// Print the key before the value.
    #[arg(long)]
    print_key: bool,
    /// Print partition and offset before each record.
    #[arg(long)]
    print_offset: bool,
    /// Separator between the printed fields.
    #[arg(long, default_value = "\t")]
    separator: String,
}

/// Runs `moldau consume`.
pub async fn run(args: ConsumeArgs) -> Result<(), ClientError> {
    let client = connect(&args.target).await?;
    let topic = client.topic(&args.topic, false).await?;
    let mut partitions: Vec<i32> = match args.partition {
        Some(p) => vec![p],
        None => topic.partitions.iter().map(|p| p.0).collect(),
    };
    partitions.sort_unstable();
    let mut positions = Vec::new();
    for &p in &partitions {
        let start = match args.from.as_str() {
            "beginning" => client.list_offset(&args.topic, p, -2).await?.0,
            "end" => client.list_offset(&args.topic, p, -1).await?.0,
            n => n
                .parse::<i64>()
                .map_err(|_| ClientError::Unavailable(format!("--from {n:?}: expected beginning, end or an offset")))?,
        };
        positions.push(start);
    }
    let mut printed = 0usize;
    let stdout = std::io::stdout();
    loop {
        let mut at_end = 0;
        for (i, &p) in partitions.iter().enumerate() {
            let wait_ms = if args.follow { 200 } else { 0 };
            let fetched = client.fetch(&args.topic, p, positions[i], 1 << 20, wait_ms).await?;
            let records = decode_records(fetched.records)
                .map_err(|e| ClientError::Protocol(format!("undecodable records: {e}")))?;
            let mut out = stdout.lock();
            for record in records {
                if record.offset < positions[i] {
                    continue; // a batch starts before the requested offset
                }
                positions[i] = record.offset + 1;
                if args.print_offset {
                    let _ = write!(out, "{p}{}{}{}", args.separator, record.offset, args.separator);
                }
                if args.print_key {
                    let key = record.key.as_deref().map(String::from_utf8_lossy).unwrap_or_default();
                    let _ = write!(out, "{key}{}", args.separator);
                }
                let value = record.value.as_deref().map(String::from_utf8_lossy).unwrap_or_default();
                let _ = writeln!(out, "{value}");
                printed += 1;
                if args.count.is_some_and(|n| printed >= n) {
                    return Ok(());
                }
            }
            if positions[i] >= fetched.high_watermark {
                at_end += 1;
            }
        }
        if at_end == partitions.len() && !args.follow {
            if let Some(n) = args.count
                && printed < n
            {
                return Err(ClientError::Unavailable(format!("only {printed} of {n} records available")));
            }
            return Ok(());
        }
    }
}
