//! The metadata quorum's Raft storage: the hard state, the latest snapshot (the metadata image as
//! records) and the entries after it, kept in memory for the Raft library and on disk in
//! `__cluster/raft/`, every file through `io::fs`.
//!
//! Files: `hardstate` and `snapshot` (protobuf, replaced atomically and durably), `entries`
//! (frames of `u32 length | u32 CRC-32C | protobuf Entry`, appended durably; rewritten whole when
//! Raft replaces an uncommitted tail or a snapshot compacts the log).
//!
//! Ownership: one per node, on the shard that runs the quorum (shard 0). The Raft library reads it
//! through [`QuorumStorage`]; the driver writes it between Raft's ready rounds.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};

use crate::io::{self, Faults};

/// Largest entry frame accepted when loading (a damaged length beyond it ends the log).
const MAX_ENTRY_BYTES: usize = 64 << 20;

#[derive(Default)]
struct Core {
    hard_state: HardState,
    conf_state: ConfState,
    snapshot: Snapshot,
    /// Entries after the snapshot's index, in order.
    entries: Vec<Entry>,
}

impl Core {
    fn first_index(&self) -> u64 {
        self.snapshot.get_metadata().index + 1
    }

    fn last_index(&self) -> u64 {
        self.entries.last().map_or(self.snapshot.get_metadata().index, |e| e.index)
    }
}

/// The storage the Raft library reads (a shared handle to the node's in-memory state).
#[derive(Clone, Default)]
pub struct QuorumStorage {
    core: Rc<RefCell<Core>>,
}

impl Storage for QuorumStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let core = self.core.borrow();
        Ok(RaftState { hard_state: core.hard_state.clone(), conf_state: core.conf_state.clone() })
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let core = self.core.borrow();
        if low < core.first_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > core.last_index() + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let offset = core.first_index();
        let mut entries = core.entries[(low - offset) as usize..(high - offset) as usize].to_vec();
        raft::util::limit_size(&mut entries, max_size.into());
        Ok(entries)
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        let core = self.core.borrow();
        let snapshot = core.snapshot.get_metadata();
        if index == snapshot.index {
            return Ok(snapshot.term);
        }
        if index < core.first_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if index > core.last_index() {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        Ok(core.entries[(index - core.first_index()) as usize].term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.core.borrow().first_index())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.core.borrow().last_index())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let core = self.core.borrow();
        if core.snapshot.get_metadata().index < request_index {
            return Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable));
        }
        Ok(core.snapshot.clone())
    }
}

/// A quorum's state as loaded from disk, before its node starts (plain data, so it can be loaded
/// on one thread and handed to the shard that runs the quorum).
pub struct LoadedDisk {
    dir: PathBuf,
    faults: Faults,
    core: Core,
}

impl LoadedDisk {
    /// The storage itself, on the shard that runs the quorum.
    pub fn into_disk(self) -> QuorumDisk {
        QuorumDisk {
            dir: self.dir,
            faults: self.faults,
            storage: QuorumStorage { core: Rc::new(RefCell::new(self.core)) },
        }
    }

    /// The voters this state names.
    pub fn voters(&self) -> Vec<u64> {
        self.core.conf_state.voters.clone()
    }

    /// The latest snapshot (its data is the image as records).
    pub fn snapshot(&self) -> &Snapshot {
        &self.core.snapshot
    }

    /// The hard state.
    pub fn hard_state(&self) -> &HardState {
        &self.core.hard_state
    }

    /// The entries held after the snapshot.
    pub fn entries(&self) -> &[Entry] {
        &self.core.entries
    }

    /// Takes every entry held as committed (true of a single voter: it commits what it wrote).
    pub fn commit_all_held(&mut self) {
        self.core.hard_state.commit = self.core.last_index();
    }
}

/// The on-disk half of the quorum's storage.
pub struct QuorumDisk {
    dir: PathBuf,
    faults: Faults,
    storage: QuorumStorage,
}

fn encode_entry(entry: &Entry, out: &mut Vec<u8>) {
    let bytes = entry.write_to_bytes().expect("raft entries encode");
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(&bytes).to_be_bytes());
    out.extend_from_slice(&bytes);
}

/// The entries in `bytes` up to the first damaged frame.
/// The intact entries at the start of `bytes`, each with the position just past it.
fn decode_entries(bytes: &[u8]) -> Vec<(Entry, usize)> {
    let mut entries = Vec::new();
    let mut at = 0;
    while at + 8 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_be_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes"));
        let end = at + 8 + len;
        if len > MAX_ENTRY_BYTES || end > bytes.len() || crc32c::crc32c(&bytes[at + 8..end]) != crc {
            break;
        }
        match Entry::parse_from_bytes(&bytes[at + 8..end]) {
            Ok(entry) => entries.push((entry, end)),
            Err(_) => break,
        }
        at = end;
    }
    entries
}

/// Room set aside for the quorum's own writes, released when the disk is full (a node whose
/// disk filled must still persist its term and vote to take part in elections).
const RESERVE_BYTES: usize = 16 << 20;
const RESERVE_FILE: &str = "reserve";

fn is_full(err: &std::io::Error) -> bool {
    err.raw_os_error() == Some(libc::ENOSPC)
}

fn io_error(what: &str, err: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!("{what}: {err}"))
}

impl QuorumDisk {
    /// Whether `data_dir` holds a quorum's state already.
    pub async fn exists(data_dir: &Path, faults: &Faults) -> std::io::Result<bool> {
        Ok(io::fs::read(&Self::dir_of(data_dir).join("snapshot"), faults).await?.is_some())
    }

    fn dir_of(data_dir: &Path) -> PathBuf {
        data_dir.join("__cluster").join("raft")
    }

    /// Loads the quorum's state from `data_dir/__cluster/raft`, or starts a new one whose voters
    /// are `voters` (the first start of a node), from `seed` (a snapshot's data at index 0: what
    /// an older single-node metadata log held) when given. The voters are written down at once.
    pub async fn open(
        data_dir: &Path,
        voters: &[u64],
        seed: Option<Vec<u8>>,
        faults: Faults,
    ) -> std::io::Result<LoadedDisk> {
        let dir = Self::dir_of(data_dir);
        io::fs::create_dir_all(&dir, &faults).await?;
        let mut core = Core::default();
        let mut created = false;
        match io::fs::read(&dir.join("snapshot"), &faults).await? {
            Some(bytes) => {
                core.snapshot = Snapshot::parse_from_bytes(&bytes).map_err(|e| io_error("raft snapshot", e))?;
                core.conf_state = core.snapshot.get_metadata().get_conf_state().clone();
            }
            None => {
                created = true;
                core.conf_state = ConfState::from((voters.to_vec(), Vec::new()));
                core.snapshot.mut_metadata().set_conf_state(core.conf_state.clone());
                if let Some(data) = seed {
                    core.snapshot.set_data(data.into());
                }
            }
        }
        if let Some(bytes) = io::fs::read(&dir.join("hardstate"), &faults).await? {
            core.hard_state = HardState::parse_from_bytes(&bytes).map_err(|e| io_error("raft hard state", e))?;
        }
        // Where the entries worth keeping end in the file: a torn tail, or entries after a gap,
        // are cut off (a truncation needs no free space, so a node starts on a full disk).
        let mut entries_file = None;
        if let Some(bytes) = io::fs::read(&dir.join("entries"), &faults).await? {
            let after = core.snapshot.get_metadata().index;
            let mut expected = after + 1;
            let mut keep = 0;
            for (entry, end) in decode_entries(&bytes) {
                if entry.index > after {
                    if entry.index != expected {
                        break;
                    }
                    expected += 1;
                    core.entries.push(entry);
                }
                keep = end;
            }
            entries_file = Some((bytes.len(), keep));
        }
        // The commit index never points past what this node holds.
        let last = core.last_index();
        if core.hard_state.commit > last {
            core.hard_state.commit = last;
        }
        let disk = Self { dir, faults, storage: QuorumStorage { core: Rc::new(RefCell::new(core)) } };
        if created {
            disk.save_snapshot().await?;
            io::fs::sync_dir(&disk.dir, &disk.faults).await?;
        }
        // A torn tail must never sit in front of later appends.
        match entries_file {
            Some((len, keep)) if keep < len => {
                let path = disk.dir.join("entries");
                io::fs::truncate(&path, keep as u64, &disk.faults).await?;
            }
            Some(_) => {}
            None => disk.rewrite_entries().await?,
        }
        let _ = disk.keep_reserve().await;
        let QuorumDisk { dir, faults, storage } = disk;
        let core = Rc::try_unwrap(storage.core).map_err(|_| io_error("raft storage", "still shared"))?.into_inner();
        Ok(LoadedDisk { dir, faults, core })
    }

    /// The handle the Raft library reads.
    pub fn storage(&self) -> QuorumStorage {
        self.storage.clone()
    }

    /// Appends `entries` (replacing any held from their first index on) and persists them.
    pub async fn append(&self, entries: &[Entry]) -> std::io::Result<()> {
        let Some(first) = entries.first() else { return Ok(()) };
        let replaced = {
            let mut core = self.storage.core.borrow_mut();
            let replaced = first.index <= core.last_index();
            let keep = core.entries.partition_point(|e| e.index < first.index);
            core.entries.truncate(keep);
            core.entries.extend_from_slice(entries);
            replaced
        };
        if replaced {
            return self.rewrite_entries().await;
        }
        let mut frames = Vec::new();
        for entry in entries {
            encode_entry(entry, &mut frames);
        }
        match io::fs::append_durable(&self.dir.join("entries"), frames, &self.faults).await {
            // A failed append may have left part of a frame: the whole file is written again
            // (from memory, which holds the new entries too) in the reserve's room.
            Err(err) if is_full(&err) && self.release_reserve().await => self.rewrite_entries().await,
            other => other,
        }
    }

    /// Takes a new hard state; it is persisted when its term or vote changed (Raft's safety
    /// needs those on disk before any message goes out; the commit index is learned again from
    /// the leader, so writing it on every commit would only cost a sync).
    pub async fn set_hard_state(&self, hard_state: HardState) -> std::io::Result<()> {
        let changed = {
            let mut core = self.storage.core.borrow_mut();
            let changed = (core.hard_state.term, core.hard_state.vote) != (hard_state.term, hard_state.vote);
            core.hard_state = hard_state.clone();
            changed
        };
        if !changed {
            return Ok(());
        }
        self.persist("hardstate", |core| core.hard_state.write_to_bytes().map_err(|e| io_error("raft hard state", e)))
            .await
    }

    /// Records the commit index Raft reported (persisted with the next hard state).
    pub fn set_commit(&self, commit: u64) {
        let mut core = self.storage.core.borrow_mut();
        if commit > core.hard_state.commit {
            core.hard_state.commit = commit;
        }
    }

    /// Installs a snapshot received from the leader: it replaces everything up to its index.
    pub async fn apply_snapshot(&self, snapshot: Snapshot) -> std::io::Result<()> {
        {
            let mut core = self.storage.core.borrow_mut();
            let meta = snapshot.get_metadata();
            let index = meta.index;
            core.entries.retain(|e| e.index > index);
            if core.entries.first().is_some_and(|e| e.index != index + 1) {
                core.entries.clear();
            }
            core.hard_state.commit = core.hard_state.commit.max(index);
            core.hard_state.term = core.hard_state.term.max(meta.term);
            core.conf_state = meta.get_conf_state().clone();
            core.snapshot = snapshot;
        }
        self.save_snapshot().await?;
        self.rewrite_entries().await
    }

    /// Makes `data` (the image as of `index`, which must be applied) the snapshot, and drops the
    /// entries it covers.
    pub async fn compact(&self, index: u64, data: Vec<u8>) -> std::io::Result<()> {
        {
            let mut core = self.storage.core.borrow_mut();
            if index <= core.snapshot.get_metadata().index || index > core.last_index() {
                return Ok(());
            }
            let term = core.entries.iter().find(|e| e.index == index).map_or(0, |e| e.term);
            let mut snapshot = Snapshot::default();
            snapshot.set_data(data.into());
            let meta = snapshot.mut_metadata();
            meta.index = index;
            meta.term = term;
            meta.set_conf_state(core.conf_state.clone());
            core.snapshot = snapshot;
            core.entries.retain(|e| e.index > index);
        }
        self.save_snapshot().await?;
        self.rewrite_entries().await
    }

    async fn save_snapshot(&self) -> std::io::Result<()> {
        self.persist("snapshot", |core| core.snapshot.write_to_bytes().map_err(|e| io_error("raft snapshot", e))).await
    }

    async fn rewrite_entries(&self) -> std::io::Result<()> {
        self.persist("entries", |core| {
            let mut frames = Vec::new();
            for entry in &core.entries {
                encode_entry(entry, &mut frames);
            }
            Ok(frames)
        })
        .await
    }

    /// Replaces the file `name` with `contents` of the state held in memory, written once more
    /// in the reserve's room when the disk is full (the contents are taken again then, rather
    /// than kept aside for a retry that seldom comes).
    async fn persist(&self, name: &str, contents: impl Fn(&Core) -> std::io::Result<Vec<u8>>) -> std::io::Result<()> {
        let path = self.dir.join(name);
        let write = async || {
            let bytes = contents(&self.storage.core.borrow())?;
            io::fs::write_atomic(&path, bytes, &self.faults).await
        };
        match write().await {
            Err(err) if is_full(&err) && self.release_reserve().await => write().await,
            other => other,
        }
    }

    /// Sets aside [`RESERVE_BYTES`] beside the quorum's files, if it is not there yet and there
    /// is room: what the quorum may still write once the disk is full. True when it is in place.
    async fn keep_reserve(&self) -> bool {
        let path = self.dir.join(RESERVE_FILE);
        if io::fs::read_len(&path, &self.faults).await.ok().flatten() == Some(RESERVE_BYTES as u64) {
            return true;
        }
        match io::fs::write(&path, vec![0; RESERVE_BYTES], &self.faults).await {
            Ok(()) => true,
            Err(err) => {
                tracing::debug!(error = %err, "no room for the metadata log's reserve");
                let _ = io::fs::remove_file(&path, &self.faults).await;
                false
            }
        }
    }

    /// Sets the reserve aside again after it was spent, once the disk has room for it and
    /// more (it must not take the last of the space back from the partitions).
    pub async fn restore_reserve(&self) {
        if io::fs::read_len(&self.dir.join(RESERVE_FILE), &self.faults).await.ok().flatten().is_some() {
            return;
        }
        if io::fs::space(&self.dir).is_ok_and(|(_, free)| free > 4 * RESERVE_BYTES as u64) && self.keep_reserve().await
        {
            tracing::info!("the metadata log's disk-full reserve is set aside again");
        }
    }

    /// Frees the reserve for the quorum's next write; false when there is none left.
    async fn release_reserve(&self) -> bool {
        let released = io::fs::remove_file(&self.dir.join(RESERVE_FILE), &self.faults).await.unwrap_or(false);
        if released {
            tracing::warn!("the disk is full: the metadata log writes into its reserve");
        }
        released
    }

    /// Entries held after the snapshot.
    pub fn entry_count(&self) -> usize {
        self.storage.core.borrow().entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64, data: &[u8]) -> Entry {
        let mut e = Entry { index, term, ..Default::default() };
        e.set_data(data.to_vec().into());
        e
    }

    #[test]
    fn entries_hard_state_and_snapshots_survive_a_reopen_and_tails_are_replaced() {
        let dir = tempfile::tempdir().unwrap();
        io::block_on(async {
            let disk = QuorumDisk::open(dir.path(), &[1, 2, 3], None, Faults::none()).await.unwrap();
            assert_eq!(disk.voters(), vec![1, 2, 3]);
            let disk = disk.into_disk();
            disk.append(&[entry(1, 1, b"a"), entry(2, 1, b"b"), entry(3, 1, b"c")]).await.unwrap();
            // A new leader replaces the uncommitted tail from index 3 on.
            disk.append(&[entry(3, 2, b"C"), entry(4, 2, b"d")]).await.unwrap();
            let hs = HardState { term: 2, vote: 2, commit: 4, ..Default::default() };
            disk.set_hard_state(hs).await.unwrap();
            let reopened = QuorumDisk::open(dir.path(), &[9], None, Faults::none()).await.unwrap();
            assert_eq!(reopened.voters(), vec![1, 2, 3], "the stored configuration wins");
            assert_eq!(reopened.hard_state().commit, 4);
            assert_eq!(reopened.entries()[2].data.as_ref(), b"C");
            let reopened = reopened.into_disk();
            let storage = reopened.storage();
            assert_eq!((storage.first_index().unwrap(), storage.last_index().unwrap()), (1, 4));
            assert_eq!(storage.term(3).unwrap(), 2);
            reopened.compact(3, b"image".to_vec()).await.unwrap();
            let again = QuorumDisk::open(dir.path(), &[9], None, Faults::none()).await.unwrap();
            assert_eq!(again.snapshot().get_data(), b"image");
            let again = again.into_disk();
            let storage = again.storage();
            assert_eq!((storage.first_index().unwrap(), storage.last_index().unwrap()), (4, 4));
            assert_eq!(storage.term(3).unwrap(), 2, "the snapshot keeps the term of its index");
            assert!(storage.entries(2, 4, None, GetEntriesContext::empty(false)).is_err(), "compacted");
        });
    }
}
