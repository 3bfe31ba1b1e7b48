//! Control batches: batches whose single record is a marker written by the broker rather than a
//! producer (Kafka's transaction COMMIT and ABORT markers). Consumers skip them; the log, the
//! fetch path and the last stable offset must recognise them.
//!
//! A control record's key is `version: int16 (0) | type: int16` and, for transaction markers,
//! its value is `version: int16 (0) | coordinator epoch: int32`.

use bytes::Bytes;

use super::batch::{ATTR_CONTROL, ATTR_TRANSACTIONAL, BatchHeader};
use super::records::{BatchBuilder, BatchFields, for_each_control_record};

/// The kind of a control record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlType {
    /// The producer's transaction was aborted.
    Abort,
    /// The producer's transaction was committed.
    Commit,
}

impl ControlType {
    fn code(self) -> i16 {
        match self {
            Self::Abort => 0,
            Self::Commit => 1,
        }
    }

    fn from_code(code: i16) -> Option<Self> {
        match code {
            0 => Some(Self::Abort),
            1 => Some(Self::Commit),
            _ => None,
        }
    }
}

/// A transaction marker as stored in a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxnMarker {
    /// Commit or abort.
    pub kind: ControlType,
    /// Producer whose transaction ends.
    pub producer_id: i64,
    /// That producer's epoch.
    pub producer_epoch: i16,
    /// Epoch of the transaction coordinator that wrote the marker.
    pub coordinator_epoch: i32,
}

/// Encodes `marker` as a control batch (base offset 0, one record) stamped `timestamp_ms`.
pub fn encode_marker(marker: &TxnMarker, timestamp_ms: i64) -> Bytes {
    let mut key = [0u8; 4];
    key[2..4].copy_from_slice(&marker.kind.code().to_be_bytes());
    let mut value = [0u8; 6];
    value[2..6].copy_from_slice(&marker.coordinator_epoch.to_be_bytes());
    let mut builder = BatchBuilder::new(32, timestamp_ms);
    builder.push(Some(&key), &value, timestamp_ms);
    builder.finish_with(&BatchFields {
        attributes: ATTR_TRANSACTIONAL | ATTR_CONTROL,
        producer_id: marker.producer_id,
        producer_epoch: marker.producer_epoch,
        base_sequence: -1,
    })
}

/// Reads the marker of a control batch; `None` when `batch` is not a well-formed marker batch.
pub fn decode_marker(batch: &Bytes) -> Option<TxnMarker> {
    let header = BatchHeader::parse(batch).ok()?;
    if !header.is_control() {
        return None;
    }
    let mut found = None;
    for_each_control_record(batch, |key, value| {
        if found.is_some() || key.len() < 4 || i16::from_be_bytes([key[0], key[1]]) != 0 {
            return;
        }
        let Some(kind) = ControlType::from_code(i16::from_be_bytes([key[2], key[3]])) else { return };
        let coordinator_epoch = match value {
            Some(v) if v.len() >= 6 => i32::from_be_bytes([v[2], v[3], v[4], v[5]]),
            _ => -1,
        };
        found = Some(TxnMarker {
            kind,
            producer_id: header.producer_id,
            producer_epoch: header.producer_epoch,
            coordinator_epoch,
        });
    })
    .ok()?;
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::batch::validate;

    #[test]
    fn markers_round_trip_and_are_control_batches() {
        for kind in [ControlType::Commit, ControlType::Abort] {
            let marker = TxnMarker { kind, producer_id: 42, producer_epoch: 3, coordinator_epoch: 7 };
            let batch = encode_marker(&marker, 1_000);
            let header = validate(&batch).expect("a valid batch");
            assert!(header.is_control() && header.is_transactional());
            assert_eq!((header.producer_id, header.producer_epoch, header.records_count), (42, 3, 1));
            assert_eq!(decode_marker(&batch), Some(marker));
        }
    }

    #[test]
    fn data_batches_are_not_markers() {
        let mut builder = BatchBuilder::new(64, 0);
        builder.push(None, b"v", 0);
        assert_eq!(decode_marker(&builder.finish()), None);
    }
}
