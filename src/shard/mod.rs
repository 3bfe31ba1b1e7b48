//! The runtime layer: one pinned, single-threaded io_uring executor per core (a shard), bounded
//! mailboxes between them, sharded services reached with `invoke_on`, and the node-local table
//! of which shard owns which partition replica. It knows nothing of Kafka, groups or the
//! cluster: those are services wired together in `broker.rs`.

mod placement;
mod runtime;
mod sharded;

pub use placement::Placement;
pub use runtime::{
    Pending, ShardGone, ShardId, ShardInboxes, ShardInit, ShardLimits, ShardSet, ShardThreads, stop_current,
};
pub use sharded::Sharded;
