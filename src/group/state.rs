//! The classic group state machine (Empty, PreparingRebalance, CompletingRebalance, Stable,
//! Dead), with generations, member-id and static-instance fencing, session and rebalance
//! timeouts. Pure state: the coordinator does the I/O (storing records, sending replies).

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use futures_channel::oneshot;
use kafka_protocol::indexmap::IndexMap;

use super::store::{StoredGroup, StoredMember, StoredOffset};
use super::{GroupError, JoinRequest, JoinResponse, JoinedMember, SyncRequest, SyncResponse};

/// Where a group is in its lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupState {
    /// No members (offsets may remain).
    Empty,
    /// Waiting for members to (re)join.
    PreparingRebalance,
    /// Joined; waiting for the leader's assignment.
    CompletingRebalance,
    /// Assigned and running.
    Stable,
    /// Deleted.
    Dead,
}

impl GroupState {
    /// The name Kafka uses in DescribeGroups and ListGroups.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// Limits from the broker configuration.
#[derive(Clone, Copy, Debug)]
pub struct GroupLimits {
    /// Smallest session timeout.
    pub min_session_timeout_ms: i32,
    /// Largest session timeout.
    pub max_session_timeout_ms: i32,
    /// Delay before the first rebalance of an empty group completes.
    pub initial_rebalance_delay_ms: i64,
    /// Most members.
    pub max_size: usize,
}

/// A member.
pub struct Member {
    /// Id.
    pub member_id: String,
    /// Static instance id.
    pub group_instance_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client host.
    pub client_host: String,
    /// Session timeout.
    pub session_timeout_ms: i32,
    /// Rebalance timeout.
    pub rebalance_timeout_ms: i32,
    /// Protocols with metadata, in preference order.
    pub protocols: Vec<(String, Bytes)>,
    /// Current assignment.
    pub assignment: Bytes,
    /// A JoinGroup waiting for the rebalance to complete.
    pub awaiting_join: Option<oneshot::Sender<JoinResponse>>,
    /// A SyncGroup waiting for the leader's assignment.
    pub awaiting_sync: Option<oneshot::Sender<SyncResponse>>,
    /// Last sign of life.
    pub last_heartbeat_ms: i64,
}

impl Member {
    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols.iter().find(|(name, _)| name == protocol).map(|(_, m)| m.clone()).unwrap_or_default()
    }

    fn expired(&self, now_ms: i64) -> bool {
        self.awaiting_join.is_none()
            && self.awaiting_sync.is_none()
            && now_ms - self.last_heartbeat_ms > i64::from(self.session_timeout_ms)
    }
}

/// A consumer group.
pub struct Group {
    /// Id.
    pub id: String,
    /// State.
    pub state: GroupState,
    /// Generation.
    pub generation: i32,
    /// Protocol type of the members.
    pub protocol_type: Option<String>,
    /// Chosen protocol.
    pub protocol: Option<String>,
    /// Leader.
    pub leader: Option<String>,
    /// Members in join order.
    pub members: IndexMap<String, Member>,
    /// Member ids handed out by MEMBER_ID_REQUIRED, not yet joined, with their expiry.
    pub pending_members: HashMap<String, i64>,
    /// Static instance id → member id.
    pub static_members: HashMap<String, String>,
    /// Committed offsets.
    pub offsets: HashMap<(String, i32), StoredOffset>,
    /// When a rebalance must complete.
    pub rebalance_deadline_ms: Option<i64>,
    /// When the initial delay of a rebalance of an empty group ends.
    pub initial_delay_until_ms: Option<i64>,
    /// When the leader's assignment must have arrived.
    pub sync_deadline_ms: Option<i64>,
    /// When the state last changed.
    pub state_since_ms: i64,
    /// Its consumer-protocol (KIP-848) members, when it is such a group.
    pub consumer: super::consumer::ConsumerGroup,
}

/// Something the coordinator must persist after a state change.
#[derive(Debug, PartialEq, Eq)]
pub enum Persist {
    /// Write the group's metadata record.
    GroupMetadata,
}

impl Group {
    /// A new, empty group.
    pub fn new(id: &str, now_ms: i64) -> Self {
        Self {
            id: id.to_owned(),
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: IndexMap::new(),
            pending_members: HashMap::new(),
            static_members: HashMap::new(),
            offsets: HashMap::new(),
            rebalance_deadline_ms: None,
            initial_delay_until_ms: None,
            sync_deadline_ms: None,
            state_since_ms: now_ms,
            consumer: Default::default(),
        }
    }

    /// Whether consumer-protocol (KIP-848) members are in the group: classic calls are refused.
    pub fn has_consumer_members(&self) -> bool {
        !self.consumer.members.is_empty()
    }

    fn transition(&mut self, state: GroupState, now_ms: i64) {
        self.state = state;
        self.state_since_ms = now_ms;
    }

    /// The stored form of the group's metadata.
    pub fn to_stored(&self) -> StoredGroup {
        let protocol = self.protocol.clone().unwrap_or_default();
        StoredGroup {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            current_state_timestamp: self.state_since_ms,
            members: self
                .members
                .values()
                .map(|m| StoredMember {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                    subscription: m.metadata_for(&protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    /// Restores a group from its stored metadata: a group with members comes back Stable with
    /// their assignments, so they can resume without a rebalance if they heartbeat in time.
    pub fn restore(&mut self, stored: StoredGroup, now_ms: i64) {
        self.generation = stored.generation;
        self.protocol_type = (!stored.protocol_type.is_empty()).then_some(stored.protocol_type);
        self.protocol = stored.protocol.clone();
        self.leader = stored.leader;
        self.members.clear();
        self.static_members.clear();
        let protocol = stored.protocol.unwrap_or_default();
        for m in stored.members {
            if let Some(instance) = &m.group_instance_id {
                self.static_members.insert(instance.clone(), m.member_id.clone());
            }
            self.members.insert(
                m.member_id.clone(),
                Member {
                    member_id: m.member_id,
                    group_instance_id: m.group_instance_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    session_timeout_ms: m.session_timeout_ms,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    protocols: vec![(protocol.clone(), m.subscription)],
                    assignment: m.assignment,
                    awaiting_join: None,
                    awaiting_sync: None,
                    last_heartbeat_ms: now_ms,
                },
            );
        }
        let state = if self.members.is_empty() { GroupState::Empty } else { GroupState::Stable };
        self.transition(state, now_ms);
    }

    fn check_member(&self, member_id: &str, instance: Option<&str>) -> Result<(), GroupError> {
        if let Some(instance) = instance {
            match self.static_members.get(instance) {
                Some(current) if current != member_id => return Err(GroupError::FencedInstanceId),
                _ => {}
            }
        }
        if !self.members.contains_key(member_id) {
            return Err(GroupError::UnknownMemberId);
        }
        Ok(())
    }

    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        // At least one protocol every member supports.
        protocols.iter().any(|(name, _)| self.members.values().all(|m| m.protocols.iter().any(|(n, _)| n == name)))
    }

    /// Handles JoinGroup. The reply is sent now (errors, MEMBER_ID_REQUIRED, a static member
    /// rejoining a stable group) or parked until the rebalance completes.
    pub fn join(
        &mut self,
        request: JoinRequest,
        reply: oneshot::Sender<JoinResponse>,
        limits: &GroupLimits,
        now_ms: i64,
    ) {
        let fail = |reply: oneshot::Sender<JoinResponse>, error: GroupError, member_id: String| {
            let _ = reply.send(JoinResponse {
                error: Some(error),
                generation_id: -1,
                member_id,
                ..JoinResponse::default()
            });
        };
        if request.session_timeout_ms < limits.min_session_timeout_ms
            || request.session_timeout_ms > limits.max_session_timeout_ms
        {
            return fail(reply, GroupError::InvalidSessionTimeout, request.member_id);
        }
        if self.state == GroupState::Dead {
            return fail(reply, GroupError::CoordinatorNotAvailable, request.member_id);
        }
        let known = self.members.contains_key(&request.member_id);
        if !known && !self.supports(&request.protocol_type, &request.protocols) {
            return fail(reply, GroupError::InconsistentGroupProtocol, request.member_id);
        }
        if request.member_id.is_empty() {
            self.join_unknown_member(request, reply, limits, now_ms);
        } else {
            self.join_known_member(request, reply, limits, now_ms);
        }
    }

    fn new_member_id(client_id: &str) -> String {
        format!("{client_id}-{}", uuid::Uuid::new_v4())
    }

    fn join_unknown_member(
        &mut self,
        request: JoinRequest,
        reply: oneshot::Sender<JoinResponse>,
        limits: &GroupLimits,
        now_ms: i64,
    ) {
        if let Some(instance) = request.group_instance_id.clone()
            && let Some(old_id) = self.static_members.get(&instance).cloned()
        {
            return self.replace_static_member(old_id, request, reply, now_ms);
        }
        if self.members.len() + self.pending_members.len() >= limits.max_size {
            let _ = reply.send(JoinResponse {
                error: Some(GroupError::GroupMaxSizeReached),
                generation_id: -1,
                ..JoinResponse::default()
            });
            return;
        }
        let member_id = Self::new_member_id(&request.client_id);
        if request.require_known_member_id && request.group_instance_id.is_none() {
            // KIP-394: hand out the id first; the member rejoins with it.
            self.pending_members.insert(member_id.clone(), now_ms + i64::from(request.session_timeout_ms));
            let _ = reply.send(JoinResponse {
                error: Some(GroupError::MemberIdRequired),
                generation_id: -1,
                member_id,
                ..JoinResponse::default()
            });
            return;
        }
        self.add_member(member_id, request, reply, limits, now_ms);
    }

    fn join_known_member(
        &mut self,
        request: JoinRequest,
        reply: oneshot::Sender<JoinResponse>,
        limits: &GroupLimits,
        now_ms: i64,
    ) {
        if self.pending_members.remove(&request.member_id).is_some() {
            let member_id = request.member_id.clone();
            return self.add_member(member_id, request, reply, limits, now_ms);
        }
        if let Err(error) = self.check_member(&request.member_id, request.group_instance_id.as_deref()) {
            let _ = reply.send(JoinResponse {
                error: Some(error),
                generation_id: -1,
                member_id: request.member_id,
                ..JoinResponse::default()
            });
            return;
        }
        let is_leader = self.leader.as_deref() == Some(request.member_id.as_str());
        let member = self.members.get_mut(&request.member_id).expect("checked");
        let changed = member.protocols != request.protocols;
        member.protocols = request.protocols;
        member.session_timeout_ms = request.session_timeout_ms;
        member.rebalance_timeout_ms = request.rebalance_timeout_ms;
        member.last_heartbeat_ms = now_ms;
        if let Some(previous) = member.awaiting_join.replace(reply) {
            drop(previous);
        }
        match self.state {
            GroupState::PreparingRebalance => self.maybe_complete_join(now_ms),
            // A follower rejoining a stable group with the same metadata gets the current
            // generation; a member whose JoinGroup answer was lost gets it again.
            GroupState::Stable | GroupState::CompletingRebalance
                if !changed && (self.state == GroupState::CompletingRebalance || !is_leader) =>
            {
                let member = self.members.get_mut(&request.member_id).expect("checked");
                let reply = member.awaiting_join.take().expect("just set");
                let _ = reply.send(self.join_response_for(&request.member_id));
            }
            _ => {
                self.prepare_rebalance(now_ms);
                self.maybe_complete_join(now_ms);
            }
        }
    }

    fn replace_static_member(
        &mut self,
        old_id: String,
        request: JoinRequest,
        reply: oneshot::Sender<JoinResponse>,
        now_ms: i64,
    ) {
        let new_id = Self::new_member_id(&request.client_id);
        let Some(mut member) = self.members.shift_remove(&old_id) else {
            self.static_members.remove(request.group_instance_id.as_deref().unwrap_or_default());
            return;
        };
        // The old incarnation is fenced: its pending requests fail.
        if let Some(old_join) = member.awaiting_join.take() {
            let _ = old_join.send(JoinResponse {
                error: Some(GroupError::FencedInstanceId),
                generation_id: -1,
                member_id: old_id.clone(),
                ..JoinResponse::default()
            });
        }
        if let Some(old_sync) = member.awaiting_sync.take() {
            let _ =
                old_sync.send(SyncResponse { error: Some(GroupError::FencedInstanceId), ..SyncResponse::default() });
        }
        let changed = member.protocols != request.protocols;
        member.member_id = new_id.clone();
        member.protocols = request.protocols;
        member.session_timeout_ms = request.session_timeout_ms;
        member.rebalance_timeout_ms = request.rebalance_timeout_ms;
        member.client_id = request.client_id;
        member.client_host = request.client_host;
        member.last_heartbeat_ms = now_ms;
        if self.leader.as_deref() == Some(old_id.as_str()) {
            self.leader = Some(new_id.clone());
        }
        let instance = request.group_instance_id.expect("static");
        self.static_members.insert(instance, new_id.clone());
        member.awaiting_join = Some(reply);
        self.members.insert(new_id.clone(), member);
        match self.state {
            // KIP-345: a static member that restarts gets its old assignment back, no rebalance.
            GroupState::Stable if !changed => {
                let member = self.members.get_mut(&new_id).expect("inserted");
                let reply = member.awaiting_join.take().expect("set");
                let mut response = self.join_response_for(&new_id);
                if self.leader.as_deref() == Some(new_id.as_str()) {
                    // The leader must not recompute the assignment: give it no member list.
                    response.members.clear();
                }
                let _ = reply.send(response);
            }
            GroupState::PreparingRebalance => self.maybe_complete_join(now_ms),
            _ => self.prepare_rebalance(now_ms),
        }
    }

    fn add_member(
        &mut self,
        member_id: String,
        request: JoinRequest,
        reply: oneshot::Sender<JoinResponse>,
        limits: &GroupLimits,
        now_ms: i64,
    ) {
        if self.members.is_empty() {
            self.protocol_type = Some(request.protocol_type.clone());
        }
        if let Some(instance) = &request.group_instance_id {
            self.static_members.insert(instance.clone(), member_id.clone());
        }
        let was_empty = self.state == GroupState::Empty;
        self.members.insert(
            member_id.clone(),
            Member {
                member_id,
                group_instance_id: request.group_instance_id,
                client_id: request.client_id,
                client_host: request.client_host,
                session_timeout_ms: request.session_timeout_ms,
                rebalance_timeout_ms: request.rebalance_timeout_ms,
                protocols: request.protocols,
                assignment: Bytes::new(),
                awaiting_join: Some(reply),
                awaiting_sync: None,
                last_heartbeat_ms: now_ms,
            },
        );
        if self.state == GroupState::PreparingRebalance {
            // A new member during the initial delay extends it (Kafka's InitialDelayedJoin).
            if let Some(until) = self.initial_delay_until_ms {
                let limit = self.rebalance_deadline_ms.unwrap_or(until);
                self.initial_delay_until_ms = Some((now_ms + limits.initial_rebalance_delay_ms).min(limit));
            }
            self.maybe_complete_join(now_ms);
        } else {
            self.prepare_rebalance(now_ms);
            if was_empty && limits.initial_rebalance_delay_ms > 0 {
                self.initial_delay_until_ms = Some(now_ms + limits.initial_rebalance_delay_ms);
            } else {
                self.maybe_complete_join(now_ms);
            }
        }
    }

    /// Starts a rebalance: members must rejoin within the rebalance timeout.
    pub fn prepare_rebalance(&mut self, now_ms: i64) {
        // Members waiting for an assignment of the old generation must rejoin.
        for member in self.members.values_mut() {
            if let Some(sync) = member.awaiting_sync.take() {
                let _ =
                    sync.send(SyncResponse { error: Some(GroupError::RebalanceInProgress), ..SyncResponse::default() });
            }
        }
        let timeout = self.members.values().map(|m| i64::from(m.rebalance_timeout_ms)).max().unwrap_or(0);
        self.rebalance_deadline_ms = Some(now_ms + timeout);
        self.sync_deadline_ms = None;
        self.initial_delay_until_ms = None;
        self.transition(GroupState::PreparingRebalance, now_ms);
    }

    /// Completes the join phase when every member has rejoined (after any initial delay).
    pub fn maybe_complete_join(&mut self, now_ms: i64) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        if self.initial_delay_until_ms.is_some_and(|until| now_ms < until) {
            return;
        }
        let all_joined = self.members.values().all(|m| m.awaiting_join.is_some()) && self.pending_members.is_empty();
        if all_joined || self.rebalance_deadline_ms.is_some_and(|d| now_ms >= d) {
            self.complete_join(now_ms);
        }
    }

    /// Ends the join phase: members that did not rejoin are dropped, a new generation begins,
    /// and every waiting JoinGroup is answered (the leader gets the member list).
    fn complete_join(&mut self, now_ms: i64) {
        let gone: Vec<String> =
            self.members.values().filter(|m| m.awaiting_join.is_none()).map(|m| m.member_id.clone()).collect();
        for id in gone {
            self.forget_member(&id);
        }
        self.pending_members.clear();
        self.initial_delay_until_ms = None;
        self.rebalance_deadline_ms = None;
        self.generation += 1;
        if self.members.is_empty() {
            self.protocol = None;
            self.leader = None;
            self.transition(GroupState::Empty, now_ms);
            return;
        }
        self.protocol = self.select_protocol();
        if self.leader.as_ref().is_none_or(|l| !self.members.contains_key(l)) {
            self.leader = self.members.keys().next().cloned();
        }
        let sync_timeout = self.members.values().map(|m| i64::from(m.rebalance_timeout_ms)).max().unwrap_or(0);
        self.sync_deadline_ms = Some(now_ms + sync_timeout);
        self.transition(GroupState::CompletingRebalance, now_ms);
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let response = self.join_response_for(&id);
            let member = self.members.get_mut(&id).expect("member");
            member.last_heartbeat_ms = now_ms;
            if let Some(reply) = member.awaiting_join.take() {
                let _ = reply.send(response);
            }
        }
    }

    fn join_response_for(&self, member_id: &str) -> JoinResponse {
        let protocol = self.protocol.clone().unwrap_or_default();
        let is_leader = self.leader.as_deref() == Some(member_id);
        JoinResponse {
            error: None,
            generation_id: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: member_id.to_owned(),
            members: if is_leader {
                self.members
                    .values()
                    .map(|m| JoinedMember {
                        member_id: m.member_id.clone(),
                        group_instance_id: m.group_instance_id.clone(),
                        metadata: m.metadata_for(&protocol),
                    })
                    .collect()
            } else {
                Vec::new()
            },
        }
    }

    /// The protocol supported by every member that most members prefer.
    fn select_protocol(&self) -> Option<String> {
        let candidates: Vec<&String> = self
            .members
            .values()
            .next()?
            .protocols
            .iter()
            .map(|(name, _)| name)
            .filter(|name| self.members.values().all(|m| m.protocols.iter().any(|(n, _)| n == *name)))
            .collect();
        let mut votes: Vec<(usize, &String)> = candidates.iter().map(|c| (0, *c)).collect();
        for member in self.members.values() {
            if let Some((name, _)) = member.protocols.iter().find(|(n, _)| candidates.contains(&n))
                && let Some(v) = votes.iter_mut().find(|(_, c)| *c == name)
            {
                v.0 += 1;
            }
        }
        // Most votes; ties go to the first candidate in preference order.
        let best = votes.iter().map(|(n, _)| *n).max()?;
        votes.iter().find(|(n, _)| *n == best).map(|(_, c)| (*c).clone())
    }

    fn forget_member(&mut self, member_id: &str) {
        if let Some(member) = self.members.shift_remove(member_id)
            && let Some(instance) = member.group_instance_id
            && self.static_members.get(&instance).map(String::as_str) == Some(member_id)
        {
            self.static_members.remove(&instance);
        }
        if self.leader.as_deref() == Some(member_id) {
            self.leader = None;
        }
    }

    /// Removes a member (left or expired) and rebalances what remains. Returns whether the
    /// group's metadata must be stored (it became empty). A member already gone changes nothing:
    /// when several sessions expire in one tick, the first removal may complete the join and
    /// drop the others, which must not start another rebalance.
    pub fn remove_member(&mut self, member_id: &str, now_ms: i64) -> Option<Persist> {
        if !self.members.contains_key(member_id) {
            return None;
        }
        self.forget_member(member_id);
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                if self.members.is_empty() {
                    self.generation += 1;
                    self.protocol = None;
                    self.transition(GroupState::Empty, now_ms);
                    Some(Persist::GroupMetadata)
                } else {
                    self.prepare_rebalance(now_ms);
                    self.maybe_complete_join(now_ms);
                    None
                }
            }
            GroupState::PreparingRebalance => {
                self.maybe_complete_join(now_ms);
                (self.state == GroupState::Empty).then_some(Persist::GroupMetadata)
            }
            GroupState::Empty | GroupState::Dead => None,
        }
    }

    /// Handles SyncGroup. Returns true when this was the leader's sync and the assignment must
    /// now be stored; the coordinator then calls [`Group::complete_sync`].
    pub fn sync(&mut self, request: SyncRequest, reply: oneshot::Sender<SyncResponse>, now_ms: i64) -> bool {
        let fail = |reply: oneshot::Sender<SyncResponse>, error: GroupError| {
            let _ = reply.send(SyncResponse { error: Some(error), ..SyncResponse::default() });
        };
        if let Err(error) = self.check_member(&request.member_id, request.group_instance_id.as_deref()) {
            return {
                fail(reply, error);
                false
            };
        }
        if request.generation_id != self.generation {
            fail(reply, GroupError::IllegalGeneration);
            return false;
        }
        if request.protocol_type.as_ref().is_some_and(|t| Some(t) != self.protocol_type.as_ref())
            || request.protocol_name.as_ref().is_some_and(|p| Some(p) != self.protocol.as_ref())
        {
            fail(reply, GroupError::InconsistentGroupProtocol);
            return false;
        }
        match self.state {
            GroupState::Empty | GroupState::Dead => {
                fail(reply, GroupError::UnknownMemberId);
                false
            }
            GroupState::PreparingRebalance => {
                fail(reply, GroupError::RebalanceInProgress);
                false
            }
            GroupState::Stable => {
                let member = self.members.get_mut(&request.member_id).expect("checked");
                member.last_heartbeat_ms = now_ms;
                let _ = reply.send(SyncResponse {
                    error: None,
                    protocol_type: self.protocol_type.clone(),
                    protocol_name: self.protocol.clone(),
                    assignment: member.assignment.clone(),
                });
                false
            }
            GroupState::CompletingRebalance => {
                let is_leader = self.leader.as_deref() == Some(request.member_id.as_str());
                let member = self.members.get_mut(&request.member_id).expect("checked");
                member.last_heartbeat_ms = now_ms;
                member.awaiting_sync = Some(reply);
                if is_leader {
                    for m in self.members.values_mut() {
                        m.assignment = Bytes::new();
                    }
                    for (id, assignment) in request.assignments {
                        if let Some(m) = self.members.get_mut(&id) {
                            m.assignment = assignment;
                        }
                    }
                    return true;
                }
                false
            }
        }
    }

    /// After the leader's assignment was stored: the group becomes Stable and every waiting
    /// SyncGroup gets its assignment. `stored` is false when the write failed: everyone
    /// rebalances.
    pub fn complete_sync(&mut self, generation: i32, stored: bool, now_ms: i64) {
        if self.state != GroupState::CompletingRebalance || self.generation != generation {
            return;
        }
        if !stored {
            for m in self.members.values_mut() {
                m.assignment = Bytes::new();
            }
            self.prepare_rebalance(now_ms);
            return;
        }
        self.sync_deadline_ms = None;
        self.transition(GroupState::Stable, now_ms);
        for member in self.members.values_mut() {
            if let Some(reply) = member.awaiting_sync.take() {
                let _ = reply.send(SyncResponse {
                    error: None,
                    protocol_type: self.protocol_type.clone(),
                    protocol_name: self.protocol.clone(),
                    assignment: member.assignment.clone(),
                });
            }
        }
    }

    /// Handles Heartbeat.
    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
        now_ms: i64,
    ) -> Option<GroupError> {
        if self.state == GroupState::Dead {
            return Some(GroupError::CoordinatorNotAvailable);
        }
        if let Err(error) = self.check_member(member_id, instance) {
            return Some(error);
        }
        if generation != self.generation {
            return Some(GroupError::IllegalGeneration);
        }
        self.members.get_mut(member_id).expect("checked").last_heartbeat_ms = now_ms;
        match self.state {
            GroupState::PreparingRebalance => Some(GroupError::RebalanceInProgress),
            GroupState::Empty => Some(GroupError::UnknownMemberId),
            _ => None,
        }
    }

    /// Handles one member of a LeaveGroup.
    pub fn leave(
        &mut self,
        member_id: &str,
        instance: Option<&str>,
        now_ms: i64,
    ) -> (Option<GroupError>, Option<Persist>) {
        // A static member may leave by instance id alone.
        let member_id = match (member_id, instance) {
            ("", Some(instance)) => match self.static_members.get(instance) {
                Some(id) => id.clone(),
                None => return (Some(GroupError::UnknownMemberId), None),
            },
            (id, _) => id.to_owned(),
        };
        if let Err(error) = self.check_member(&member_id, instance) {
            if self.pending_members.remove(&member_id).is_some() {
                return (None, None);
            }
            return (Some(error), None);
        }
        if let Some(member) = self.members.get_mut(&member_id)
            && let Some(join) = member.awaiting_join.take()
        {
            let _ = join.send(JoinResponse {
                error: Some(GroupError::UnknownMemberId),
                generation_id: -1,
                ..JoinResponse::default()
            });
        }
        (None, self.remove_member(&member_id, now_ms))
    }

    /// Checks an OffsetCommit against membership, as Kafka's classic groups do: generation -1
    /// with no member is a commit from outside any membership, allowed only while the group has
    /// no members (UNKNOWN_MEMBER_ID otherwise); a member's commit needs its generation, and is
    /// taken while the group prepares a rebalance (clients commit what they processed in their
    /// partitions-revoked callback, before they rejoin) but not while it completes one (the
    /// member has joined the next generation and does not know its partitions yet).
    pub fn check_commit(
        &mut self,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
        now_ms: i64,
    ) -> Option<GroupError> {
        if self.state == GroupState::Dead {
            return Some(GroupError::CoordinatorNotAvailable);
        }
        if generation < 0 && member_id.is_empty() && instance.is_none() {
            return if self.state == GroupState::Empty { None } else { Some(GroupError::UnknownMemberId) };
        }
        if let Err(error) = self.check_member(member_id, instance) {
            return Some(error);
        }
        if generation != self.generation {
            return Some(GroupError::IllegalGeneration);
        }
        match self.state {
            GroupState::CompletingRebalance => Some(GroupError::RebalanceInProgress),
            _ => {
                self.members.get_mut(member_id).expect("checked").last_heartbeat_ms = now_ms;
                None
            }
        }
    }

    /// Drops members whose session expired and completes timed-out phases. Returns whether the
    /// group's metadata must be stored.
    pub fn tick(&mut self, now_ms: i64) -> Option<Persist> {
        let mut persist = None;
        self.pending_members.retain(|_, deadline| *deadline > now_ms);
        let expired: Vec<String> =
            self.members.values().filter(|m| m.expired(now_ms)).map(|m| m.member_id.clone()).collect();
        for id in expired {
            tracing::info!(group = %self.id, member = %id, "member session expired");
            persist = self.remove_member(&id, now_ms).or(persist);
        }
        match self.state {
            GroupState::PreparingRebalance => {
                self.maybe_complete_join(now_ms);
                if self.state == GroupState::Empty {
                    persist = Some(Persist::GroupMetadata);
                }
            }
            GroupState::CompletingRebalance if self.sync_deadline_ms.is_some_and(|d| now_ms >= d) => {
                // Members that never sent SyncGroup are dropped; the rest rebalance.
                let silent: Vec<String> =
                    self.members.values().filter(|m| m.awaiting_sync.is_none()).map(|m| m.member_id.clone()).collect();
                for id in silent {
                    self.forget_member(&id);
                }
                if self.members.is_empty() {
                    self.generation += 1;
                    self.transition(GroupState::Empty, now_ms);
                    persist = Some(Persist::GroupMetadata);
                } else {
                    self.prepare_rebalance(now_ms);
                }
            }
            _ => {}
        }
        persist
    }

    /// Topics the members subscribe to, as far as the consumer protocol metadata tells.
    pub fn subscribed_topics(&self) -> Option<HashSet<String>> {
        if self.protocol_type.as_deref() != Some("consumer") || self.state == GroupState::Empty {
            return None;
        }
        let protocol = self.protocol.clone()?;
        let mut topics = HashSet::new();
        for member in self.members.values() {
            topics.extend(consumer_subscription_topics(&member.metadata_for(&protocol))?);
        }
        Some(topics)
    }
}

/// Topics named in consumer protocol subscription metadata (version, then an array of topics).
pub fn consumer_subscription_topics(metadata: &[u8]) -> Option<Vec<String>> {
    let mut r = crate::model::wire::Reader::new(metadata);
    let _version = r.i16().ok()?;
    let count = r.array_len().ok()?;
    if count > r.remaining() {
        return None;
    }
    let mut topics = Vec::new();
    for _ in 0..count {
        let name = r.nullable_string().ok()??;
        topics.push(String::from_utf8_lossy(name).into_owned());
    }
    Some(topics)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: GroupLimits = GroupLimits {
        min_session_timeout_ms: 1000,
        max_session_timeout_ms: 60_000,
        initial_rebalance_delay_ms: 0,
        max_size: 100,
    };

    fn join_request(member_id: &str, instance: Option<&str>) -> JoinRequest {
        JoinRequest {
            group_id: "g".into(),
            member_id: member_id.into(),
            group_instance_id: instance.map(str::to_owned),
            client_id: "c".into(),
            client_host: "h".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 5_000,
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::from_static(b"meta"))],
            require_known_member_id: true,
        }
    }

    fn join(group: &mut Group, member_id: &str, instance: Option<&str>, now: i64) -> oneshot::Receiver<JoinResponse> {
        let (tx, rx) = oneshot::channel();
        group.join(join_request(member_id, instance), tx, &LIMITS, now);
        rx
    }

    fn answer<T>(mut rx: oneshot::Receiver<T>) -> Option<T> {
        rx.try_recv().ok().flatten()
    }

    fn sync(
        group: &mut Group,
        member: &str,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
        now: i64,
    ) -> oneshot::Receiver<SyncResponse> {
        let (tx, rx) = oneshot::channel();
        let leader = group.sync(
            SyncRequest {
                group_id: "g".into(),
                generation_id: generation,
                member_id: member.into(),
                group_instance_id: None,
                protocol_type: None,
                protocol_name: None,
                assignments,
            },
            tx,
            now,
        );
        if leader {
            group.complete_sync(generation, true, now);
        }
        rx
    }

    /// Joins a dynamic member through the MEMBER_ID_REQUIRED round trip; returns its id.
    fn member_id_for(group: &mut Group, now: i64) -> String {
        let first = answer(join(group, "", None, now)).expect("answered at once");
        assert_eq!(first.error, Some(GroupError::MemberIdRequired));
        first.member_id
    }

    /// After a coordinator restart the group comes back with members that will never return
    /// (their consumers joined anew under new ids). Their sessions expire in the same tick; the
    /// new members' join must then complete once, and their sync succeed.
    #[test]
    fn stale_members_restored_after_a_restart_expire_without_a_rebalance_loop() {
        let mut g = Group::new("g", 0);
        let (a, b) = (member_id_for(&mut g, 0), member_id_for(&mut g, 0));
        let ja = join(&mut g, &a, None, 1);
        let jb = join(&mut g, &b, None, 1);
        let generation = answer(ja).unwrap().generation_id;
        let _ = answer(jb);
        let leader = g.leader.clone().unwrap();
        let follower = if leader == a { b.clone() } else { a.clone() };
        answer(sync(&mut g, &leader, generation, vec![(a.clone(), Bytes::new()), (b.clone(), Bytes::new())], 2))
            .unwrap();
        answer(sync(&mut g, &follower, generation, Vec::new(), 2)).unwrap();
        assert_eq!(g.state, GroupState::Stable);
        // The coordinator restarts: the group is restored from its stored record.
        let mut g2 = Group::new("g", 100);
        g2.restore(g.to_stored(), 100);
        let (c, d) = (member_id_for(&mut g2, 101), member_id_for(&mut g2, 101));
        let jc = join(&mut g2, &c, None, 102);
        let jd = join(&mut g2, &d, None, 102);
        assert_eq!(g2.state, GroupState::PreparingRebalance, "waiting for the restored members");
        // a and b never come back: their sessions (10 s) expire together.
        g2.tick(100 + 10_001);
        let (rc, rd) = (answer(jc).expect("c's join answered"), answer(jd).expect("d's join answered"));
        assert_eq!((rc.error, rd.error), (None, None));
        assert_eq!(g2.state, GroupState::CompletingRebalance);
        let leader = rc.leader.clone();
        let follower = if leader == c { d.clone() } else { c.clone() };
        let now = 100 + 10_002;
        g2.tick(now);
        let assignments = vec![(c.clone(), Bytes::new()), (d.clone(), Bytes::new())];
        let synced = answer(sync(&mut g2, &leader, rc.generation_id, assignments, now)).unwrap();
        assert_eq!(synced.error, None, "the leader's sync succeeds");
        let synced = answer(sync(&mut g2, &follower, rc.generation_id, Vec::new(), now)).unwrap();
        assert_eq!(synced.error, None, "the follower's sync succeeds");
        assert_eq!(g2.state, GroupState::Stable);
    }

    #[test]
    fn two_members_join_sync_and_stabilize() {
        let mut g = Group::new("g", 0);
        let a = member_id_for(&mut g, 0);
        let b = member_id_for(&mut g, 0);
        let mut ja = join(&mut g, &a, None, 1);
        assert!(ja.try_recv().unwrap().is_none(), "b's pending id holds the join open");
        let jb = join(&mut g, &b, None, 2);
        assert_eq!(g.state, GroupState::CompletingRebalance);
        let (ra, rb) = (ja.try_recv().unwrap().unwrap(), answer(jb).unwrap());
        assert_eq!(ra.generation_id, rb.generation_id);
        let leader = g.leader.clone().unwrap();
        let leader_response = if leader == a { &ra } else { &rb };
        assert_eq!(leader_response.members.len(), 2, "the leader sees every member");
        let generation = g.generation;
        let follower = if leader == a { b.clone() } else { a.clone() };
        let mut fs = sync(&mut g, &follower, generation, vec![], 3);
        assert!(fs.try_recv().unwrap().is_none(), "followers wait for the leader");
        let ls = sync(
            &mut g,
            &leader,
            generation,
            vec![(a.clone(), Bytes::from_static(b"A")), (b.clone(), Bytes::from_static(b"B"))],
            3,
        );
        assert_eq!(g.state, GroupState::Stable);
        let got = [fs.try_recv().unwrap().unwrap().assignment, answer(ls).unwrap().assignment];
        assert!(got.contains(&Bytes::from_static(b"A")) && got.contains(&Bytes::from_static(b"B")));
        assert_eq!(g.heartbeat(&a, None, generation, 4), None);
        assert_eq!(g.heartbeat(&a, None, generation - 1, 4), Some(GroupError::IllegalGeneration));
        assert_eq!(g.heartbeat("nobody", None, generation, 4), Some(GroupError::UnknownMemberId));
    }

    #[test]
    fn leaving_rebalances_at_once_and_session_expiry_removes_silent_members() {
        let mut g = Group::new("g", 0);
        let a = member_id_for(&mut g, 0);
        let b = member_id_for(&mut g, 0);
        let _ja = join(&mut g, &a, None, 1);
        let _jb = join(&mut g, &b, None, 1);
        let generation = g.generation;
        let leader = g.leader.clone().unwrap();
        let other = if leader == a { b.clone() } else { a.clone() };
        drop(sync(&mut g, &other, generation, vec![], 2));
        drop(sync(&mut g, &leader, generation, vec![], 2));
        assert_eq!(g.state, GroupState::Stable);
        // b leaves: the group rebalances immediately, and completes once a rejoins.
        let (error, _) = g.leave(&b, None, 3);
        assert_eq!(error, None);
        assert_eq!(g.state, GroupState::PreparingRebalance);
        assert_eq!(g.heartbeat(&a, None, generation, 3), Some(GroupError::RebalanceInProgress));
        let ja = join(&mut g, &a, None, 4);
        assert_eq!(g.state, GroupState::CompletingRebalance);
        let response = answer(ja).unwrap();
        assert_eq!(response.generation_id, generation + 1);
        assert_eq!(response.members.len(), 1);
        drop(sync(&mut g, &a, generation + 1, vec![(a.clone(), Bytes::new())], 5));
        // a goes silent: after its session timeout it is removed and the group is empty.
        assert_eq!(g.tick(5 + 9_000), None);
        assert_eq!(g.tick(5 + 10_001), Some(Persist::GroupMetadata));
        assert_eq!(g.state, GroupState::Empty);
    }

    #[test]
    fn a_member_that_does_not_rejoin_is_dropped_at_the_rebalance_timeout() {
        let mut g = Group::new("g", 0);
        let a = member_id_for(&mut g, 0);
        let b = member_id_for(&mut g, 0);
        drop(join(&mut g, &a, None, 1));
        drop(join(&mut g, &b, None, 1));
        let generation = g.generation;
        g.prepare_rebalance(10);
        let mut ja = join(&mut g, &a, None, 11);
        assert!(ja.try_recv().unwrap().is_none(), "waits for b");
        g.tick(10 + 5_000);
        assert_eq!(g.state, GroupState::CompletingRebalance);
        assert_eq!(g.members.len(), 1);
        assert_eq!(ja.try_recv().unwrap().unwrap().generation_id, generation + 1);
    }

    #[test]
    fn static_member_restart_keeps_its_assignment_and_fences_the_old_id() {
        let mut g = Group::new("g", 0);
        let rx = join(&mut g, "", Some("instance-1"), 0);
        let first = answer(rx).unwrap();
        assert_eq!(first.error, None, "static members skip MEMBER_ID_REQUIRED");
        let old_id = first.member_id.clone();
        drop(sync(&mut g, &old_id, first.generation_id, vec![(old_id.clone(), Bytes::from_static(b"P0"))], 1));
        assert_eq!(g.state, GroupState::Stable);
        // Restart: same instance id, no member id. No rebalance; the new id gets the old
        // assignment, the old id is fenced.
        let rejoin = answer(join(&mut g, "", Some("instance-1"), 2)).unwrap();
        assert_eq!(rejoin.error, None);
        assert_eq!(g.state, GroupState::Stable);
        assert_eq!(rejoin.generation_id, first.generation_id);
        let new_id = rejoin.member_id;
        assert_ne!(new_id, old_id);
        let assignment = answer(sync(&mut g, &new_id, first.generation_id, vec![], 3)).unwrap();
        assert_eq!(assignment.assignment, Bytes::from_static(b"P0"));
        assert_eq!(
            g.heartbeat(&old_id, Some("instance-1"), first.generation_id, 4),
            Some(GroupError::FencedInstanceId)
        );
    }

    #[test]
    fn commits_outside_membership_only_while_empty_and_members_commit_before_they_rejoin() {
        let mut g = Group::new("g", 0);
        assert_eq!(g.check_commit("", None, -1, 0), None);
        let a = member_id_for(&mut g, 0);
        let joined = answer(join(&mut g, &a, None, 1)).expect("alone, the join completes at once");
        assert_eq!(g.state, GroupState::CompletingRebalance);
        assert_eq!(g.check_commit("", None, -1, 1), Some(GroupError::UnknownMemberId), "an admin commit, group active");
        let generation = joined.generation_id;
        assert_eq!(g.check_commit(&a, None, generation, 1), Some(GroupError::RebalanceInProgress), "awaiting sync");
        drop(sync(&mut g, &a, generation, vec![(a.clone(), Bytes::from_static(b"P0"))], 2));
        assert_eq!(g.state, GroupState::Stable);
        assert_eq!(g.check_commit(&a, None, generation, 3), None);
        // A second member joins: while the group prepares the rebalance, the first still commits
        // what it processed in its generation (its partitions-revoked callback), not an older one.
        let b = member_id_for(&mut g, 4);
        drop(join(&mut g, &b, None, 4));
        assert_eq!(g.state, GroupState::PreparingRebalance);
        assert_eq!(g.check_commit(&a, None, generation, 5), None);
        assert_eq!(g.check_commit(&a, None, generation - 1, 5), Some(GroupError::IllegalGeneration));
        assert_eq!(g.check_commit("nobody", None, generation, 5), Some(GroupError::UnknownMemberId));
    }

    #[test]
    fn invalid_session_timeout_and_protocol_mismatch_are_refused() {
        let mut g = Group::new("g", 0);
        let (tx, rx) = oneshot::channel();
        let mut request = join_request("", None);
        request.session_timeout_ms = 10;
        g.join(request, tx, &LIMITS, 0);
        assert_eq!(answer(rx).unwrap().error, Some(GroupError::InvalidSessionTimeout));
        let a = member_id_for(&mut g, 0);
        drop(join(&mut g, &a, None, 1));
        let (tx, rx) = oneshot::channel();
        let mut other = join_request("", None);
        other.protocols = vec![("roundrobin".into(), Bytes::new())];
        g.join(other, tx, &LIMITS, 2);
        assert_eq!(answer(rx).unwrap().error, Some(GroupError::InconsistentGroupProtocol));
    }
}
