//! A small Kafka client: record batches, and (later) a connection for the CLI and load tools.

pub mod records;
