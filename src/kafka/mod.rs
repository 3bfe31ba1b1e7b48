//! The Kafka protocol edge: framing, connections, and one handler per API. Handlers reach
//! partitions only through the shard layer (messages to the owning shard), never storage.

pub mod connection;
pub mod errors;
pub mod fetch_response;
pub mod frame;
pub mod handlers;
pub mod produce_request;
pub mod wire;
