//! Sparse per-segment indexes: offset → file position, and timestamp → offset.
//!
//! Entries are added every `index.interval.bytes` of appended data. They live in memory while a
//! segment is written and are saved next to the segment (`.index`, `.timeindex`, Kafka's entry
//! layout: 8 and 12 big-endian bytes) when it is sealed or the log is closed. Index files are
//! derived data: they are checked when loaded and rebuilt from the segment when they do not fit.

use zerocopy::byteorder::big_endian::{I64, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy)]
#[repr(C)]
struct RawOffsetEntry {
    relative_offset: U32,
    position: U32,
}

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy)]
#[repr(C)]
struct RawTimeEntry {
    timestamp: I64,
    relative_offset: U32,
}

/// One offset index entry: the batch whose base offset is `base + relative_offset` starts at
/// byte `position` of the segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OffsetEntry {
    /// Batch base offset minus the segment's base offset.
    pub relative_offset: u32,
    /// Byte position of the batch in the segment file.
    pub position: u32,
}

/// Offset → position, sparse, strictly increasing in both fields.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OffsetIndex {
    entries: Vec<OffsetEntry>,
}

impl OffsetIndex {
    /// Adds an entry; offsets and positions must increase.
    pub fn push(&mut self, relative_offset: u32, position: u32) {
        if let Some(last) = self.entries.last() {
            assert!(
                relative_offset > last.relative_offset && position > last.position,
                "offset index must increase: {last:?} then ({relative_offset}, {position})"
            );
        }
        self.entries.push(OffsetEntry { relative_offset, position });
    }

    /// The entry with the largest relative offset `<= relative_offset`, if any.
    pub fn lookup(&self, relative_offset: u32) -> Option<OffsetEntry> {
        let idx = self.entries.partition_point(|e| e.relative_offset <= relative_offset);
        idx.checked_sub(1).map(|i| self.entries[i])
    }

    /// The last entry.
    pub fn last(&self) -> Option<OffsetEntry> {
        self.entries.last().copied()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Drops entries at or past byte `position`.
    pub fn truncate_to_position(&mut self, position: u32) {
        let keep = self.entries.partition_point(|e| e.position < position);
        self.entries.truncate(keep);
    }

    /// Serialized in Kafka's `.index` layout.
    pub fn to_bytes(&self) -> Vec<u8> {
        let raw: Vec<RawOffsetEntry> = self
            .entries
            .iter()
            .map(|e| RawOffsetEntry { relative_offset: U32::new(e.relative_offset), position: U32::new(e.position) })
            .collect();
        raw.as_slice().as_bytes().to_vec()
    }

    /// Parses a `.index` file, refusing anything that is not strictly increasing or that points
    /// past `segment_bytes`.
    pub fn from_bytes(bytes: &[u8], segment_bytes: u64) -> Option<Self> {
        let raw = <[RawOffsetEntry]>::ref_from_bytes(bytes).ok()?;
        let mut index = Self::default();
        for entry in raw {
            let (relative_offset, position) = (entry.relative_offset.get(), entry.position.get());
            if u64::from(position) >= segment_bytes {
                return None;
            }
            if let Some(last) = index.entries.last()
                && (relative_offset <= last.relative_offset || position <= last.position)
            {
                return None;
            }
            index.entries.push(OffsetEntry { relative_offset, position });
        }
        Some(index)
    }
}

/// One time index entry: up to and including the batch at `base + relative_offset`, the largest
/// timestamp in the segment is `timestamp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeEntry {
    /// Largest timestamp so far.
    pub timestamp: i64,
    /// Base offset (relative) of the batch that carried it.
    pub relative_offset: u32,
}

/// Timestamp → offset, sparse, strictly increasing timestamps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TimeIndex {
    entries: Vec<TimeEntry>,
}

impl TimeIndex {
    /// Adds an entry if it raises the maximum timestamp.
    pub fn maybe_push(&mut self, timestamp: i64, relative_offset: u32) {
        match self.entries.last() {
            Some(last) if timestamp <= last.timestamp => {}
            Some(last) if relative_offset < last.relative_offset => {}
            _ => self.entries.push(TimeEntry { timestamp, relative_offset }),
        }
    }

    /// The last entry with a timestamp strictly below `timestamp`: scanning from its batch finds
    /// the first batch whose max timestamp reaches `timestamp`.
    pub fn lookup_before(&self, timestamp: i64) -> Option<TimeEntry> {
        let idx = self.entries.partition_point(|e| e.timestamp < timestamp);
        idx.checked_sub(1).map(|i| self.entries[i])
    }

    /// The last entry (the segment's largest timestamp when the index is complete).
    pub fn last(&self) -> Option<TimeEntry> {
        self.entries.last().copied()
    }

    /// Drops entries at or past `relative_offset`.
    pub fn truncate_to_offset(&mut self, relative_offset: u32) {
        let keep = self.entries.partition_point(|e| e.relative_offset < relative_offset);
        self.entries.truncate(keep);
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Serialized in Kafka's `.timeindex` layout.
    pub fn to_bytes(&self) -> Vec<u8> {
        let raw: Vec<RawTimeEntry> = self
            .entries
            .iter()
            .map(|e| RawTimeEntry { timestamp: I64::new(e.timestamp), relative_offset: U32::new(e.relative_offset) })
            .collect();
        raw.as_slice().as_bytes().to_vec()
    }

    /// Parses a `.timeindex` file, refusing entries that do not increase or that name offsets
    /// past `max_relative_offset`.
    pub fn from_bytes(bytes: &[u8], max_relative_offset: u32) -> Option<Self> {
        let raw = <[RawTimeEntry]>::ref_from_bytes(bytes).ok()?;
        let mut index = Self::default();
        for entry in raw {
            let (timestamp, relative_offset) = (entry.timestamp.get(), entry.relative_offset.get());
            if relative_offset > max_relative_offset {
                return None;
            }
            if let Some(last) = index.entries.last()
                && (timestamp <= last.timestamp || relative_offset < last.relative_offset)
            {
                return None;
            }
            index.entries.push(TimeEntry { timestamp, relative_offset });
        }
        Some(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn offset_lookup_finds_floor_entry() {
        let mut index = OffsetIndex::default();
        index.push(0, 0);
        index.push(10, 4096);
        index.push(25, 9000);
        assert_eq!(index.lookup(0).map(|e| e.position), Some(0));
        assert_eq!(index.lookup(9).map(|e| e.position), Some(0));
        assert_eq!(index.lookup(10).map(|e| e.position), Some(4096));
        assert_eq!(index.lookup(1000).map(|e| e.position), Some(9000));
        index.truncate_to_position(4096);
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn time_lookup_finds_last_entry_below() {
        let mut index = TimeIndex::default();
        index.maybe_push(100, 0);
        index.maybe_push(90, 3); // not a new maximum: ignored
        index.maybe_push(200, 5);
        assert_eq!(index.len(), 2);
        assert_eq!(index.lookup_before(100), None);
        assert_eq!(index.lookup_before(101).map(|e| e.relative_offset), Some(0));
        assert_eq!(index.lookup_before(1000).map(|e| e.relative_offset), Some(5));
    }

    #[test]
    fn damaged_index_files_are_refused() {
        let mut index = OffsetIndex::default();
        index.push(0, 0);
        index.push(5, 100);
        let mut bytes = index.to_bytes();
        assert_eq!(OffsetIndex::from_bytes(&bytes, 1000), Some(index.clone()));
        assert_eq!(OffsetIndex::from_bytes(&bytes, 50), None, "position past the segment");
        bytes.pop();
        assert_eq!(OffsetIndex::from_bytes(&bytes, 1000), None, "torn entry");
        let mut swapped = index.to_bytes();
        swapped.rotate_left(8);
        assert_eq!(OffsetIndex::from_bytes(&swapped, 1000), None, "not increasing");
    }

    proptest! {
        #[test]
        fn offset_index_round_trips(steps in proptest::collection::vec((1u32..100, 1u32..10_000), 0..200)) {
            let mut index = OffsetIndex::default();
            let (mut offset, mut position) = (0u32, 0u32);
            for (d_off, d_pos) in steps {
                index.push(offset, position);
                offset += d_off;
                position += d_pos;
            }
            let parsed = OffsetIndex::from_bytes(&index.to_bytes(), u64::from(position) + 1);
            prop_assert_eq!(parsed, Some(index));
        }
    }
}
