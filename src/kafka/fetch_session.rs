//! Incremental fetch sessions (KIP-227): a consumer of many partitions names them once, in the
//! full fetch that opens a session; later fetches of the session send only the partitions whose
//! fetch position changed (and the ones it forgets), and the broker answers only partitions with
//! something new (records, a moved high watermark, last stable offset or log start, an error).
//!
//! A session belongs to the connection that opened it (a client keeps one connection and one
//! session per broker): it lives as long as the connection, and a connection holds at most
//! [`SESSIONS_PER_CONNECTION`] (the least recently used goes first). A client that comes back on
//! a new connection with an old session id is told `FETCH_SESSION_ID_NOT_FOUND` and opens a new
//! session with a full fetch, as the protocol expects.
//!
//! A session does not read partitions with nothing new: each of its partitions has a slot in the
//! session's [`ChangeSignal`], marked by the partition's owner whenever a fetch of it may answer
//! differently. A partition last read at the end of what the client may see, unmarked since and
//! asked at the same position, would answer exactly as before (nothing), so it is neither read
//! nor answered; a long-poll waits for a mark. Per fetch, the owners' work follows what changed,
//! not how many partitions the session holds.

use std::collections::HashMap;
use std::sync::Arc;

use kafka_protocol::messages::FetchRequest;
use kafka_protocol::messages::fetch_request::FetchTopic;
use uuid::Uuid;

use crate::partition::ChangeSignal;

/// Sessions one connection may hold.
pub const SESSIONS_PER_CONNECTION: usize = 4;

/// Whether `topic` is the one named `name` (requests before v13) or with id `topic_id` (from
/// v13, when not nil).
fn same_topic(topic: &FetchTopic, name: &str, topic_id: &Uuid) -> bool {
    if topic_id.is_nil() { topic.topic.as_str() == name } else { topic.topic_id == *topic_id }
}

/// What the client was last told of a partition: an answer repeating it is left out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reported {
    /// High watermark.
    pub high_watermark: i64,
    /// Last stable offset.
    pub last_stable_offset: i64,
    /// Log start offset.
    pub log_start_offset: i64,
    /// Preferred read replica (-1: none).
    pub preferred_read_replica: i32,
}

/// One session: its partitions, what each was last answered, and the epoch the next fetch
/// must carry.
#[derive(Debug)]
pub struct FetchSession {
    id: i32,
    next_epoch: i32,
    topics: Vec<FetchTopic>,
    reported: HashMap<(usize, i32), Reported>,
    last_used: u64,
    listening: Listening,
}

/// How a session's partitions tell it they changed, and which are known to answer as before.
#[derive(Debug, Default)]
pub struct Listening {
    /// Marked by the partitions when they change.
    signal: Arc<ChangeSignal>,
    /// Each partition's slot in `signal`, by topic index and partition (kept when forgotten, so
    /// a partition named again listens under the slot it has).
    slots: HashMap<(usize, i32), u32>,
    /// By slot: the position (fetch offset, leader epoch) the partition was last read and
    /// answered at, when that read found nothing the client may see yet and the partition has
    /// not been marked since.
    quiet: Vec<Option<(i64, i32)>>,
}

impl FetchSession {
    /// Its partitions (as the next read should ask for them), and what it knows of their
    /// changes.
    pub fn parts(&mut self) -> (&[FetchTopic], &mut Listening) {
        (&self.topics, &mut self.listening)
    }

    /// What it knows of its partitions' changes.
    pub fn listening(&mut self) -> &mut Listening {
        &mut self.listening
    }

    /// Applies an incremental request: partitions it names are added or updated, the ones it
    /// forgets leave. Topics are matched by id when the request has ids, else by name.
    fn apply(&mut self, request: &FetchRequest) {
        for forgotten in &request.forgotten_topics_data {
            let name = forgotten.topic.as_str();
            if let Some(t) = self.topics.iter().position(|t| same_topic(t, name, &forgotten.topic_id)) {
                self.topics[t].partitions.retain(|p| !forgotten.partitions.contains(&p.partition));
                for partition in &forgotten.partitions {
                    self.reported.remove(&(t, *partition));
                    // Named again later, it is read and answered again.
                    self.listening.forget(t, *partition);
                }
            }
        }
        for topic in &request.topics {
            let t = match self.topics.iter().position(|t| same_topic(t, topic.topic.as_str(), &topic.topic_id)) {
                Some(t) => t,
                None => {
                    self.topics.push(topic.clone().with_partitions(Vec::new()));
                    self.topics.len() - 1
                }
            };
            let known = &mut self.topics[t].partitions;
            for partition in &topic.partitions {
                match known.iter_mut().find(|p| p.partition == partition.partition) {
                    Some(p) => *p = partition.clone(),
                    None => known.push(partition.clone()),
                }
            }
        }
        // Topics left empty keep their index (the reported map refers to it) but cost nothing.
    }

    /// Whether an answer for partition `partition` of topic `t` tells the client anything new,
    /// remembering what it tells. `news`: it carries records or an error.
    pub fn report(&mut self, t: usize, partition: i32, now: Reported, news: bool) -> bool {
        let before = self.reported.insert((t, partition), now);
        news || before != Some(now)
    }
}

impl Listening {
    /// The signal the session's partitions mark.
    pub fn signal(&self) -> &Arc<ChangeSignal> {
        &self.signal
    }

    /// The slot of partition `partition` of topic `t` (a new one the first time).
    pub fn slot(&mut self, t: usize, partition: i32) -> u32 {
        let next = self.quiet.len() as u32;
        let slot = *self.slots.entry((t, partition)).or_insert(next);
        if slot == next {
            self.quiet.push(None);
        }
        slot
    }

    /// Takes the partitions' marks: a marked partition is read again.
    pub fn take_marks(&mut self) {
        for slot in self.signal.take() {
            if let Some(quiet) = self.quiet.get_mut(slot as usize) {
                *quiet = None;
            }
        }
    }

    /// Whether the partition in `slot` would answer nothing new if read at `position` (fetch
    /// offset, the client's leader epoch): it was last read there with nothing to see, was
    /// answered, and has not changed since.
    pub fn unchanged(&self, slot: u32, position: (i64, i32)) -> bool {
        self.quiet.get(slot as usize).is_some_and(|at| *at == Some(position))
    }

    fn forget(&mut self, t: usize, partition: i32) {
        if let Some(slot) = self.slots.get(&(t, partition)) {
            self.quiet[*slot as usize] = None;
        }
    }

    /// Partition `slot` was read and answered at `position`; `quiet` when nothing there was
    /// visible yet.
    pub fn was_read(&mut self, slot: u32, position: (i64, i32), quiet: bool) {
        if let Some(at) = self.quiet.get_mut(slot as usize) {
            *at = quiet.then_some(position);
        }
    }
}

/// Why an incremental fetch cannot go on in its session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionError {
    /// No such session on this connection.
    NotFound,
    /// The fetch carries another epoch than the one expected.
    InvalidEpoch,
}

/// How a fetch relates to sessions, from its session id and epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionUse {
    /// A full fetch outside any session (epoch -1, or a request before v7).
    Sessionless,
    /// A full fetch that opens a new session (epoch 0).
    Open,
    /// An incremental fetch in session `id`.
    Incremental {
        /// The session.
        id: i32,
    },
}

/// The sessions of one connection.
#[derive(Debug, Default)]
pub struct FetchSessions {
    sessions: Vec<FetchSession>,
    uses: u64,
}

impl FetchSessions {
    /// Reads a request's session fields: closes the session it ends or replaces, checks the
    /// epoch of an incremental one (and moves it on), and says how to answer.
    pub fn begin(&mut self, version: i16, request: &FetchRequest) -> Result<SessionUse, SessionError> {
        if version < 7 {
            return Ok(SessionUse::Sessionless);
        }
        let (id, epoch) = (request.session_id, request.session_epoch);
        if epoch <= 0 {
            if id != 0 {
                self.sessions.retain(|s| s.id != id);
            }
            return Ok(if epoch == 0 { SessionUse::Open } else { SessionUse::Sessionless });
        }
        self.uses += 1;
        let uses = self.uses;
        let session = self.sessions.iter_mut().find(|s| s.id == id).ok_or(SessionError::NotFound)?;
        if session.next_epoch != epoch {
            return Err(SessionError::InvalidEpoch);
        }
        session.next_epoch = if epoch == i32::MAX { 1 } else { epoch + 1 };
        session.last_used = uses;
        session.apply(request);
        Ok(SessionUse::Incremental { id })
    }

    /// The session `id` (after [`begin`](Self::begin) said it is in use).
    pub fn get_mut(&mut self, id: i32) -> Option<&mut FetchSession> {
        self.sessions.iter_mut().find(|s| s.id == id)
    }

    /// Opens a session over `topics`, answered with `reported` (by topic index and partition);
    /// returns its id. The least recently used session goes when the connection has too many.
    pub fn open(&mut self, topics: Vec<FetchTopic>, reported: HashMap<(usize, i32), Reported>) -> i32 {
        if self.sessions.len() >= SESSIONS_PER_CONNECTION
            && let Some(oldest) = self.sessions.iter().enumerate().min_by_key(|(_, s)| s.last_used).map(|(i, _)| i)
        {
            self.sessions.remove(oldest);
        }
        let id = loop {
            let id = (rand::random::<u32>() & 0x7fff_ffff) as i32;
            if id != 0 && self.sessions.iter().all(|s| s.id != id) {
                break id;
            }
        };
        self.uses += 1;
        self.sessions.push(FetchSession {
            id,
            next_epoch: 1,
            topics,
            reported,
            last_used: self.uses,
            listening: Listening::default(),
        });
        id
    }

    /// Sessions open.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether none is open.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::wire::topic_name;
    use kafka_protocol::messages::fetch_request::{FetchPartition, ForgottenTopic};

    fn request(id: i32, epoch: i32, parts: &[(&str, i32, i64)], forget: &[(&str, i32)]) -> FetchRequest {
        let mut topics: Vec<FetchTopic> = Vec::new();
        for (name, partition, offset) in parts {
            let p = FetchPartition::default().with_partition(*partition).with_fetch_offset(*offset);
            match topics.iter_mut().find(|t| t.topic.as_str() == *name) {
                Some(t) => t.partitions.push(p),
                None => topics.push(FetchTopic::default().with_topic(topic_name(name)).with_partitions(vec![p])),
            }
        }
        let forgotten = forget
            .iter()
            .map(|(name, p)| ForgottenTopic::default().with_topic(topic_name(name)).with_partitions(vec![*p]))
            .collect();
        FetchRequest::default()
            .with_session_id(id)
            .with_session_epoch(epoch)
            .with_topics(topics)
            .with_forgotten_topics_data(forgotten)
    }

    fn offsets(session: &mut FetchSession) -> Vec<(String, i32, i64)> {
        session
            .parts()
            .0
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| (t.topic.as_str().to_owned(), p.partition, p.fetch_offset)))
            .collect()
    }

    #[test]
    fn a_session_remembers_its_partitions_and_takes_changes_and_forgets() {
        let mut sessions = FetchSessions::default();
        let full = request(0, 0, &[("a", 0, 10), ("a", 1, 20), ("b", 0, 5)], &[]);
        assert_eq!(sessions.begin(12, &full), Ok(SessionUse::Open));
        let id = sessions.open(full.topics.clone(), HashMap::new());
        let next = request(id, 1, &[("a", 1, 25), ("c", 3, 0)], &[("b", 0)]);
        assert_eq!(sessions.begin(12, &next), Ok(SessionUse::Incremental { id }));
        let session = sessions.get_mut(id).unwrap();
        assert_eq!(
            offsets(session),
            vec![("a".into(), 0, 10), ("a".into(), 1, 25), ("c".into(), 3, 0)],
            "b-0 forgotten, a-1 moved, c-3 added"
        );
        // The same epoch again, a stale one, or an unknown session: refused.
        assert_eq!(sessions.begin(12, &request(id, 1, &[], &[])), Err(SessionError::InvalidEpoch));
        assert_eq!(sessions.begin(12, &request(id + 1, 2, &[], &[])), Err(SessionError::NotFound));
        assert_eq!(sessions.begin(12, &request(id, 2, &[], &[])), Ok(SessionUse::Incremental { id }));
        // Epoch -1 closes it.
        assert_eq!(sessions.begin(12, &request(id, -1, &[], &[])), Ok(SessionUse::Sessionless));
        assert!(sessions.is_empty());
        assert_eq!(sessions.begin(6, &request(id, 3, &[], &[])), Ok(SessionUse::Sessionless), "no sessions before v7");
    }

    #[test]
    fn a_partition_answered_at_its_end_is_not_read_again_until_marked_moved_or_forgotten() {
        let mut sessions = FetchSessions::default();
        let id = sessions.open(request(0, 0, &[("t", 7, 5)], &[]).topics, HashMap::new());
        let session = sessions.get_mut(id).unwrap();
        let listening = session.listening();
        let slot = listening.slot(0, 7);
        assert_eq!(listening.slot(0, 7), slot, "a partition keeps its slot");
        assert_ne!(listening.slot(0, 8), slot);
        assert!(!listening.unchanged(slot, (5, 0)), "never read yet");
        listening.was_read(slot, (5, 0), true);
        assert!(listening.unchanged(slot, (5, 0)));
        assert!(!listening.unchanged(slot, (4, 0)), "another offset");
        assert!(!listening.unchanged(slot, (5, 1)), "another leader epoch");
        listening.signal().mark(slot);
        listening.take_marks();
        assert!(!listening.unchanged(slot, (5, 0)), "marked: read again");
        listening.was_read(slot, (5, 0), false);
        assert!(!listening.unchanged(slot, (5, 0)), "the read found records");
        listening.was_read(slot, (5, 0), true);
        session.apply(&request(id, 1, &[], &[("t", 7)]));
        assert!(!session.listening().unchanged(slot, (5, 0)), "forgotten, so never answered since");
    }

    #[test]
    fn only_news_is_reported_and_a_connection_keeps_its_most_recent_sessions() {
        let mut sessions = FetchSessions::default();
        let id = sessions.open(Vec::new(), HashMap::new());
        let session = sessions.get_mut(id).unwrap();
        let hw = |high_watermark| Reported { high_watermark, ..Reported::default() };
        assert!(session.report(0, 0, hw(5), false), "first time: news");
        assert!(!session.report(0, 0, hw(5), false), "nothing changed");
        assert!(session.report(0, 0, hw(5), true), "records or an error are news");
        assert!(session.report(0, 0, hw(6), false), "a moved high watermark is news");
        let ids: Vec<i32> = (0..SESSIONS_PER_CONNECTION).map(|_| sessions.open(Vec::new(), HashMap::new())).collect();
        assert_eq!(sessions.len(), SESSIONS_PER_CONNECTION);
        assert!(sessions.get_mut(id).is_none(), "the least recently used went");
        assert!(ids.iter().all(|i| sessions.get_mut(*i).is_some()));
    }
}
