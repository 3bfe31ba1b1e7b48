//! The metadata log: an append-only file of framed, checksummed metadata records, fsync'd on
//! every change and replayed at start (KRaft style, with this broker as the single voter until a
//! Raft library replicates it).
//!
//! Frame: u32 length (big-endian) | u32 CRC-32C of the payload | JSON payload.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::metadata::MetadataRecord;

/// Largest record accepted when replaying (a damaged length beyond it ends the log).
const MAX_RECORD_BYTES: usize = 64 << 20;

/// Location of the metadata log of a data directory.
#[derive(Clone, Debug)]
pub struct MetadataLog {
    path: PathBuf,
}

fn encode(record: &MetadataRecord) -> Vec<u8> {
    let payload = serde_json::to_vec(record).expect("metadata records serialize");
    let mut frame = Vec::with_capacity(payload.len() + 8);
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(&crc32c::crc32c(&payload).to_be_bytes());
    frame.extend_from_slice(&payload);
    frame
}

fn sync_parent(path: &Path) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

impl MetadataLog {
    /// The metadata log under `data_dir`.
    pub fn new(data_dir: &Path) -> Self {
        Self { path: data_dir.join("__cluster").join("metadata.log") }
    }

    /// Reads every intact record; a torn or corrupt tail is reported and ignored (it was never
    /// acknowledged: appends are fsync'd before the change is answered).
    pub fn replay(&self) -> std::io::Result<Vec<MetadataRecord>> {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(err),
        };
        let mut records = Vec::new();
        let mut at = 0;
        while at + 8 <= bytes.len() {
            let len = u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
            let crc = u32::from_be_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes"));
            let end = at + 8 + len;
            if len > MAX_RECORD_BYTES || end > bytes.len() || crc32c::crc32c(&bytes[at + 8..end]) != crc {
                break;
            }
            match serde_json::from_slice(&bytes[at + 8..end]) {
                Ok(record) => records.push(record),
                Err(_) => break,
            }
            at = end;
        }
        if at < bytes.len() {
            tracing::warn!(
                path = %self.path.display(),
                ignored_bytes = bytes.len() - at,
                "metadata log ends in a torn or corrupt record; ignoring it"
            );
        }
        Ok(records)
    }

    /// Appends a record and fsyncs it.
    pub fn append(&self, record: &MetadataRecord) -> std::io::Result<()> {
        let frame = encode(record);
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&self.path)?;
        file.write_all(&frame)?;
        file.sync_data()
    }

    /// Replaces the log with `records` (a compacted snapshot), atomically.
    pub fn rewrite(&self, records: &[MetadataRecord]) -> std::io::Result<()> {
        if let Some(parent) = self.path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let tmp = self.path.with_extension("log.tmp");
        let mut file = std::fs::File::create(&tmp)?;
        for record in records {
            file.write_all(&encode(record))?;
        }
        file.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        sync_parent(&self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn replays_intact_records_and_ignores_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let log = MetadataLog::new(dir.path());
        log.rewrite(&[MetadataRecord::ClusterCreated { cluster_id: "c".into() }]).unwrap();
        let topic = MetadataRecord::TopicCreated {
            name: "t".into(),
            id: uuid::Uuid::new_v4(),
            shards: vec![0, 1],
            configs: BTreeMap::new(),
            internal: false,
        };
        log.append(&topic).unwrap();
        assert_eq!(log.replay().unwrap().len(), 2);
        let path = dir.path().join("__cluster/metadata.log");
        let len = std::fs::metadata(&path).unwrap().len();
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(len - 3).unwrap();
        assert_eq!(log.replay().unwrap(), vec![MetadataRecord::ClusterCreated { cluster_id: "c".into() }]);
    }
}
