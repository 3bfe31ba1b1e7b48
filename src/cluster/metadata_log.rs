//! The metadata log of Moldau before the metadata quorum (a single broker's framed, checksummed
//! records in `__cluster/metadata.log`): read once, at the first start of a newer broker, to seed
//! the quorum's first snapshot, then set aside.
//!
//! Frame: u32 length (big-endian) | u32 CRC-32C of the payload | JSON payload. A payload in the
//! first format of this log (`LegacyRecord`) is upgraded as it is read.
//!
//! Every file operation goes through `io::fs`, so fault injection reaches it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::records::{LegacyRecord, MetadataRecord};
use crate::io::{self, Faults};
use crate::model::BrokerId;

/// Largest record accepted when replaying (a damaged length beyond it ends the log).
const MAX_RECORD_BYTES: usize = 64 << 20;

/// The metadata log of a data directory.
#[derive(Clone, Debug)]
pub struct MetadataLog {
    path: PathBuf,
    faults: Faults,
}

/// What replaying the log found.
#[derive(Debug, Default)]
pub struct Replayed {
    /// Every intact record, in order (legacy ones upgraded).
    pub records: Vec<MetadataRecord>,
    /// Frames that were in the legacy format.
    pub legacy_frames: usize,
    /// Bytes of a torn or corrupt tail that were ignored.
    pub ignored_bytes: usize,
}

#[cfg(test)]
fn encode(record: &MetadataRecord, out: &mut Vec<u8>) {
    let payload = serde_json::to_vec(record).expect("metadata records serialize");
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(&payload).to_be_bytes());
    out.extend_from_slice(&payload);
}

/// Parses frames until the first damaged one; `broker` owns the partitions of legacy records.
fn parse(bytes: &[u8], broker: BrokerId) -> Replayed {
    let mut replayed = Replayed::default();
    let mut partitions = BTreeMap::new();
    let mut at = 0;
    while at + 8 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_be_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes"));
        let end = at + 8 + len;
        if len > MAX_RECORD_BYTES || end > bytes.len() || crc32c::crc32c(&bytes[at + 8..end]) != crc {
            break;
        }
        let payload = &bytes[at + 8..end];
        if let Ok(record) = serde_json::from_slice::<MetadataRecord>(payload) {
            replayed.records.push(record);
        } else if let Ok(legacy) = serde_json::from_slice::<LegacyRecord>(payload) {
            replayed.legacy_frames += 1;
            replayed.records.extend(legacy.upgrade(broker, &mut partitions));
        } else {
            break;
        }
        at = end;
    }
    replayed.ignored_bytes = bytes.len() - at;
    replayed
}

impl MetadataLog {
    /// The metadata log under `data_dir`.
    pub fn new(data_dir: &Path, faults: Faults) -> Self {
        Self { path: data_dir.join("__cluster").join("metadata.log"), faults }
    }

    /// Whether there is such a log.
    pub async fn exists(&self) -> std::io::Result<bool> {
        Ok(io::fs::read(&self.path, &self.faults).await?.is_some())
    }

    /// Reads every intact record (a torn or corrupt tail was never acknowledged: appends were
    /// synced before a change was answered).
    pub async fn replay(&self, broker: BrokerId) -> std::io::Result<Replayed> {
        let Some(bytes) = io::fs::read(&self.path, &self.faults).await? else {
            return Ok(Replayed::default());
        };
        let replayed = parse(&bytes, broker);
        if replayed.ignored_bytes > 0 {
            tracing::warn!(
                path = %self.path.display(),
                ignored_bytes = replayed.ignored_bytes,
                "old metadata log ends in a torn or corrupt record; ignoring it"
            );
        }
        Ok(replayed)
    }

    /// Sets the log aside once the quorum holds what it had (renamed, kept for inspection).
    pub async fn retire(&self) -> std::io::Result<()> {
        io::fs::rename(&self.path, &self.path.with_extension("log.pre-quorum"), &self.faults).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_logs_replay_their_intact_records_and_upgrade_legacy_frames() {
        let dir = tempfile::tempdir().unwrap();
        let log = MetadataLog::new(dir.path(), Faults::none());
        io::block_on(async {
            let id = uuid::Uuid::new_v4();
            let path = dir.path().join("__cluster/metadata.log");
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let mut frames = Vec::new();
            encode(&MetadataRecord::ClusterId { cluster_id: "c".into() }, &mut frames);
            encode(&MetadataRecord::Topic { name: "t".into(), id, internal: false }, &mut frames);
            std::fs::write(&path, &frames).unwrap();
            assert_eq!(log.replay(0).await.unwrap().records.len(), 2);
            std::fs::write(&path, &frames[..frames.len() - 3]).unwrap();
            let replayed = log.replay(0).await.unwrap();
            assert_eq!(replayed.records, vec![MetadataRecord::ClusterId { cluster_id: "c".into() }]);
            // A log in the first format: a topic of two partitions placed on shards.
            let legacy = format!(
                r#"{{"TopicCreated":{{"name":"old","id":"{id}","shards":[0,1],"configs":{{"retention.ms":"9"}},"internal":false}}}}"#
            );
            let mut bytes = Vec::new();
            bytes.extend_from_slice(&(legacy.len() as u32).to_be_bytes());
            bytes.extend_from_slice(&crc32c::crc32c(legacy.as_bytes()).to_be_bytes());
            bytes.extend_from_slice(legacy.as_bytes());
            std::fs::write(&path, bytes).unwrap();
            let replayed = log.replay(7).await.unwrap();
            assert_eq!(replayed.legacy_frames, 1);
            let image = super::super::MetadataImage::empty().apply_all(&replayed.records);
            let topic = image.topic("old").unwrap();
            assert_eq!(topic.partitions.len(), 2);
            assert_eq!((topic.partitions[1].leader, topic.partitions[1].replicas.clone()), (7, vec![7]));
            assert_eq!(topic.configs["retention.ms"], "9");
        });
    }
}
