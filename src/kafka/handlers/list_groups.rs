//! ListGroups: every shard's groups.

use std::rc::Rc;

use futures_channel::oneshot;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};
use kafka_protocol::protocol::StrBytes;

use crate::group::GroupCall;
use crate::kafka::connection::Connection;
use crate::security::acl;

/// Answers ListGroups.
pub async fn handle(conn: &Rc<Connection>, request: ListGroupsRequest, version: i16) -> ListGroupsResponse {
    let states: Vec<String> = request.states_filter.iter().map(|s| s.as_str().to_owned()).collect();
    // Classic and consumer-protocol (KIP-848) groups, as the type filter asks.
    let types_ok = |group_type: &str| {
        request.types_filter.is_empty()
            || request.types_filter.iter().any(|t| t.as_str().eq_ignore_ascii_case(group_type))
    };
    let all_visible = conn.cluster_allowed(acl::op::DESCRIBE);
    let groups = &conn.ctx.groups;
    let mut listings = Vec::new();
    for shard in 0..groups.shards().count() {
        let states = states.clone();
        let listing = groups.control_on(shard, move |coordinator| async move {
            let (reply, rx) = oneshot::channel();
            crate::group::handle_call(coordinator, GroupCall::List { states, reply }).await;
            rx.await.unwrap_or_default()
        });
        listings.push(listing.await);
    }
    let mut groups = Vec::new();
    for listing in listings {
        for g in listing.unwrap_or_default() {
            if !types_ok(g.group_type)
                || !(all_visible || conn.allowed(acl::op::DESCRIBE, acl::resource::GROUP, &g.group_id))
            {
                continue;
            }
            let mut listed = ListedGroup::default()
                .with_group_id(GroupId(StrBytes::from_string(g.group_id)))
                .with_protocol_type(StrBytes::from_string(g.protocol_type));
            if version >= 4 {
                listed = listed.with_group_state(StrBytes::from_string(g.state));
            }
            if version >= 5 {
                listed = listed.with_group_type(StrBytes::from_static_str(g.group_type));
            }
            groups.push(listed);
        }
    }
    groups.sort_by(|a, b| a.group_id.as_str().cmp(b.group_id.as_str()));
    ListGroupsResponse::default().with_groups(groups)
}
