//! The consumer group protocol of KIP-848 (ConsumerGroupHeartbeat): the coordinator computes
//! the assignment itself (the `uniform` and `range` assignors), and each member moves to it
//! through its own heartbeats. Pure state: the coordinator does the I/O.
//!
//! Epochs: the group epoch rises with every change of membership, subscriptions or the
//! subscribed topics' partition counts; a target assignment is computed for it (the assignment
//! epoch). A member reaches the new epoch once it has given up every partition it loses (it is
//! told its assignment without them and acknowledges by heartbeating without them, within its
//! rebalance timeout or it is fenced); it then receives the partitions of its target that no
//! other member still holds, and the rest on later heartbeats as their holders release them. So
//! a partition never has two owners.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::GroupError;

/// A topic partition by topic name.
pub type Partition = (String, i32);

/// Assignors the coordinator runs (`group.consumer.assignors`), the first being the default.
pub const ASSIGNORS: [&str; 2] = ["uniform", "range"];

/// A ConsumerGroupHeartbeat, with topic ids already resolved to names.
#[derive(Clone, Debug, Default)]
pub struct ConsumerHeartbeat {
    /// Group.
    pub group_id: String,
    /// Member id (a v1 client makes its own; empty asks the coordinator for one).
    pub member_id: String,
    /// 0 to join, -1 to leave, -2 for a static member's temporary leave; else the member's epoch.
    pub member_epoch: i32,
    /// Static instance id.
    pub instance_id: Option<String>,
    /// Rack.
    pub rack_id: Option<String>,
    /// Rebalance timeout (-1: unchanged).
    pub rebalance_timeout_ms: i32,
    /// Subscribed topic names (`None`: unchanged).
    pub subscribed: Option<Vec<String>>,
    /// Subscribed topic regex (`None`: unchanged).
    pub regex: Option<String>,
    /// Assignor asked for (`None`: unchanged).
    pub server_assignor: Option<String>,
    /// Partitions the member owns now (`None`: unchanged).
    pub owned: Option<Vec<Partition>>,
    /// Client id.
    pub client_id: String,
    /// Client address.
    pub client_host: String,
}

/// The answer to a ConsumerGroupHeartbeat.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConsumerHeartbeatAnswer {
    /// Error, if any.
    pub error: Option<GroupError>,
    /// Why, when it helps.
    pub message: Option<String>,
    /// The member's id.
    pub member_id: String,
    /// The member's epoch now.
    pub member_epoch: i32,
    /// The member's assignment when it changed since the last one sent.
    pub assignment: Option<BTreeSet<Partition>>,
}

/// A member of a consumer-protocol group.
#[derive(Clone, Debug)]
pub struct ConsumerMember {
    /// Id.
    pub member_id: String,
    /// Static instance id.
    pub instance_id: Option<String>,
    /// Rack.
    pub rack_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client address.
    pub client_host: String,
    /// Subscribed topics, sorted.
    pub subscribed: Vec<String>,
    /// Assignor asked for.
    pub server_assignor: Option<String>,
    /// Rebalance timeout.
    pub rebalance_timeout_ms: i32,
    /// Its epoch.
    pub member_epoch: i32,
    /// Its epoch before the last move (a heartbeat sent before it learned of the move carries it).
    pub previous_member_epoch: i32,
    /// Partitions it may consume.
    pub assigned: BTreeSet<Partition>,
    /// Partitions taken from it that it has not yet confirmed giving up.
    pub revoking: BTreeSet<Partition>,
    /// The assignment last sent to it.
    sent: Option<BTreeSet<Partition>>,
    /// When its session ends without a heartbeat.
    session_deadline_ms: i64,
    /// When it must have given up `revoking`.
    revoke_deadline_ms: Option<i64>,
}

/// The KIP-848 side of a group.
#[derive(Clone, Debug, Default)]
pub struct ConsumerGroup {
    /// Group epoch.
    pub group_epoch: i32,
    /// The epoch the target assignment was computed for.
    pub assignment_epoch: i32,
    /// Members by id.
    pub members: BTreeMap<String, ConsumerMember>,
    /// Target assignment by member.
    pub target: HashMap<String, BTreeSet<Partition>>,
    /// The assignor of the last target.
    pub assignor: String,
    /// Partition counts of the subscribed topics when the target was computed.
    topics_seen: BTreeMap<String, i32>,
}

/// Broker settings for consumer groups.
#[derive(Clone, Copy, Debug)]
pub struct ConsumerLimits {
    /// `group.consumer.session.timeout.ms`.
    pub session_timeout_ms: i32,
    /// `group.consumer.max.size`.
    pub max_size: usize,
}

impl ConsumerGroup {
    /// Kafka's name of the group's state.
    pub fn state_name(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.group_epoch > self.assignment_epoch {
            "Assigning"
        } else if self.members.values().any(|m| {
            m.member_epoch != self.assignment_epoch
                || !m.revoking.is_empty()
                || Some(&m.assigned) != self.target.get(&m.member_id)
        }) {
            "Reconciling"
        } else {
            "Stable"
        }
    }

    /// Topics some member subscribes to.
    pub fn subscribed_topics(&self) -> BTreeSet<String> {
        self.members.values().flat_map(|m| m.subscribed.iter().cloned()).collect()
    }

    /// Checks an OffsetCommit's member and epoch: the member's current epoch, as Kafka asks of
    /// consumer groups (an older one is STALE_MEMBER_EPOCH; a commit from outside the group,
    /// with no member and epoch -1, only while it has no members).
    pub fn check_commit(&self, member_id: &str, epoch: i32) -> Option<GroupError> {
        if member_id.is_empty() && epoch < 0 {
            return (!self.members.is_empty()).then_some(GroupError::UnknownMemberId);
        }
        let member = match self.members.get(member_id) {
            Some(member) => member,
            None => return Some(GroupError::UnknownMemberId),
        };
        match epoch.cmp(&member.member_epoch) {
            std::cmp::Ordering::Equal => None,
            std::cmp::Ordering::Less => Some(GroupError::StaleMemberEpoch),
            std::cmp::Ordering::Greater => Some(GroupError::FencedMemberEpoch),
        }
    }

    /// Handles a heartbeat; `partitions(topic)` gives a topic's partition count (`None`: no
    /// such topic).
    pub fn heartbeat(
        &mut self,
        request: ConsumerHeartbeat,
        limits: &ConsumerLimits,
        now_ms: i64,
        partitions: &dyn Fn(&str) -> Option<i32>,
    ) -> ConsumerHeartbeatAnswer {
        let refuse = |error, message: &str| ConsumerHeartbeatAnswer {
            error: Some(error),
            message: Some(message.to_owned()),
            member_id: request.member_id.clone(),
            member_epoch: request.member_epoch,
            assignment: None,
        };
        if request.regex.as_deref().is_some_and(|r| !r.is_empty()) {
            return refuse(GroupError::InvalidRegularExpression, "topic regex subscriptions are not supported yet");
        }
        if let Some(assignor) = &request.server_assignor
            && !ASSIGNORS.contains(&assignor.as_str())
        {
            return refuse(GroupError::UnsupportedAssignor, "the assignors are uniform and range");
        }
        let member_id = match request.member_epoch {
            -2 | -1 => {
                if self.members.remove(&request.member_id).is_some() {
                    self.target.remove(&request.member_id);
                    self.group_epoch += 1;
                    tracing::info!(group = %request.group_id, member = %request.member_id, "member left");
                }
                return ConsumerHeartbeatAnswer {
                    member_id: request.member_id,
                    member_epoch: request.member_epoch,
                    ..Default::default()
                };
            }
            0 => {
                if request.subscribed.is_none() {
                    return refuse(GroupError::InvalidRequest, "a joining member names its subscription");
                }
                if !self.members.contains_key(&request.member_id) && self.members.len() >= limits.max_size {
                    return refuse(GroupError::GroupMaxSizeReached, "the group is full");
                }
                let member_id = match request.member_id.is_empty() {
                    true => uuid::Uuid::new_v4().to_string(),
                    false => request.member_id.clone(),
                };
                // Rejoining after being fenced: what it held is free again.
                self.members.remove(&member_id);
                self.members.insert(
                    member_id.clone(),
                    ConsumerMember {
                        member_id: member_id.clone(),
                        instance_id: None,
                        rack_id: None,
                        client_id: String::new(),
                        client_host: String::new(),
                        subscribed: Vec::new(),
                        server_assignor: None,
                        rebalance_timeout_ms: request.rebalance_timeout_ms.max(0),
                        member_epoch: 0,
                        previous_member_epoch: -1,
                        assigned: BTreeSet::new(),
                        revoking: BTreeSet::new(),
                        sent: None,
                        session_deadline_ms: 0,
                        revoke_deadline_ms: None,
                    },
                );
                self.group_epoch += 1;
                tracing::info!(group = %request.group_id, member = %member_id, "member joined");
                member_id
            }
            epoch => {
                let Some(member) = self.members.get(&request.member_id) else {
                    return refuse(GroupError::UnknownMemberId, "not a member of the group");
                };
                let owned_within = request.owned.as_ref().is_none_or(|owned| {
                    owned.iter().all(|p| member.assigned.contains(p) || member.revoking.contains(p))
                });
                if epoch != member.member_epoch && !(epoch == member.previous_member_epoch && owned_within) {
                    return refuse(GroupError::FencedMemberEpoch, "the member epoch is not the current one");
                }
                request.member_id.clone()
            }
        };
        let member = self.members.get_mut(&member_id).expect("present");
        member.session_deadline_ms = now_ms + i64::from(limits.session_timeout_ms);
        member.client_id = request.client_id.clone();
        member.client_host = request.client_host.clone();
        if request.instance_id.is_some() {
            member.instance_id = request.instance_id.clone();
        }
        if request.rack_id.is_some() {
            member.rack_id = request.rack_id.clone();
        }
        if request.rebalance_timeout_ms >= 0 {
            member.rebalance_timeout_ms = request.rebalance_timeout_ms;
        }
        let mut changed = false;
        if let Some(mut subscribed) = request.subscribed.clone() {
            subscribed.sort();
            subscribed.dedup();
            changed |= member.subscribed != subscribed;
            member.subscribed = subscribed;
        }
        if let Some(assignor) = &request.server_assignor {
            changed |= member.server_assignor.as_deref() != Some(assignor);
            member.server_assignor = Some(assignor.clone());
        }
        if let Some(owned) = &request.owned {
            // What it no longer reports owning is given up.
            member.revoking.retain(|p| owned.contains(p));
            if member.revoking.is_empty() {
                member.revoke_deadline_ms = None;
            }
        }
        if changed && request.member_epoch != 0 {
            self.group_epoch += 1;
        }
        let topics: BTreeMap<String, i32> =
            self.subscribed_topics().into_iter().filter_map(|t| partitions(&t).map(|n| (t, n))).collect();
        if topics != self.topics_seen {
            // Partitions added, a subscribed topic created or deleted: assign again.
            self.topics_seen = topics;
            if self.group_epoch == self.assignment_epoch {
                self.group_epoch += 1;
            }
        }
        if self.group_epoch > self.assignment_epoch {
            self.compute_target();
        }
        self.reconcile(&member_id, now_ms);
        let member = self.members.get_mut(&member_id).expect("present");
        let assignment = (member.sent.as_ref() != Some(&member.assigned)).then(|| member.assigned.clone());
        if assignment.is_some() {
            member.sent = assignment.clone();
        }
        ConsumerHeartbeatAnswer { error: None, message: None, member_id, member_epoch: member.member_epoch, assignment }
    }

    /// Moves one member towards its target: first it gives up what it loses; once it has, it
    /// reaches the assignment epoch and takes what no other member holds.
    fn reconcile(&mut self, member_id: &str, now_ms: i64) {
        let target = self.target.get(member_id).cloned().unwrap_or_default();
        let held_by_others: BTreeSet<Partition> = self
            .members
            .values()
            .filter(|m| m.member_id != member_id)
            .flat_map(|m| m.assigned.iter().chain(m.revoking.iter()).cloned())
            .collect();
        let epoch = self.assignment_epoch;
        let member = self.members.get_mut(member_id).expect("present");
        let lost: Vec<Partition> = member.assigned.difference(&target).cloned().collect();
        if !lost.is_empty() {
            for p in lost {
                member.assigned.remove(&p);
                member.revoking.insert(p);
            }
            member.revoke_deadline_ms = Some(now_ms + i64::from(member.rebalance_timeout_ms));
        }
        if member.revoking.is_empty() {
            member.assigned.extend(target.difference(&held_by_others).cloned());
            if member.member_epoch != epoch {
                member.previous_member_epoch = member.member_epoch;
                member.member_epoch = epoch;
            }
        }
    }

    /// Computes the target assignment for the group epoch.
    fn compute_target(&mut self) {
        let assignor = self.chosen_assignor();
        let members: Vec<(&String, &Vec<String>)> = self.members.iter().map(|(id, m)| (id, &m.subscribed)).collect();
        self.target = match assignor {
            "range" => range_assign(&members, &self.topics_seen),
            _ => uniform_assign(&members, &self.topics_seen, &self.target),
        };
        self.assignor = assignor.to_owned();
        self.assignment_epoch = self.group_epoch;
    }

    /// The assignor most members ask for (the default when none asks).
    fn chosen_assignor(&self) -> &'static str {
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some(a) = &m.server_assignor {
                *votes.entry(a.as_str()).or_default() += 1;
            }
        }
        let best = votes.iter().max_by_key(|(name, count)| (**count, std::cmp::Reverse(**name))).map(|(n, _)| *n);
        ASSIGNORS.iter().copied().find(|a| Some(*a) == best).unwrap_or(ASSIGNORS[0])
    }

    /// Drops members whose session ended or who kept partitions past their rebalance timeout.
    /// Returns whether any went.
    pub fn tick(&mut self, group_id: &str, now_ms: i64) -> bool {
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| now_ms > m.session_deadline_ms || m.revoke_deadline_ms.is_some_and(|d| now_ms > d))
            .map(|m| m.member_id.clone())
            .collect();
        for id in &gone {
            tracing::info!(group = %group_id, member = %id, "member session expired or revocation timed out");
            self.members.remove(id);
            self.target.remove(id);
        }
        if !gone.is_empty() {
            self.group_epoch += 1;
        }
        !gone.is_empty()
    }
}

/// Every partition of `topics`, in order.
fn all_partitions<'a>(topics: &'a BTreeMap<String, i32>) -> impl Iterator<Item = Partition> + 'a {
    topics.iter().flat_map(|(t, n)| (0..*n).map(move |p| (t.clone(), p)))
}

/// The `uniform` assignor: every member gets as many partitions as the others, give or take one
/// (for members with the same subscription), and keeps what it had where that allows.
fn uniform_assign(
    members: &[(&String, &Vec<String>)],
    topics: &BTreeMap<String, i32>,
    previous: &HashMap<String, BTreeSet<Partition>>,
) -> HashMap<String, BTreeSet<Partition>> {
    let mut target: HashMap<String, BTreeSet<Partition>> =
        members.iter().map(|(id, _)| ((*id).clone(), BTreeSet::new())).collect();
    if members.is_empty() {
        return target;
    }
    let subscribed =
        |id: &str, topic: &str| members.iter().any(|(m, subs)| m.as_str() == id && subs.iter().any(|s| s == topic));
    let wanted: Vec<Partition> =
        all_partitions(topics).filter(|(t, _)| members.iter().any(|(_, s)| s.contains(t))).collect();
    let (base, mut extra) = (wanted.len() / members.len(), wanted.len() % members.len());
    let mut owner: HashMap<Partition, String> = HashMap::new();
    // Members keep what they had, up to their share.
    for (id, _) in members {
        let kept: Vec<Partition> = previous
            .get(*id)
            .into_iter()
            .flatten()
            .filter(|p| topics.get(&p.0).is_some_and(|n| p.1 < *n) && subscribed(id, &p.0) && !owner.contains_key(*p))
            .cloned()
            .collect();
        let mut share = base;
        if kept.len() > base && extra > 0 {
            share += 1;
            extra -= 1;
        }
        for p in kept.into_iter().take(share) {
            owner.insert(p.clone(), (*id).clone());
            target.get_mut(*id).expect("member").insert(p);
        }
    }
    // The rest go to the subscribed member with the fewest, within the shares.
    for p in wanted.into_iter().filter(|p| !owner.contains_key(p)) {
        let eligible = members.iter().filter(|(id, _)| subscribed(id, &p.0)).map(|(id, _)| (*id).clone());
        let counts: Vec<(usize, String)> = eligible.map(|id| (target[&id].len(), id)).collect();
        let within = counts.iter().filter(|(n, _)| *n < base || (*n == base && extra > 0)).min().cloned();
        let Some((count, id)) = within.or_else(|| counts.iter().min().cloned()) else { continue };
        if count == base && extra > 0 {
            extra -= 1;
        }
        target.get_mut(&id).expect("member").insert(p);
    }
    target
}

/// The `range` assignor: each topic's partitions split into contiguous ranges over the members
/// subscribed to it, in member id order (the first ones get one more when it does not divide).
fn range_assign(
    members: &[(&String, &Vec<String>)],
    topics: &BTreeMap<String, i32>,
) -> HashMap<String, BTreeSet<Partition>> {
    let mut target: HashMap<String, BTreeSet<Partition>> =
        members.iter().map(|(id, _)| ((*id).clone(), BTreeSet::new())).collect();
    for (topic, count) in topics {
        let subscribers: Vec<&String> =
            members.iter().filter(|(_, subs)| subs.contains(topic)).map(|(id, _)| *id).collect();
        if subscribers.is_empty() {
            continue;
        }
        let (base, extra) = (*count as usize / subscribers.len(), *count as usize % subscribers.len());
        let mut next = 0i32;
        for (i, id) in subscribers.iter().enumerate() {
            let take = base + usize::from(i < extra);
            let set = target.get_mut(*id).expect("member");
            for p in next..next + take as i32 {
                set.insert((topic.clone(), p));
            }
            next += take as i32;
        }
    }
    target
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ConsumerLimits = ConsumerLimits { session_timeout_ms: 45_000, max_size: 10 };

    fn six(topic: &str) -> Option<i32> {
        (topic == "t").then_some(6)
    }

    fn join(group: &mut ConsumerGroup, id: &str, now: i64) -> ConsumerHeartbeatAnswer {
        group.heartbeat(
            ConsumerHeartbeat {
                group_id: "g".into(),
                member_id: id.into(),
                member_epoch: 0,
                rebalance_timeout_ms: 30_000,
                subscribed: Some(vec!["t".into()]),
                owned: Some(Vec::new()),
                ..Default::default()
            },
            &LIMITS,
            now,
            &six,
        )
    }

    fn beat(
        group: &mut ConsumerGroup,
        id: &str,
        epoch: i32,
        owned: &BTreeSet<Partition>,
        now: i64,
    ) -> ConsumerHeartbeatAnswer {
        group.heartbeat(
            ConsumerHeartbeat {
                group_id: "g".into(),
                member_id: id.into(),
                member_epoch: epoch,
                rebalance_timeout_ms: -1,
                owned: Some(owned.iter().cloned().collect()),
                ..Default::default()
            },
            &LIMITS,
            now,
            &six,
        )
    }

    /// Each member's owned partitions as a client following the answers would hold them.
    struct Clients(BTreeMap<String, (i32, BTreeSet<Partition>)>);

    impl Clients {
        fn beat_all(&mut self, group: &mut ConsumerGroup, now: i64) {
            for (id, (epoch, owned)) in self.0.iter_mut() {
                let answer = beat(group, id, *epoch, owned, now);
                assert_eq!(answer.error, None, "{id}");
                *epoch = answer.member_epoch;
                if let Some(assignment) = answer.assignment {
                    *owned = assignment;
                }
            }
        }

        fn no_partition_twice(&self) {
            let mut seen = BTreeSet::new();
            for (_, owned) in self.0.values() {
                for p in owned {
                    assert!(seen.insert(p.clone()), "{p:?} owned twice: {:?}", self.0);
                }
            }
        }
    }

    #[test]
    fn three_members_split_six_partitions_two_each_without_two_owners_at_any_time() {
        let mut group = ConsumerGroup::default();
        let mut clients = Clients(BTreeMap::new());
        for (i, id) in ["a", "b", "c"].into_iter().enumerate() {
            let answer = join(&mut group, id, i as i64);
            clients.0.insert(id.into(), (answer.member_epoch, answer.assignment.unwrap_or_default()));
            clients.no_partition_twice();
            for round in 0..4 {
                clients.beat_all(&mut group, 10 + round);
                clients.no_partition_twice();
            }
        }
        let counts: Vec<usize> = clients.0.values().map(|(_, owned)| owned.len()).collect();
        assert_eq!(counts, [2, 2, 2]);
        assert_eq!(group.state_name(), "Stable");
        assert!(clients.0.values().all(|(epoch, _)| *epoch == group.assignment_epoch));
        // One leaves: the other two take its partitions, 3 each.
        let left = beat(&mut group, "b", -1, &BTreeSet::new(), 20);
        assert_eq!(left.member_epoch, -1);
        clients.0.remove("b");
        for round in 0..3 {
            clients.beat_all(&mut group, 21 + round);
            clients.no_partition_twice();
        }
        let counts: Vec<usize> = clients.0.values().map(|(_, owned)| owned.len()).collect();
        assert_eq!(counts, [3, 3]);
        // One goes silent: after its session it is dropped and the last member holds all six.
        let silent = clients.0.remove("c").unwrap();
        clients.beat_all(&mut group, 40_000);
        assert!(!group.tick("g", 40_001), "no session ended yet");
        assert!(group.tick("g", 46_000));
        assert!(!group.members.contains_key("c"));
        assert_eq!(beat(&mut group, "c", silent.0, &silent.1, 46_001).error, Some(GroupError::UnknownMemberId));
        for round in 0..2 {
            clients.beat_all(&mut group, 46_002 + round);
        }
        assert_eq!(clients.0["a"].1.len(), 6);
    }

    #[test]
    fn stale_epochs_are_fenced_and_unknown_members_refused() {
        let mut group = ConsumerGroup::default();
        let a = join(&mut group, "a", 0);
        let answer = beat(&mut group, "a", a.member_epoch + 5, &BTreeSet::new(), 1);
        assert_eq!(answer.error, Some(GroupError::FencedMemberEpoch));
        assert_eq!(beat(&mut group, "zz", 1, &BTreeSet::new(), 1).error, Some(GroupError::UnknownMemberId));
        assert_eq!(group.check_commit("a", a.member_epoch), None);
        assert_eq!(group.check_commit("a", a.member_epoch - 1), Some(GroupError::StaleMemberEpoch));
        assert_eq!(group.check_commit("", -1), Some(GroupError::UnknownMemberId));
    }

    #[test]
    fn range_gives_contiguous_ranges_and_uniform_keeps_what_members_had() {
        let (a, b) = ("a".to_owned(), "b".to_owned());
        let subs = vec!["t".to_owned()];
        let topics = BTreeMap::from([("t".to_owned(), 5)]);
        let members = [(&a, &subs), (&b, &subs)];
        let ranged = range_assign(&members, &topics);
        assert_eq!(ranged[&a].iter().map(|p| p.1).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(ranged[&b].iter().map(|p| p.1).collect::<Vec<_>>(), [3, 4]);
        let previous = HashMap::from([(a.clone(), (0..5).map(|p| ("t".to_owned(), p)).collect())]);
        let uniform = uniform_assign(&members, &topics, &previous);
        assert_eq!(uniform[&a].iter().map(|p| p.1).collect::<Vec<_>>(), [0, 1, 2], "a keeps its first three");
        assert_eq!(uniform[&b].iter().map(|p| p.1).collect::<Vec<_>>(), [3, 4]);
    }
}
