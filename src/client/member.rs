//! A consumer group member speaking the classic group protocol (JoinGroup, SyncGroup, Heartbeat,
//! OffsetCommit, LeaveGroup) with eager range assignment, as the Java consumer's
//! `RangeAssignor` does for one topic. The load and soak tools use it so that their consumer
//! groups are real Kafka groups, rebalanced by the broker's coordinator.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest, SyncGroupRequest};
use kafka_protocol::protocol::StrBytes;

use super::groups::{commit_on, decode_assignment, group_id};
use super::{BrokerConnection, ClientError, KafkaClient};

/// MEMBER_ID_REQUIRED (KIP-394): join again with the member id the coordinator gave.
const MEMBER_ID_REQUIRED: i16 = 79;
/// UNKNOWN_MEMBER_ID: the coordinator forgot this member; join with a new id.
const UNKNOWN_MEMBER_ID: i16 = 25;
/// REBALANCE_IN_PROGRESS: a new rebalance began; join it.
const REBALANCE_IN_PROGRESS: i16 = 27;
/// Join-and-sync rounds tried before giving up on a group that keeps rebalancing.
const MAX_JOIN_ROUNDS: usize = 5;
/// ILLEGAL_GENERATION: the member's generation is over; join again.
const ILLEGAL_GENERATION: i16 = 22;
/// Errors after which a member must join again.
const REJOIN_CODES: [i16; 3] = [REBALANCE_IN_PROGRESS, ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID];

/// One member of a consumer group subscribed to one topic.
pub struct GroupConsumer {
    group: String,
    topic: String,
    coordinator: BrokerConnection,
    member_id: String,
    generation: i32,
    session_timeout_ms: i32,
    /// Partitions of the topic assigned to this member in the current generation.
    pub assignment: Vec<i32>,
}

/// Encodes a consumer protocol subscription (version 0) to one topic.
fn subscription(topic: &str) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(0);
    b.put_i32(1);
    b.put_i16(topic.len() as i16);
    b.put_slice(topic.as_bytes());
    b.put_i32(-1); // no user data
    b.freeze()
}

/// Encodes a consumer protocol assignment (version 0) of `partitions` of `topic`.
fn assignment(topic: &str, partitions: &[i32]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(0);
    b.put_i32(1);
    b.put_i16(topic.len() as i16);
    b.put_slice(topic.as_bytes());
    b.put_i32(partitions.len() as i32);
    for p in partitions {
        b.put_i32(*p);
    }
    b.put_i32(-1);
    b.freeze()
}

/// Range assignment: members sorted by id, each gets a contiguous run of partitions, the first
/// `partitions % members` one more than the rest.
pub fn range_assign(members: &[String], partitions: i32) -> Vec<(String, Vec<i32>)> {
    let mut sorted: Vec<&String> = members.iter().collect();
    sorted.sort();
    let n = sorted.len().max(1) as i32;
    let (per, extra) = (partitions / n, partitions % n);
    let mut next = 0;
    sorted
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let count = per + i32::from((i as i32) < extra);
            let run: Vec<i32> = (next..next + count).collect();
            next += count;
            (m.clone(), run)
        })
        .collect()
}

fn check(context: &str, code: i16) -> Result<(), ClientError> {
    match ClientError::from_code(context, code, None) {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

/// Whether `err` means the member should join the group again (a rebalance, or it was fenced).
pub fn needs_rejoin(err: &ClientError) -> bool {
    err.code().is_some_and(|c| REJOIN_CODES.contains(&c))
}

impl GroupConsumer {
    /// Joins `group` (subscribed to `topic`, which has `partitions` partitions) and waits for
    /// the assignment of the new generation.
    pub async fn join(
        client: &KafkaClient,
        group: &str,
        topic: &str,
        partitions: i32,
        session_timeout_ms: i32,
    ) -> Result<Self, ClientError> {
        let coordinator = client.coordinator(group).await?;
        let mut member = Self {
            group: group.to_owned(),
            topic: topic.to_owned(),
            coordinator,
            member_id: String::new(),
            generation: -1,
            session_timeout_ms,
            assignment: Vec::new(),
        };
        member.rejoin(partitions).await?;
        Ok(member)
    }

    /// Joins again (after a rebalance began, or after being fenced), keeping the member id the
    /// coordinator knows when it still does. A rebalance that starts again between the join and
    /// the sync is joined again with the same id, as Kafka's clients do (a new id would leave
    /// the old one to time out and hold up every later rebalance).
    pub async fn rejoin(&mut self, partitions: i32) -> Result<(), ClientError> {
        for _ in 0..MAX_JOIN_ROUNDS {
            let request = self.join_once(partitions).await?;
            let response = self.coordinator.send(request).await?;
            if response.error_code == REBALANCE_IN_PROGRESS {
                continue;
            }
            check(&format!("sync group {}", self.group), response.error_code)?;
            self.assignment = decode_assignment(&response.assignment)
                .into_iter()
                .filter(|(t, _)| *t == self.topic)
                .map(|(_, p)| p)
                .collect();
            self.assignment.sort_unstable();
            return Ok(());
        }
        check(&format!("sync group {}", self.group), REBALANCE_IN_PROGRESS)
    }

    /// One JoinGroup round (with the KIP-394 member-id round trip); returns the SyncGroup to send
    /// next (carrying the assignment when this member leads).
    async fn join_once(&mut self, partitions: i32) -> Result<SyncGroupRequest, ClientError> {
        let context = format!("join group {}", self.group);
        let joined = loop {
            let request = JoinGroupRequest::default()
                .with_group_id(group_id(&self.group))
                .with_session_timeout_ms(self.session_timeout_ms)
                .with_rebalance_timeout_ms(self.session_timeout_ms)
                .with_member_id(StrBytes::from_string(self.member_id.clone()))
                .with_protocol_type(StrBytes::from_static_str("consumer"))
                .with_protocols(vec![
                    JoinGroupRequestProtocol::default()
                        .with_name(StrBytes::from_static_str("range"))
                        .with_metadata(subscription(&self.topic)),
                ]);
            let response = self.coordinator.send(request).await?;
            match response.error_code {
                MEMBER_ID_REQUIRED => self.member_id = response.member_id.as_str().to_owned(),
                UNKNOWN_MEMBER_ID => self.member_id.clear(), // start over with a new id
                code => {
                    check(&context, code)?;
                    break response;
                }
            }
        };
        self.member_id = joined.member_id.as_str().to_owned();
        self.generation = joined.generation_id;
        let assignments = if joined.leader == joined.member_id {
            let members: Vec<String> = joined.members.iter().map(|m| m.member_id.as_str().to_owned()).collect();
            range_assign(&members, partitions)
                .into_iter()
                .map(|(member, run)| {
                    SyncGroupRequestAssignment::default()
                        .with_member_id(StrBytes::from_string(member))
                        .with_assignment(assignment(&self.topic, &run))
                })
                .collect()
        } else {
            Vec::new()
        };
        Ok(SyncGroupRequest::default()
            .with_group_id(group_id(&self.group))
            .with_generation_id(self.generation)
            .with_member_id(StrBytes::from_string(self.member_id.clone()))
            .with_protocol_type(Some(StrBytes::from_static_str("consumer")))
            .with_protocol_name(Some(StrBytes::from_static_str("range")))
            .with_assignments(assignments))
    }

    /// Tells the coordinator this member is alive; an error for which [`needs_rejoin`] holds
    /// means a rebalance is under way.
    pub async fn heartbeat(&self) -> Result<(), ClientError> {
        let request = HeartbeatRequest::default()
            .with_group_id(group_id(&self.group))
            .with_generation_id(self.generation)
            .with_member_id(StrBytes::from_string(self.member_id.clone()));
        let response = self.coordinator.send(request).await?;
        check(&format!("heartbeat in {}", self.group), response.error_code)
    }

    /// Commits `offsets` (partition, next offset to read) in this member's generation.
    pub async fn commit(&self, offsets: &[(i32, i64)]) -> Result<(), ClientError> {
        if offsets.is_empty() {
            return Ok(());
        }
        let offsets: Vec<(String, i32, i64)> = offsets.iter().map(|(p, o)| (self.topic.clone(), *p, *o)).collect();
        commit_on(&self.coordinator, &self.group, self.generation, &self.member_id, &offsets).await
    }

    /// Leaves the group, so the others rebalance at once instead of after the session timeout.
    pub async fn leave(&self) -> Result<(), ClientError> {
        // v0-2 name the leaver in `member_id`, v3+ in `members`; the codec refuses a field
        // the chosen version does not have.
        let version = self.coordinator.version_for::<LeaveGroupRequest>(i16::MAX)?;
        let member_id = StrBytes::from_string(self.member_id.clone());
        let request = if version < 3 {
            LeaveGroupRequest::default().with_group_id(group_id(&self.group)).with_member_id(member_id)
        } else {
            LeaveGroupRequest::default()
                .with_group_id(group_id(&self.group))
                .with_members(vec![MemberIdentity::default().with_member_id(member_id)])
        };
        let response = self.coordinator.send_version(request, version).await?;
        check(&format!("leave group {}", self.group), response.error_code)?;
        for member in response.members {
            check(&format!("leave group {}", self.group), member.error_code)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_assignment_covers_every_partition_once_in_runs() {
        let members: Vec<String> = ["c", "a", "b"].iter().map(|s| s.to_string()).collect();
        let got = range_assign(&members, 8);
        assert_eq!(got, vec![("a".into(), vec![0, 1, 2]), ("b".into(), vec![3, 4, 5]), ("c".into(), vec![6, 7])]);
        let idle = range_assign(&members, 2);
        assert_eq!(idle[2].1, Vec::<i32>::new(), "more members than partitions: the last ones idle");
    }

    #[test]
    fn assignment_encoding_round_trips_through_the_decoder() {
        let bytes = assignment("t", &[1, 4, 7]);
        assert_eq!(decode_assignment(&bytes), vec![("t".into(), 1), ("t".into(), 4), ("t".into(), 7)]);
    }
}
