//! The metadata quorum: the cluster's metadata log replicated by Raft among the voters (TiKV's
//! `raft` crate, which is sans-IO: this module drives its clock, its messages and its storage from
//! shard 0). The Raft leader is the active controller. Every committed entry (a batch of metadata
//! records) is applied to this node's image in order and handed on to be published to the shards.
//!
//! Ownership: the [`Quorum`] lives on shard 0 (`Rc`). Other tasks of that shard propose through it
//! and read its state; its driver task is the only one touching the Raft node.

mod store;
mod transport;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_channel::oneshot;
use raft::eraftpb::{Entry, EntryType, Message};
use raft::{RawNode, StateRole};

pub use store::{LoadedDisk, QuorumDisk, QuorumStorage};
pub use transport::Transport;

use super::image::MetadataImage;
use super::metadata_log::MetadataLog;
use super::records::MetadataRecord;
use crate::io::{self, Faults, LocalSignal};
use crate::model::BrokerId;

/// How often the Raft clock ticks.
const TICK: Duration = Duration::from_millis(100);
/// How often the metadata log checks that its disk-full reserve is in place.
const RESERVE_CHECK: std::time::Duration = std::time::Duration::from_secs(2);
/// Ticks without a leader's heartbeat before a follower campaigns (1 s; Raft randomises it up to
/// twice that).
const ELECTION_TICKS: usize = 10;
/// Ticks between the leader's heartbeats.
const HEARTBEAT_TICKS: usize = 2;
/// Raft messages and proposals queued for the driver at most (messages beyond are dropped: Raft
/// resends).
const INBOX_CAPACITY: usize = 4096;
/// Committed entries after the last snapshot before a new one is taken.
const SNAPSHOT_AFTER_ENTRIES: usize = 1000;
/// Longest a proposal waits to be committed.
const PROPOSAL_TIMEOUT: Duration = Duration::from_secs(10);

/// A voter: its node id and its controller listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Voter {
    /// Node id.
    pub id: BrokerId,
    /// Controller listener address.
    pub addr: SocketAddr,
}

/// A metadata log entry: its index and records (or, for a snapshot, the whole image as records
/// at an index).
pub type LogEntry = (u64, Vec<MetadataRecord>);

/// Why a proposal was not committed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuorumError {
    /// This node is not the leader (the leader, when known).
    #[error("not the active controller (leader: {0:?})")]
    NotLeader(Option<BrokerId>),
    /// It was not committed in time (no majority reachable).
    #[error("the metadata quorum did not commit the change in time")]
    Timeout,
    /// The node's Raft storage failed.
    #[error("metadata quorum storage failed: {0}")]
    Storage(String),
}

enum Input {
    Message(Message),
    Propose { records: Vec<MetadataRecord>, reply: oneshot::Sender<Result<u64, QuorumError>> },
}

/// This node's state in the quorum, as other tasks see it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QuorumStatus {
    /// The current leader, if known.
    pub leader: Option<BrokerId>,
    /// Whether this node is it.
    pub is_leader: bool,
    /// Raft term.
    pub term: u64,
    /// Index of the last entry applied to the image.
    pub applied: u64,
    /// While leading: the index of the first entry of this term (a leader acts only once it has
    /// applied everything before it, so it never plans against a stale image).
    pub leader_since: u64,
}

impl QuorumStatus {
    /// Leading, and caught up with everything committed before this term.
    pub fn is_active(&self) -> bool {
        self.is_leader && self.applied >= self.leader_since
    }
}

/// The metadata quorum on this node.
pub struct Quorum {
    node_id: BrokerId,
    inbox: flume::Sender<Input>,
    status: Cell<QuorumStatus>,
    image: RefCell<Arc<MetadataImage>>,
    image_changed: LocalSignal,
    /// Entries applied since the last snapshot, for brokers fetching the log (index, records).
    recent: RefCell<Vec<(u64, Vec<MetadataRecord>)>>,
    /// Woken whenever an entry is applied (long-polling fetches).
    applied_signal: RefCell<Vec<oneshot::Sender<()>>>,
    voters: Vec<Voter>,
    /// While leading: how far each voter's log matches the leader's (node id, index).
    matched: RefCell<Vec<(BrokerId, u64)>>,
    /// When each peer was last heard from (ms since the epoch).
    last_heard: RefCell<HashMap<BrokerId, i64>>,
}

/// A voter as the leader sees it (DescribeQuorum).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VoterState {
    /// Node id.
    pub id: BrokerId,
    /// Its controller listener.
    pub addr: SocketAddr,
    /// Its log matches the leader's up to this index.
    pub matched: u64,
    /// When it was last heard from (ms since the epoch; -1 never).
    pub last_heard_ms: i64,
}

fn slog_logger() -> slog::Logger {
    slog::Logger::root(TracingDrain, slog::o!())
}

/// Raft's own log lines, passed to `tracing` at debug level (warnings and errors as such).
struct TracingDrain;

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &slog::Record<'_>, _: &slog::OwnedKVList) -> Result<(), slog::Never> {
        match record.level() {
            slog::Level::Critical | slog::Level::Error => tracing::error!(target: "raft", "{}", record.msg()),
            slog::Level::Warning => tracing::warn!(target: "raft", "{}", record.msg()),
            _ => tracing::debug!(target: "raft", "{}", record.msg()),
        }
        Ok(())
    }
}

/// Decodes a committed entry's records (an empty entry, such as a new leader's, holds none).
fn entry_records(entry: &Entry) -> Vec<MetadataRecord> {
    if entry.get_entry_type() != EntryType::EntryNormal || entry.data.is_empty() {
        return Vec::new();
    }
    match serde_json::from_slice(&entry.data) {
        Ok(records) => records,
        Err(err) => {
            tracing::error!(index = entry.index, error = %err, "metadata entry does not decode; skipping it");
            Vec::new()
        }
    }
}

/// The image a snapshot's data holds (records as JSON), at the snapshot's index.
fn snapshot_image(data: &[u8], index: u64) -> Result<MetadataImage, String> {
    if data.is_empty() {
        return Ok(MetadataImage::empty().apply_entry(index, &[]));
    }
    let records: Vec<MetadataRecord> = serde_json::from_slice(data).map_err(|e| e.to_string())?;
    Ok(MetadataImage::empty().apply_entry(index, &records))
}

/// What a node's quorum starts from, loaded before the shards start.
pub struct QuorumStart {
    /// The Raft state on disk.
    pub disk: LoadedDisk,
    /// The image of everything known to be committed.
    pub image: MetadataImage,
    /// The image with every entry this node holds applied, committed or not (what a data
    /// directory may hold files of).
    pub held: MetadataImage,
}

impl QuorumStart {
    /// Loads the quorum's state from `data_dir`. A first start begins with `voters`, seeded with
    /// what a metadata log of an older single-node Moldau held (that log is then set aside).
    pub async fn load(data_dir: &Path, broker: BrokerId, voters: &[Voter], faults: Faults) -> Result<Self, String> {
        let ids: Vec<u64> = voters.iter().map(|v| raft_id(v.id)).collect();
        let legacy = MetadataLog::new(data_dir, faults.clone());
        let quorum_error = |e: std::io::Error| format!("metadata quorum: {e}");
        let mut seed = None;
        let fresh = !QuorumDisk::exists(data_dir, &faults).await.map_err(quorum_error)?;
        if fresh && legacy.exists().await.map_err(quorum_error)? {
            if ids.len() != 1 {
                return Err("this data directory holds the metadata log of a single-node Moldau; start it once as a \
                            cluster of its own (without --voters) to upgrade it"
                    .into());
            }
            let replayed = legacy.replay(broker).await.map_err(quorum_error)?;
            let image = MetadataImage::empty().apply_all(&replayed.records);
            tracing::info!(records = replayed.records.len(), "seeding the metadata quorum from the old metadata log");
            seed = Some(serde_json::to_vec(&image.to_records()).expect("metadata records serialize"));
        }
        let seeded = seed.is_some();
        let mut disk = QuorumDisk::open(data_dir, &ids, seed, faults).await.map_err(quorum_error)?;
        if seeded {
            legacy.retire().await.map_err(quorum_error)?;
        }
        let stored = disk.voters();
        if stored != ids {
            let nodes = |ids: &[u64]| ids.iter().map(|i| node_of(*i).to_string()).collect::<Vec<_>>().join(",");
            return Err(format!(
                "the voters are nodes {} but this data directory belongs to a quorum of nodes {}; start it with the voters it was created with",
                nodes(&ids),
                nodes(&stored)
            ));
        }
        let snapshot = disk.snapshot();
        let mut image = snapshot_image(snapshot.get_data(), snapshot.get_metadata().index)?;
        // A single voter's entries are committed once on its disk; with several, only up to the
        // commit index last written down is known to be.
        if ids.len() == 1 {
            disk.commit_all_held();
        }
        let commit = disk.hard_state().commit;
        let mut held = None;
        for entry in disk.entries() {
            if entry.index > commit && held.is_none() {
                held = Some(image.clone());
            }
            let records = entry_records(entry);
            match held.as_mut() {
                Some(held) => *held = held.apply_entry(entry.index, &records),
                None => image = image.apply_entry(entry.index, &records),
            }
        }
        let held = held.unwrap_or_else(|| image.clone());
        Ok(Self { disk, image, held })
    }
}

impl Quorum {
    /// Starts this node's quorum member on the calling shard: the Raft node over `start`, its
    /// transport to the other voters (in TLS when `tls`), and its driver task. `hello`
    /// introduces it to peers.
    pub fn start(
        node_id: BrokerId,
        voters: Vec<Voter>,
        start: QuorumStart,
        hello: super::rpc::Hello,
        tls: Option<super::rpc::ControllerTlsSource>,
    ) -> Result<Rc<Self>, String> {
        let QuorumStart { disk, image, .. } = start;
        let disk = disk.into_disk();
        let config = raft::Config {
            id: raft_id(node_id),
            election_tick: ELECTION_TICKS,
            heartbeat_tick: HEARTBEAT_TICKS,
            applied: image.applied_index,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            check_quorum: true,
            pre_vote: true,
            ..Default::default()
        };
        config.validate().map_err(|e| format!("metadata quorum: {e}"))?;
        let node =
            RawNode::new(&config, disk.storage(), &slog_logger()).map_err(|e| format!("metadata quorum: {e}"))?;
        let (inbox, input) = flume::bounded(INBOX_CAPACITY);
        let quorum = Rc::new(Self {
            node_id,
            inbox,
            status: Cell::new(QuorumStatus { applied: image.applied_index, ..QuorumStatus::default() }),
            image: RefCell::new(Arc::new(image)),
            image_changed: LocalSignal::new(),
            recent: RefCell::new(Vec::new()),
            applied_signal: RefCell::new(Vec::new()),
            voters: voters.clone(),
            matched: RefCell::new(Vec::new()),
            last_heard: RefCell::new(HashMap::new()),
        });
        let peers: HashMap<u64, SocketAddr> =
            voters.iter().filter(|v| v.id != node_id).map(|v| (raft_id(v.id), v.addr)).collect();
        let source = voters.iter().find(|v| v.id == node_id).map(|v| v.addr.ip());
        let transport = Transport::new(peers, hello, source, tls);
        io::spawn_detached(drive(quorum.clone(), node, disk, transport, input));
        Ok(quorum)
    }

    /// This node's id.
    pub fn node_id(&self) -> BrokerId {
        self.node_id
    }

    /// The current state.
    pub fn status(&self) -> QuorumStatus {
        self.status.get()
    }

    /// The image of everything committed and applied so far.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.borrow().clone()
    }

    /// Set whenever the image changes (the publisher waits on it).
    pub fn image_changed(&self) -> &LocalSignal {
        &self.image_changed
    }

    /// Hands a Raft message from a peer to the driver (dropped when it is behind: Raft resends).
    pub fn receive(&self, message: Message) {
        if message.from != raft::INVALID_ID {
            self.last_heard.borrow_mut().insert(node_of(message.from), io::now_ms());
        }
        let _ = self.inbox.try_send(Input::Message(message));
    }

    /// Proposes `records` as one entry and waits until it is committed and applied; returns its
    /// index. Only the leader accepts proposals.
    pub async fn propose(&self, records: Vec<MetadataRecord>) -> Result<u64, QuorumError> {
        let status = self.status();
        if !status.is_leader {
            return Err(QuorumError::NotLeader(status.leader));
        }
        let (reply, rx) = oneshot::channel();
        self.inbox
            .send_async(Input::Propose { records, reply })
            .await
            .map_err(|_| QuorumError::Storage("the quorum stopped".into()))?;
        match io::timeout(PROPOSAL_TIMEOUT, rx).await {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(QuorumError::NotLeader(self.status().leader)),
            None => Err(QuorumError::Timeout),
        }
    }

    /// The committed entries after `after_index`, or the whole image when they are no longer
    /// held (for a broker that is not a voter).
    pub fn entries_after(&self, after_index: u64) -> (Option<LogEntry>, Vec<LogEntry>) {
        let recent = self.recent.borrow();
        let oldest = recent.first().map(|(i, _)| *i);
        let image = self.image();
        match oldest {
            Some(first) if after_index + 1 >= first => {
                (None, recent.iter().filter(|(i, _)| *i > after_index).cloned().collect())
            }
            _ if after_index >= image.applied_index => (None, Vec::new()),
            _ => (Some((image.applied_index, image.to_records())), Vec::new()),
        }
    }

    /// The voters as this node sees them (their progress is known while it leads).
    pub fn voter_states(&self) -> Vec<VoterState> {
        let matched = self.matched.borrow();
        let heard = self.last_heard.borrow();
        let applied = self.status().applied;
        self.voters
            .iter()
            .map(|v| VoterState {
                id: v.id,
                addr: v.addr,
                matched: if v.id == self.node_id {
                    applied
                } else {
                    matched.iter().find(|(id, _)| *id == v.id).map_or(0, |(_, m)| *m)
                },
                last_heard_ms: if v.id == self.node_id {
                    io::now_ms()
                } else {
                    heard.get(&v.id).copied().unwrap_or(-1)
                },
            })
            .collect()
    }

    /// Waits until an entry after `index` is applied, or `timeout`.
    pub async fn wait_applied_after(&self, index: u64, timeout: Duration) {
        if self.status().applied > index {
            return;
        }
        let (tx, rx) = oneshot::channel();
        self.applied_signal.borrow_mut().push(tx);
        let _ = io::timeout(timeout, rx).await;
    }

    fn apply(&self, entry: &Entry) {
        let records = entry_records(entry);
        let next = self.image().apply_entry(entry.index, &records);
        *self.image.borrow_mut() = Arc::new(next);
        let mut recent = self.recent.borrow_mut();
        recent.push((entry.index, records));
        let mut status = self.status.get();
        status.applied = entry.index;
        self.status.set(status);
        for waiter in self.applied_signal.borrow_mut().drain(..) {
            let _ = waiter.send(());
        }
        self.image_changed.notify();
    }

    fn install_snapshot_image(&self, image: MetadataImage) {
        let index = image.applied_index;
        *self.image.borrow_mut() = Arc::new(image);
        self.recent.borrow_mut().clear();
        let mut status = self.status.get();
        status.applied = index;
        self.status.set(status);
        self.image_changed.notify();
    }
}

/// The driver: the only task touching the Raft node.
async fn drive(
    quorum: Rc<Quorum>,
    mut node: RawNode<QuorumStorage>,
    disk: QuorumDisk,
    transport: Transport,
    input: flume::Receiver<Input>,
) {
    let mut proposals: HashMap<u64, oneshot::Sender<Result<u64, QuorumError>>> = HashMap::new();
    // Proposal ids start at random, so an entry proposed by an earlier process of this node (or
    // an earlier leader) never completes a proposal of this one.
    let mut next_proposal: u64 = rand::random();
    if quorum.voters.len() == 1 {
        // Alone: no one to wait for.
        let _ = node.campaign();
    }
    let mut next_tick = std::time::Instant::now() + TICK;
    let mut next_reserve_check = std::time::Instant::now() + RESERVE_CHECK;
    loop {
        if std::time::Instant::now() >= next_reserve_check {
            // Spent on a full disk: set aside again once there is room.
            disk.restore_reserve().await;
            next_reserve_check = std::time::Instant::now() + RESERVE_CHECK;
        }
        let wait = next_tick.saturating_duration_since(std::time::Instant::now());
        match io::timeout(wait, input.recv_async()).await {
            Some(Ok(Input::Message(message))) => {
                let _ = node.step(message);
            }
            Some(Ok(Input::Propose { records, reply })) => {
                if node.raft.state != StateRole::Leader {
                    let _ = reply.send(Err(QuorumError::NotLeader(leader_of(&node))));
                } else {
                    let id = next_proposal;
                    next_proposal = next_proposal.wrapping_add(1);
                    let data = serde_json::to_vec(&records).expect("metadata records serialize");
                    match node.propose(id.to_be_bytes().to_vec(), data) {
                        Ok(()) => {
                            proposals.insert(id, reply);
                        }
                        Err(err) => {
                            let _ = reply.send(Err(QuorumError::Storage(err.to_string())));
                        }
                    }
                }
            }
            Some(Err(_)) => return,
            None => {}
        }
        if std::time::Instant::now() >= next_tick {
            node.tick();
            next_tick += TICK;
            if next_tick < std::time::Instant::now() {
                next_tick = std::time::Instant::now() + TICK;
            }
        }
        while node.has_ready() {
            if let Err(err) = handle_ready(&quorum, &mut node, &disk, &transport, &mut proposals).await {
                tracing::error!(error = %err, "metadata quorum storage failed; this node stops taking part");
                return;
            }
        }
        update_status(&quorum, &node, &mut proposals);
        if disk.entry_count() > SNAPSHOT_AFTER_ENTRIES {
            let image = quorum.image();
            let data = serde_json::to_vec(&image.to_records()).expect("metadata records serialize");
            if let Err(err) = disk.compact(image.applied_index, data).await {
                tracing::warn!(error = %err, "could not snapshot the metadata log");
            } else {
                quorum.recent.borrow_mut().retain(|(i, _)| *i > image.applied_index);
            }
        }
    }
}

/// A node's Raft id: its node id plus one (Raft keeps 0 for "none"; Kafka's node ids start at 0).
fn raft_id(node: BrokerId) -> u64 {
    node as u64 + 1
}

/// The node a Raft id names (the inverse of [`raft_id`]).
fn node_of(raft: u64) -> BrokerId {
    (raft - 1) as BrokerId
}

fn leader_of(node: &RawNode<QuorumStorage>) -> Option<BrokerId> {
    match node.raft.leader_id {
        raft::INVALID_ID => None,
        id => Some(node_of(id)),
    }
}

fn update_status(
    quorum: &Quorum,
    node: &RawNode<QuorumStorage>,
    proposals: &mut HashMap<u64, oneshot::Sender<Result<u64, QuorumError>>>,
) {
    let was = quorum.status();
    let is_leader = node.raft.state == StateRole::Leader;
    let leader_since = match (is_leader, was.is_leader && was.term == node.raft.term) {
        (true, true) => was.leader_since,
        // A new leader appended an empty entry of its term: it is the last one it holds.
        (true, false) => node.raft.raft_log.last_index(),
        (false, _) => 0,
    };
    let status =
        QuorumStatus { leader: leader_of(node), is_leader, term: node.raft.term, applied: was.applied, leader_since };
    if status.leader != was.leader || status.is_leader != was.is_leader {
        tracing::info!(leader = ?status.leader, term = status.term, this_node = quorum.node_id, "metadata quorum leader changed");
    }
    if was.is_leader && !is_leader {
        // Proposals of a former leader may never commit: tell their callers to retry elsewhere.
        for (_, reply) in proposals.drain() {
            let _ = reply.send(Err(QuorumError::NotLeader(status.leader)));
        }
    }
    quorum.status.set(status);
    let mut matched = quorum.matched.borrow_mut();
    matched.clear();
    if is_leader {
        matched.extend(node.raft.prs().iter().map(|(id, progress)| (node_of(*id), progress.matched)));
    }
}

async fn handle_ready(
    quorum: &Quorum,
    node: &mut RawNode<QuorumStorage>,
    disk: &QuorumDisk,
    transport: &Transport,
    proposals: &mut HashMap<u64, oneshot::Sender<Result<u64, QuorumError>>>,
) -> std::io::Result<()> {
    let mut ready = node.ready();
    transport.send(ready.take_messages());
    if !ready.snapshot().is_empty() {
        let snapshot = ready.snapshot().clone();
        let index = snapshot.get_metadata().index;
        let image = snapshot_image(snapshot.get_data(), index).map_err(std::io::Error::other)?;
        disk.apply_snapshot(snapshot).await?;
        quorum.install_snapshot_image(image);
    }
    apply_committed(quorum, ready.take_committed_entries(), proposals);
    disk.append(ready.entries()).await?;
    if let Some(hard_state) = ready.hs() {
        disk.set_hard_state(hard_state.clone()).await?;
    }
    transport.send(ready.take_persisted_messages());
    let mut light = node.advance(ready);
    if let Some(commit) = light.commit_index() {
        disk.set_commit(commit);
    }
    transport.send(light.take_messages());
    apply_committed(quorum, light.take_committed_entries(), proposals);
    node.advance_apply();
    Ok(())
}

fn apply_committed(
    quorum: &Quorum,
    entries: Vec<Entry>,
    proposals: &mut HashMap<u64, oneshot::Sender<Result<u64, QuorumError>>>,
) {
    for entry in entries {
        if entry.index <= quorum.status().applied {
            continue;
        }
        quorum.apply(&entry);
        if let Ok(id) = <[u8; 8]>::try_from(entry.context.as_ref())
            && let Some(reply) = proposals.remove(&u64::from_be_bytes(id))
        {
            let _ = reply.send(Ok(entry.index));
        }
    }
}
