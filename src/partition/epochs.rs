//! The leader-epoch cache (KIP-101): for every leader epoch of a partition, the first offset
//! written in it. It answers OffsetForLeaderEpoch (where did epoch E end?), gives ListOffsets the
//! epoch of an offset, and lets a follower find where its log diverges from a new leader's.
//!
//! It is saved as `leader-epoch-checkpoint` in the partition directory, in Kafka's text format
//! (`0`, the entry count, then one `epoch start_offset` line per entry), atomically and durably
//! on every change (changes are rare: one per leadership change).
//!
//! Ownership: one per partition, owned by the partition's shard.

use std::path::{Path, PathBuf};

use crate::io::{self, Faults};

/// File holding the checkpoint.
const CHECKPOINT_FILE: &str = "leader-epoch-checkpoint";
/// Version line of the checkpoint format.
const CHECKPOINT_VERSION: &str = "0";

/// One epoch and the first offset written in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochEntry {
    /// Leader epoch.
    pub epoch: i32,
    /// First offset of the epoch.
    pub start_offset: i64,
}

/// The epochs of one partition, oldest first; epochs and start offsets both strictly increase.
#[derive(Debug, Clone)]
pub struct LeaderEpochCache {
    entries: Vec<EpochEntry>,
    path: PathBuf,
}

fn parse(text: &str) -> Option<Vec<EpochEntry>> {
    let mut lines = text.lines();
    if lines.next()?.trim() != CHECKPOINT_VERSION {
        return None;
    }
    let count: usize = lines.next()?.trim().parse().ok()?;
    let mut entries = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let mut fields = lines.next()?.split_whitespace();
        let epoch = fields.next()?.parse().ok()?;
        let start_offset = fields.next()?.parse().ok()?;
        entries.push(EpochEntry { epoch, start_offset });
    }
    let ordered = entries.windows(2).all(|w| w[0].epoch < w[1].epoch && w[0].start_offset <= w[1].start_offset);
    ordered.then_some(entries)
}

impl LeaderEpochCache {
    /// Loads the checkpoint of the partition in `dir` (`None` when there is none or it is
    /// damaged: the caller rebuilds it from the log).
    pub async fn load(dir: &Path, faults: &Faults) -> std::io::Result<Option<Self>> {
        let path = dir.join(CHECKPOINT_FILE);
        let Some(bytes) = io::fs::read(&path, faults).await? else { return Ok(None) };
        let parsed = std::str::from_utf8(&bytes).ok().and_then(parse);
        if parsed.is_none() {
            tracing::warn!(path = %path.display(), "leader epoch checkpoint is damaged; rebuilding it");
        }
        Ok(parsed.map(|entries| Self { entries, path }))
    }

    /// An empty cache for the partition in `dir`.
    pub fn empty(dir: &Path) -> Self {
        Self { entries: Vec::new(), path: dir.join(CHECKPOINT_FILE) }
    }

    /// Saves the cache, atomically and durably.
    pub async fn save(&self, faults: &Faults) -> std::io::Result<()> {
        io::fs::write_atomic(&self.path, self.to_text().into_bytes(), faults).await
    }

    fn to_text(&self) -> String {
        let mut text = format!("{CHECKPOINT_VERSION}\n{}\n", self.entries.len());
        for entry in &self.entries {
            text.push_str(&format!("{} {}\n", entry.epoch, entry.start_offset));
        }
        text
    }

    /// The entries, oldest first.
    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    /// The newest epoch, if any.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|e| e.epoch)
    }

    /// Records that `epoch` starts at `start_offset`, when it is newer than every epoch known.
    /// Returns whether the cache changed (and so must be saved).
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> bool {
        match self.entries.last() {
            Some(last) if epoch <= last.epoch => false,
            Some(last) if start_offset < last.start_offset => {
                // A newer epoch cannot start before an older one; this is a caller bug.
                tracing::error!(epoch, start_offset, last = ?last, "leader epoch would start before the previous one");
                false
            }
            _ => {
                // An older epoch that wrote nothing is superseded at the same offset.
                if self.entries.last().is_some_and(|last| last.start_offset == start_offset) {
                    self.entries.pop();
                }
                self.entries.push(EpochEntry { epoch, start_offset });
                true
            }
        }
    }

    /// The epoch that wrote `offset`, if known.
    pub fn epoch_for_offset(&self, offset: i64) -> Option<i32> {
        let at = self.entries.partition_point(|e| e.start_offset <= offset);
        at.checked_sub(1).map(|i| self.entries[i].epoch)
    }

    /// OffsetForLeaderEpoch, as Kafka answers it: for the newest epoch, itself and the log end;
    /// for an older one, the largest known epoch not above it and the start of the next epoch
    /// (where the asked epoch ended); for one older than everything known, itself and the start
    /// of the first epoch; for one newer than the newest (or -1), `(-1, -1)`.
    pub fn end_offset_for(&self, epoch: i32, log_end_offset: i64) -> (i32, i64) {
        if epoch < 0 {
            return (-1, -1);
        }
        if self.latest_epoch() == Some(epoch) {
            return (epoch, log_end_offset);
        }
        let higher = self.entries.partition_point(|e| e.epoch <= epoch);
        let Some(next) = self.entries.get(higher) else { return (-1, -1) };
        match higher.checked_sub(1) {
            Some(floor) => (self.entries[floor].epoch, next.start_offset),
            None => (epoch, next.start_offset),
        }
    }

    /// Forgets epochs that start at or after `offset` (the log was truncated there). Returns
    /// whether the cache changed.
    pub fn truncate_from_end(&mut self, offset: i64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| e.start_offset < offset);
        self.entries.len() != before
    }

    /// Drops epochs wholly below `offset` (the log start moved there), keeping the one that holds
    /// it, now starting at `offset`. Returns whether the cache changed.
    pub fn truncate_from_start(&mut self, offset: i64) -> bool {
        let at = self.entries.partition_point(|e| e.start_offset <= offset);
        let Some(keep_from) = at.checked_sub(1) else { return false };
        if keep_from == 0 && self.entries[0].start_offset == offset {
            return false;
        }
        self.entries.drain(..keep_from);
        self.entries[0].start_offset = offset;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache_of(entries: &[(i32, i64)]) -> LeaderEpochCache {
        cache(entries)
    }

    fn cache(entries: &[(i32, i64)]) -> LeaderEpochCache {
        let mut cache = LeaderEpochCache::empty(Path::new("/nonexistent"));
        for (epoch, start) in entries {
            assert!(cache.assign(*epoch, *start));
        }
        cache
    }

    #[test]
    fn epochs_answer_offset_for_leader_epoch_like_kafka() {
        let cache = cache(&[(0, 0), (2, 100), (5, 250)]);
        assert_eq!(cache.end_offset_for(0, 300), (0, 100));
        assert_eq!(cache.end_offset_for(1, 300), (0, 100), "an unknown epoch answers the one before it");
        assert_eq!(cache.end_offset_for(2, 300), (2, 250));
        assert_eq!(cache.end_offset_for(5, 300), (5, 300), "the newest epoch ends at the log end");
        assert_eq!(cache.end_offset_for(9, 300), (-1, -1), "a newer epoch than any is undefined");
        assert_eq!(cache.end_offset_for(-1, 300), (-1, -1));
        let later = cache_of(&[(3, 40), (5, 250)]);
        assert_eq!(later.end_offset_for(1, 300), (1, 40), "older than everything: the first start");
        assert_eq!(cache.epoch_for_offset(99), Some(0));
        assert_eq!(cache.epoch_for_offset(100), Some(2));
        assert_eq!(cache.epoch_for_offset(1_000), Some(5));
    }

    #[test]
    fn assign_truncate_and_the_text_format_round_trip() {
        let mut c = cache(&[(0, 0), (3, 10)]);
        assert!(!c.assign(3, 20), "the same epoch again changes nothing");
        assert!(!c.assign(2, 30), "an older epoch changes nothing");
        assert!(c.assign(4, 10), "an epoch that wrote nothing is superseded");
        assert_eq!(c.entries(), &[EpochEntry { epoch: 0, start_offset: 0 }, EpochEntry { epoch: 4, start_offset: 10 }]);
        assert_eq!(parse(&c.to_text()).unwrap(), c.entries());
        assert!(c.truncate_from_end(10));
        assert_eq!(c.latest_epoch(), Some(0));
        let mut d = cache(&[(0, 0), (1, 10), (2, 20)]);
        assert!(d.truncate_from_start(15));
        assert_eq!(
            d.entries(),
            &[EpochEntry { epoch: 1, start_offset: 15 }, EpochEntry { epoch: 2, start_offset: 20 }]
        );
        assert!(parse("0\n2\n1 5\n").is_none(), "a short file is refused");
        assert!(parse("0\n2\n3 5\n1 9\n").is_none(), "epochs out of order are refused");
    }
}
