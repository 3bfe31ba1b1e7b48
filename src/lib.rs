//! Moldau: a Kafka-wire-compatible, thread-per-core event-streaming broker on io_uring.
//!
//! Layers (see `docs/ARCHITECTURE.md`): `io` (the runtime), `storage` (partition logs), `shard`
//! (pinned executors that own partitions), `cluster` (metadata and its controller), `kafka` (the
//! protocol edge), plus the broker process, the HTTP metrics endpoint and a small client.
#![deny(missing_docs)]

pub mod alloc;
pub mod bench;
pub mod broker;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod config;
pub mod group;
pub mod http;
pub mod io;
pub mod kafka;
pub mod model;
pub mod partition;
pub mod replication;
pub mod security;
pub mod shard;
pub mod storage;

/// Every binary linking Moldau (broker, tools, tests, benches) uses the guarded allocator.
#[global_allocator]
static ALLOCATOR: alloc::GuardedAllocator = alloc::GuardedAllocator;
