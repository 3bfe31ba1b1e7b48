//! The replica set of a partition as its leader keeps it: who the replicas are, which are in
//! sync, how far each follower has fetched, and when it last caught up. From it come the high
//! watermark (the smallest log end over the in-sync replicas) and the ISR changes the leader asks
//! the controller for: a follower that has not caught up for `replica.lag.time.max.ms` leaves,
//! one that has caught up (to the high watermark, within the current leader epoch) joins.
//!
//! While a change is in flight the leader counts the larger of the two sets (Kafka's "maximal
//! ISR", KIP-497): a joining follower is counted at once, a leaving one until the controller has
//! committed its removal, so the high watermark never passes what the committed ISR lacks.
//!
//! Ownership: plain data inside its `Partition` (one shard).

use std::collections::HashMap;

use crate::model::BrokerId;

/// A partition's replicas as the metadata assigns them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Assignment {
    /// The leader (`NO_BROKER` when none).
    pub leader: BrokerId,
    /// Its epoch.
    pub leader_epoch: i32,
    /// Bumped by every change of leader, ISR or replicas (AlterPartition requests carry it).
    pub partition_epoch: i32,
    /// Every replica, the preferred leader first.
    pub replicas: Vec<BrokerId>,
    /// The in-sync replicas.
    pub isr: Vec<BrokerId>,
}

/// How far a follower has come, as its fetches tell the leader.
#[derive(Clone, Copy, Debug)]
struct Progress {
    /// Its log end (the offset it fetched from); -1 until it fetched in this leadership.
    log_end: i64,
    /// Its log start, as its last fetch said; -1 until then.
    log_start: i64,
    /// When it last caught up with the leader's log end.
    last_caught_up_ms: i64,
    /// When it last fetched, and the leader's log end then.
    last_fetch_ms: i64,
    leader_end_at_last_fetch: i64,
}

/// The leader's view of a partition's replicas.
#[derive(Debug)]
pub struct ReplicaSet {
    me: BrokerId,
    assignment: Assignment,
    followers: HashMap<BrokerId, Progress>,
    /// An ISR change sent to the controller and not yet seen committed.
    pending: Option<Pending>,
}

/// An ISR change in flight.
#[derive(Debug)]
struct Pending {
    isr: Vec<BrokerId>,
    /// The partition epoch it was sent against (its answer is matched by it).
    partition_epoch: i32,
    sent_ms: i64,
}

/// How long a change whose answer never came (or was lost) stays in flight before the leader
/// asks again (Kafka resends too).
pub const ISR_CHANGE_RESEND_MS: i64 = 5_000;

impl ReplicaSet {
    /// The replica set of this broker `me` under `assignment`, at `now`.
    pub fn new(me: BrokerId, assignment: Assignment, now: i64) -> Self {
        let mut set = Self { me, assignment: Assignment::default(), followers: HashMap::new(), pending: None };
        set.assign(assignment, now);
        set
    }

    /// Takes a new assignment from the metadata. A new leadership (or leader epoch) starts every
    /// follower afresh: unknown log end, caught up as of now (Kafka gives ISR members a full lag
    /// period after an election).
    pub fn assign(&mut self, assignment: Assignment, now: i64) {
        let new_term =
            assignment.leader != self.assignment.leader || assignment.leader_epoch != self.assignment.leader_epoch;
        if new_term {
            self.followers.clear();
        }
        // The metadata moved past the epoch the change was sent against: committed or not, it
        // is settled (a refused one is asked again from the new state).
        if self.pending.as_ref().is_some_and(|p| assignment.partition_epoch != p.partition_epoch) || new_term {
            self.pending = None;
        }
        for b in &assignment.replicas {
            if *b != self.me {
                self.followers.entry(*b).or_insert(Progress {
                    log_end: -1,
                    log_start: -1,
                    last_caught_up_ms: now,
                    last_fetch_ms: -1,
                    leader_end_at_last_fetch: -1,
                });
            }
        }
        self.followers.retain(|b, _| assignment.replicas.contains(b));
        self.assignment = assignment;
    }

    /// The assignment.
    pub fn assignment(&self) -> &Assignment {
        &self.assignment
    }

    /// Whether this broker leads.
    pub fn is_leader(&self) -> bool {
        self.assignment.leader == self.me
    }

    /// In-sync replicas counted for `min.insync.replicas`: the committed ISR.
    pub fn isr_len(&self) -> usize {
        self.assignment.isr.len()
    }

    /// The set the high watermark waits for: the committed ISR and any member a pending change
    /// adds.
    fn maximal_isr(&self) -> Vec<BrokerId> {
        let mut isr = self.assignment.isr.clone();
        for b in self.pending.iter().flat_map(|p| &p.isr) {
            if !isr.contains(b) {
                isr.push(*b);
            }
        }
        isr
    }

    /// The high watermark the replicas allow, given what this replica stands behind
    /// (`local_end`): the smallest log end over the maximal ISR.
    pub fn high_watermark(&self, local_end: i64) -> i64 {
        self.maximal_isr()
            .iter()
            .filter(|b| **b != self.me)
            .map(|b| self.followers.get(b).map_or(-1, |p| p.log_end))
            .fold(local_end, i64::min)
    }

    /// The low watermark DeleteRecords waits for, given this replica's log start
    /// (`local_start`): the smallest log start over the maximal ISR (a member that has not said
    /// its log start in this leadership counts as -1). Kafka takes every live replica; counting
    /// the in-sync ones is what matters (only they can become leader in a clean election) and a
    /// stalled follower does not hold every deletion up until it is dropped.
    pub fn low_watermark(&self, local_start: i64) -> i64 {
        self.maximal_isr()
            .iter()
            .filter(|b| **b != self.me)
            .map(|b| self.followers.get(b).map_or(-1, |p| p.log_start))
            .fold(local_start, i64::min)
    }

    /// A follower fetched from `fetch_offset` (so it holds everything before it) with its log
    /// starting at `log_start` (-1: not said) while the leader's log ended at `leader_end`.
    /// False for a broker that is not a replica.
    pub fn fetched(
        &mut self,
        follower: BrokerId,
        fetch_offset: i64,
        log_start: i64,
        leader_end: i64,
        now: i64,
    ) -> bool {
        let Some(p) = self.followers.get_mut(&follower) else { return false };
        p.log_end = fetch_offset;
        p.log_start = log_start;
        // Caught up: at the leader's end now, or at least where the leader ended at its last
        // fetch (it keeps up, even if the leader moved on meanwhile).
        if fetch_offset >= leader_end {
            p.last_caught_up_ms = now;
        } else if p.last_fetch_ms >= 0 && fetch_offset >= p.leader_end_at_last_fetch {
            p.last_caught_up_ms = p.last_fetch_ms;
        }
        p.last_fetch_ms = now;
        p.leader_end_at_last_fetch = leader_end;
        true
    }

    /// The ISR the leader should ask for now, if it differs from the committed one and nothing
    /// is in flight: followers lagging for longer than `lag_ms` leave; followers that reached
    /// `high_watermark` and `epoch_start` (the first offset of this leader epoch) join.
    pub fn wanted_isr(&self, high_watermark: i64, epoch_start: i64, now: i64, lag_ms: i64) -> Option<Vec<BrokerId>> {
        if !self.is_leader() || self.pending.as_ref().is_some_and(|p| now - p.sent_ms < ISR_CHANGE_RESEND_MS) {
            return None;
        }
        let mut isr: Vec<BrokerId> = self
            .assignment
            .isr
            .iter()
            .copied()
            .filter(|b| *b == self.me || self.followers.get(b).is_some_and(|p| now - p.last_caught_up_ms <= lag_ms))
            .collect();
        for b in &self.assignment.replicas {
            if isr.contains(b) || *b == self.me {
                continue;
            }
            if let Some(p) = self.followers.get(b)
                && p.log_end >= high_watermark
                && p.log_end >= epoch_start
                && now - p.last_caught_up_ms <= lag_ms
            {
                isr.push(*b);
            }
        }
        if !isr.contains(&self.me) {
            isr.insert(0, self.me);
        }
        let mut sorted_new = isr.clone();
        sorted_new.sort_unstable();
        let mut sorted_old = self.assignment.isr.clone();
        sorted_old.sort_unstable();
        (sorted_new != sorted_old).then_some(isr)
    }

    /// The change `isr` was sent to the controller at `now`, against the current partition
    /// epoch. A change asked again replaces the one in flight, whose joiners still count for the
    /// high watermark until the metadata settles it.
    pub fn change_sent(&mut self, isr: Vec<BrokerId>, now: i64) {
        let mut counted = isr;
        if let Some(old) = self.pending.take() {
            for b in old.isr {
                if !counted.contains(&b) && !self.assignment.isr.contains(&b) {
                    counted.push(b);
                }
            }
        }
        self.pending = Some(Pending { isr: counted, partition_epoch: self.assignment.partition_epoch, sent_ms: now });
    }

    /// The controller refused the change sent against `partition_epoch` (it will never be
    /// committed): it may be asked again at once. An answer to an older change is ignored.
    pub fn change_refused(&mut self, partition_epoch: i32) {
        if self.pending.as_ref().is_some_and(|p| p.partition_epoch == partition_epoch) {
            self.pending = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three(isr: Vec<BrokerId>) -> Assignment {
        Assignment { leader: 1, leader_epoch: 3, partition_epoch: 7, replicas: vec![1, 2, 3], isr }
    }

    #[test]
    fn the_high_watermark_waits_for_every_in_sync_follower() {
        let mut set = ReplicaSet::new(1, three(vec![1, 2, 3]), 0);
        assert_eq!(set.high_watermark(100), -1, "nothing is known of the followers yet");
        set.fetched(2, 80, 0, 100, 10);
        set.fetched(3, 60, 0, 100, 10);
        assert_eq!(set.high_watermark(100), 60);
        set.fetched(3, 100, 0, 100, 20);
        assert_eq!(set.high_watermark(90), 80, "the leader's own end counts too");
    }

    #[test]
    fn lagging_followers_leave_and_caught_up_ones_join() {
        let mut set = ReplicaSet::new(1, three(vec![1, 2, 3]), 0);
        set.fetched(2, 100, 0, 100, 1_000);
        // Follower 3 never fetched: after the lag time it leaves.
        assert_eq!(set.wanted_isr(100, 0, 20_000, 30_000), None);
        let shrunk = set.wanted_isr(100, 0, 31_000, 30_000).expect("3 lags");
        assert_eq!(shrunk, vec![1, 2]);
        set.change_sent(shrunk.clone(), 31_000);
        assert_eq!(set.wanted_isr(100, 0, 31_000, 30_000), None, "one change at a time");
        // While the removal is in flight, 3 still holds the high watermark back.
        assert_eq!(set.high_watermark(100), -1);
        set.assign(Assignment { partition_epoch: 8, isr: shrunk, ..three(vec![]) }, 31_500);
        assert_eq!(set.high_watermark(100), 100);
        // 3 comes back and catches up: it joins (2 keeps fetching meanwhile).
        set.fetched(2, 100, 0, 100, 32_000);
        set.fetched(3, 50, 0, 100, 32_000);
        assert_eq!(set.wanted_isr(100, 0, 32_000, 30_000), None, "behind the high watermark");
        set.fetched(2, 100, 0, 100, 33_000);
        set.fetched(3, 100, 0, 100, 33_000);
        assert_eq!(set.wanted_isr(100, 0, 33_000, 30_000), Some(vec![1, 2, 3]));
        // A follower that has not reached this leader epoch's start does not join.
        assert_eq!(set.wanted_isr(100, 120, 33_000, 30_000), None);
    }

    #[test]
    fn a_new_leader_epoch_forgets_follower_progress() {
        let mut set = ReplicaSet::new(1, three(vec![1, 2, 3]), 0);
        set.fetched(2, 100, 0, 100, 10);
        set.fetched(3, 100, 0, 100, 10);
        assert_eq!(set.high_watermark(100), 100);
        set.assign(Assignment { leader_epoch: 4, partition_epoch: 8, ..three(vec![1, 2, 3]) }, 20);
        assert_eq!(set.high_watermark(100), -1);
        assert!(!set.fetched(9, 1, 0, 1, 1), "not a replica");
    }

    #[test]
    fn the_low_watermark_waits_for_every_in_sync_follower_and_only_for_them() {
        let mut set = ReplicaSet::new(1, three(vec![1, 2, 3]), 0);
        assert_eq!(set.low_watermark(50), -1, "nothing is known of the followers yet");
        set.fetched(2, 100, 50, 100, 10);
        set.fetched(3, 100, 20, 100, 10);
        assert_eq!(set.low_watermark(50), 20);
        set.fetched(3, 100, 60, 100, 20);
        assert_eq!(set.low_watermark(50), 50, "the leader's own start counts too");
        // 3 leaves the ISR: its log start no longer holds the low watermark back.
        set.fetched(3, 100, 0, 100, 30);
        assert_eq!(set.low_watermark(50), 0);
        set.assign(Assignment { partition_epoch: 8, ..three(vec![1, 2]) }, 40);
        assert_eq!(set.low_watermark(50), 50);
    }
}
