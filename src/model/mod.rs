//! The bottom layer: Kafka's data formats as plain values and bytes, with no I/O and no broker
//! state. The v2 record batch header (`batch`), the records inside batches (`records`), control
//! batches such as transaction markers (`control`), the record checks of a produced batch
//! (`validate`), the protocol's primitive wire types (`wire`),
//! and the ids every layer shares (`ids`). Every other layer may use it; it uses none of them.

pub mod batch;
pub mod control;
pub mod ids;
pub mod records;
pub mod validate;
pub mod wire;

pub use batch::{BatchError, BatchHeader, BatchSpan};
pub use ids::{BrokerId, NO_BROKER, TopicPartition, new_cluster_id};
