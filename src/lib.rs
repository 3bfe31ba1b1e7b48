//! Moldau: a Kafka-wire-compatible, thread-per-core event-streaming broker on io_uring.
//!
//! Layers (see `docs/ARCHITECTURE.md`): `io` (the runtime), `storage` (partition logs),
//! `client` (a small Kafka client used by the command line and the load tools).
#![deny(missing_docs)]

pub mod client;
pub mod io;
pub mod storage;
pub mod util;
