//! AlterReplicaLogDirs: moving replicas between a broker's log directories. A broker here has
//! one (its data directory): a replica asked to be where it already is succeeds (nothing to
//! move), any other directory is `LOG_DIR_NOT_FOUND`.

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_replica_log_dirs_response::{
    AlterReplicaLogDirPartitionResult, AlterReplicaLogDirTopicResult,
};
use kafka_protocol::messages::{AlterReplicaLogDirsRequest, AlterReplicaLogDirsResponse};

use crate::kafka::connection::Connection;
use crate::security::acl;

/// Answers AlterReplicaLogDirs.
pub async fn handle(
    conn: &Rc<Connection>,
    request: AlterReplicaLogDirsRequest,
    _version: i16,
) -> AlterReplicaLogDirsResponse {
    let allowed = conn.cluster_allowed(acl::op::ALTER);
    let ours = super::describe_log_dirs::log_dir(conn);
    let view = conn.ctx.view();
    let broker = conn.ctx.config.broker_id;
    let mut results: Vec<AlterReplicaLogDirTopicResult> = Vec::new();
    for dir in &request.dirs {
        let asked = std::path::absolute(dir.path.as_str()).unwrap_or_else(|_| dir.path.as_str().into());
        for topic in &dir.topics {
            let found = view.topic(topic.name.as_str());
            let partitions = topic
                .partitions
                .iter()
                .map(|&index| {
                    let code = if !allowed {
                        ResponseError::ClusterAuthorizationFailed.code()
                    } else if asked != ours {
                        ResponseError::LogDirNotFound.code()
                    } else {
                        match found.and_then(|t| t.partition(index)) {
                            Some(p) if p.replicas.contains(&broker) => 0,
                            // Not a replica here (or no such partition).
                            _ => ResponseError::ReplicaNotAvailable.code(),
                        }
                    };
                    AlterReplicaLogDirPartitionResult::default().with_partition_index(index).with_error_code(code)
                })
                .collect();
            results.push(
                AlterReplicaLogDirTopicResult::default()
                    .with_topic_name(topic.name.clone())
                    .with_partitions(partitions),
            );
        }
    }
    AlterReplicaLogDirsResponse::default().with_results(results)
}
