//! DescribeLogDirs: the size of every replica this broker stores (leader or follower), in its one
//! log directory, with the directory's total and usable bytes (v4+).

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::kafka::connection::Connection;
use crate::model::TopicPartition;
use crate::partition::PartitionStatus;
use crate::security::acl;

/// Answers DescribeLogDirs.
pub async fn handle(conn: &Rc<Connection>, request: DescribeLogDirsRequest, version: i16) -> DescribeLogDirsResponse {
    if !conn.cluster_allowed(acl::op::DESCRIBE) {
        return DescribeLogDirsResponse::default()
            .with_error_code(kafka_protocol::error::ResponseError::ClusterAuthorizationFailed.code());
    }
    let partitions = &conn.ctx.partitions;
    let mut stored: Vec<(TopicPartition, PartitionStatus)> = Vec::new();
    for shard in 0..partitions.shards().count() {
        let listed = partitions
            .control_on(shard, |manager| async move {
                manager.all().iter().map(|p| (p.key(), p.status())).collect::<Vec<_>>()
            })
            .await;
        match listed {
            Ok(listed) => stored.extend(listed),
            // A shard that has stopped cannot say what it stores: the directory is unreadable.
            Err(_) => return answer(conn, version, ResponseError::KafkaStorageError.code(), Vec::new()),
        }
    }
    let view = conn.ctx.view();
    // Asked for: every topic (null) or the named partitions.
    let wanted: Option<BTreeMap<&str, &[i32]>> = request
        .topics
        .as_ref()
        .map(|topics| topics.iter().map(|t| (t.topic.as_str(), t.partitions.as_slice())).collect());
    let mut by_topic: BTreeMap<String, Vec<DescribeLogDirsPartition>> = BTreeMap::new();
    for ((topic_id, index), status) in stored {
        let Some(topic) = view.topic_by_id(&topic_id) else { continue };
        if let Some(wanted) = &wanted
            && !wanted.get(topic.name.as_str()).is_some_and(|asked| asked.contains(&index))
        {
            continue;
        }
        by_topic.entry(topic.name.to_string()).or_default().push(
            DescribeLogDirsPartition::default()
                .with_partition_index(index)
                .with_partition_size(status.size_bytes as i64)
                // How far the log end is behind the high watermark (0 once caught up).
                .with_offset_lag((status.high_watermark - status.log_end_offset).max(0))
                .with_is_future_key(false),
        );
    }
    let topics = by_topic
        .into_iter()
        .map(|(name, mut partitions)| {
            partitions.sort_by_key(|p| p.partition_index);
            DescribeLogDirsTopic::default()
                .with_name(TopicName(StrBytes::from_string(name)))
                .with_partitions(partitions)
        })
        .collect();
    answer(conn, version, 0, topics)
}

/// The broker's one log directory, as DescribeLogDirs names it (and AlterReplicaLogDirs is
/// asked for it).
pub fn log_dir(conn: &Connection) -> std::path::PathBuf {
    let dir = &conn.ctx.config.data_dir;
    std::path::absolute(dir).unwrap_or_else(|_| dir.clone())
}

fn answer(conn: &Connection, version: i16, code: i16, topics: Vec<DescribeLogDirsTopic>) -> DescribeLogDirsResponse {
    let dir = &conn.ctx.config.data_dir;
    let dir_name = log_dir(conn);
    let mut result = DescribeLogDirsResult::default()
        .with_error_code(code)
        .with_log_dir(StrBytes::from_string(dir_name.display().to_string()))
        .with_topics(topics);
    if version >= 4 {
        let (total, usable) = crate::io::fs::space(dir).map_or((-1, -1), |(t, u)| (t as i64, u as i64));
        result = result.with_total_bytes(total).with_usable_bytes(usable);
    }
    let mut response = DescribeLogDirsResponse::default().with_results(vec![result]);
    if version >= 3 {
        response = response.with_error_code(0);
    }
    response
}
