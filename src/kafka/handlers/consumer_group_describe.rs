//! ConsumerGroupDescribe (KIP-848): a consumer-protocol group's epochs, assignor and members,
//! each with its current and target assignment.

use std::collections::BTreeSet;
use std::rc::Rc;

use kafka_protocol::messages::consumer_group_describe_response::{Assignment, DescribedGroup, Member, TopicPartitions};
use kafka_protocol::messages::{ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::call_group;
use crate::cluster::MetadataView;
use crate::group::consumer::Partition;
use crate::group::{GroupCall, GroupError};
use crate::kafka::connection::Connection;
use crate::kafka::errors::group_error;
use crate::security::acl;

/// Answers ConsumerGroupDescribe.
pub async fn handle(
    conn: &Rc<Connection>,
    request: ConsumerGroupDescribeRequest,
    _version: i16,
) -> ConsumerGroupDescribeResponse {
    let view = conn.ctx.view();
    let mut groups = Vec::new();
    for group_id in &request.group_ids {
        let id = group_id.as_str().to_owned();
        let described = match conn.allowed(acl::op::DESCRIBE, acl::resource::GROUP, &id) {
            true => call_group(conn, &id, |reply| GroupCall::ConsumerDescribe { group_id: id.clone(), reply })
                .await
                .and_then(|r| r),
            false => Err(GroupError::NotAuthorized),
        };
        let mut out = DescribedGroup::default().with_group_id(group_id.clone()).with_authorized_operations(i32::MIN);
        match described {
            Err(error) => {
                out =
                    out.with_error_code(group_error(error).code()).with_group_state(StrBytes::from_static_str("Dead"));
            }
            Ok(group) => {
                let members = group
                    .members
                    .values()
                    .map(|m| {
                        Member::default()
                            .with_member_id(StrBytes::from_string(m.member_id.clone()))
                            .with_instance_id(m.instance_id.clone().map(StrBytes::from_string))
                            .with_rack_id(m.rack_id.clone().map(StrBytes::from_string))
                            .with_member_epoch(m.member_epoch)
                            .with_client_id(StrBytes::from_string(m.client_id.clone()))
                            .with_client_host(StrBytes::from_string(m.client_host.clone()))
                            .with_subscribed_topic_names(
                                m.subscribed.iter().map(|t| TopicName(StrBytes::from_string(t.clone()))).collect(),
                            )
                            .with_assignment(assignment(&view, &m.assigned))
                            .with_target_assignment(assignment(
                                &view,
                                group.target.get(&m.member_id).unwrap_or(&BTreeSet::new()),
                            ))
                            .with_member_type(1)
                    })
                    .collect();
                if request.include_authorized_operations {
                    out = out.with_authorized_operations(conn.authorized_operations(acl::resource::GROUP, &id));
                }
                out = out
                    .with_group_state(StrBytes::from_static_str(group.state_name()))
                    .with_group_epoch(group.group_epoch)
                    .with_assignment_epoch(group.assignment_epoch)
                    .with_assignor_name(StrBytes::from_string(group.assignor.clone()))
                    .with_members(members);
            }
        }
        groups.push(out);
    }
    ConsumerGroupDescribeResponse::default().with_groups(groups)
}

/// Partitions by topic, with ids and names.
fn assignment(view: &MetadataView, partitions: &BTreeSet<Partition>) -> Assignment {
    let topics = by_topic(view, partitions)
        .into_iter()
        .map(|(id, name, partitions)| {
            TopicPartitions::default()
                .with_topic_id(id)
                .with_topic_name(TopicName(StrBytes::from_string(name.to_owned())))
                .with_partitions(partitions)
        })
        .collect();
    Assignment::default().with_topic_partitions(topics)
}

/// Partitions (sorted by topic) grouped by topic: id, name and indexes; topics that no longer
/// exist are left out.
pub(super) fn by_topic<'a>(
    view: &MetadataView,
    partitions: &'a BTreeSet<Partition>,
) -> Vec<(uuid::Uuid, &'a str, Vec<i32>)> {
    let mut topics: Vec<(uuid::Uuid, &str, Vec<i32>)> = Vec::new();
    for (topic, partition) in partitions {
        let Some(image) = view.topic(topic) else { continue };
        match topics.last_mut() {
            Some(last) if last.0 == image.id => last.2.push(*partition),
            _ => topics.push((image.id, topic, vec![*partition])),
        }
    }
    topics
}
