//! The Kafka protocol edge: framing, connections, and one handler per API. Handlers reach
//! partitions by running work on the shard that owns them (through the partition layer), groups
//! through their coordinators, and metadata through the controller; never storage.

pub mod connection;
pub mod error_stats;
pub mod errors;
pub mod fetch_response;
pub mod fetch_session;
pub mod frame;
pub mod handlers;
pub mod produce_request;
pub mod server;
