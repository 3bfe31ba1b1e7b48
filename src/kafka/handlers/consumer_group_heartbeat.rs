//! ConsumerGroupHeartbeat (KIP-848): a consumer-protocol member joins, stays, receives its
//! assignment and leaves, all through this one call. Topic ids become names here.

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::consumer_group_heartbeat_response::{Assignment, TopicPartitions};
use kafka_protocol::messages::{ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse};
use kafka_protocol::protocol::StrBytes;

use super::{call_group, client_host};
use crate::group::GroupCall;
use crate::group::consumer::{ConsumerHeartbeat, ConsumerHeartbeatAnswer};
use crate::kafka::connection::Connection;
use crate::kafka::errors::group_error;
use crate::security::acl;

/// Answers ConsumerGroupHeartbeat.
pub async fn handle(
    conn: &Rc<Connection>,
    request: ConsumerGroupHeartbeatRequest,
    _version: i16,
) -> ConsumerGroupHeartbeatResponse {
    let group_id = request.group_id.as_str().to_owned();
    let refuse = |code: ResponseError, message: &str| {
        ConsumerGroupHeartbeatResponse::default()
            .with_error_code(code.code())
            .with_error_message(Some(StrBytes::from_string(message.to_owned())))
            .with_member_epoch(request.member_epoch)
    };
    if !conn.allowed(acl::op::READ, acl::resource::GROUP, &group_id) {
        return refuse(ResponseError::GroupAuthorizationFailed, "not allowed to read the group");
    }
    let view = conn.ctx.view();
    let subscribed: Option<Vec<String>> =
        request.subscribed_topic_names.as_ref().map(|names| names.iter().map(|n| n.as_str().to_owned()).collect());
    if let Some(names) = &subscribed
        && let Some(denied) = names.iter().find(|t| !conn.allowed(acl::op::DESCRIBE, acl::resource::TOPIC, t))
    {
        return refuse(ResponseError::TopicAuthorizationFailed, &format!("not allowed to describe topic {denied}"));
    }
    // Owned partitions of topics that no longer exist are owned no more.
    let owned = request.topic_partitions.as_ref().map(|topics| {
        topics
            .iter()
            .filter_map(|t| view.topic_by_id(&t.topic_id).map(|image| (image.name.clone(), &t.partitions)))
            .flat_map(|(name, partitions)| partitions.iter().map(move |p| (name.clone(), *p)))
            .collect()
    });
    let heartbeat = ConsumerHeartbeat {
        group_id: group_id.clone(),
        member_id: request.member_id.as_str().to_owned(),
        member_epoch: request.member_epoch,
        instance_id: request.instance_id.as_ref().map(|s| s.as_str().to_owned()),
        rack_id: request.rack_id.as_ref().map(|s| s.as_str().to_owned()),
        rebalance_timeout_ms: request.rebalance_timeout_ms,
        subscribed,
        regex: request.subscribed_topic_regex.as_ref().map(|s| s.as_str().to_owned()),
        server_assignor: request.server_assignor.as_ref().map(|s| s.as_str().to_owned()),
        owned,
        client_id: conn.client_id.borrow().clone().unwrap_or_default(),
        client_host: client_host(conn),
    };
    let answer = call_group(conn, &group_id, |reply| GroupCall::ConsumerHeartbeat(heartbeat.clone(), reply))
        .await
        .unwrap_or_else(|error| ConsumerHeartbeatAnswer {
            error: Some(error),
            member_id: heartbeat.member_id.clone(),
            member_epoch: request.member_epoch,
            ..Default::default()
        });
    let assignment = answer.assignment.map(|partitions| {
        let topics = super::consumer_group_describe::by_topic(&view, &partitions)
            .into_iter()
            .map(|(id, _, partitions)| TopicPartitions::default().with_topic_id(id).with_partitions(partitions))
            .collect();
        Assignment::default().with_topic_partitions(topics)
    });
    ConsumerGroupHeartbeatResponse::default()
        .with_error_code(answer.error.map_or(0, |e| group_error(e).code()))
        .with_error_message(answer.message.map(StrBytes::from_string))
        .with_member_id((!answer.member_id.is_empty()).then(|| StrBytes::from_string(answer.member_id)))
        .with_member_epoch(answer.member_epoch)
        .with_heartbeat_interval_ms(conn.ctx.config.group_consumer_heartbeat_interval_ms)
        .with_assignment(assignment)
}
