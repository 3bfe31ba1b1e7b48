//! The shard's read cache of recently appended batches.
//!
//! O_DIRECT bypasses the page cache, and most consumers read the tail, so every appended batch is
//! kept here (as the `Bytes` it arrived in, stamped) until the shard's byte budget pushes it out,
//! oldest first across all of the shard's partitions. A batch is never evicted before its bytes
//! have been written to the segment file: until then the cache is the only place it can be read
//! from, so the budget may be exceeded by at most the unwritten data (itself bounded by the
//! write-behind limit of each log).
//!
//! Ownership: one `ReadCache` per shard, shared by that shard's logs through
//! `Rc<RefCell<ReadCache>>`; it never crosses threads. The `Bytes` it returns do, read-only.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;

/// Identifies one partition log within a shard's cache.
pub type CacheKey = u64;

#[derive(Debug)]
struct CachedBatch {
    base_offset: i64,
    last_offset: i64,
    bytes: Bytes,
}

#[derive(Debug, Default)]
struct PartitionEntries {
    batches: VecDeque<CachedBatch>,
    /// Offsets below this are written to the segment file and may be evicted.
    written_offset: i64,
}

/// Counters for the cache, exposed through shard metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Bytes currently held.
    pub used_bytes: u64,
    /// Reads answered from the cache.
    pub hits: u64,
    /// Reads that had to go to disk.
    pub misses: u64,
    /// Batches evicted.
    pub evictions: u64,
}

/// A bounded, shard-wide cache of the newest batches of every partition.
#[derive(Debug)]
pub struct ReadCache {
    capacity_bytes: u64,
    used_bytes: u64,
    /// Global insertion order, for oldest-first eviction across partitions.
    order: VecDeque<(CacheKey, i64)>,
    partitions: HashMap<CacheKey, PartitionEntries>,
    next_key: CacheKey,
    stats: CacheStats,
}

impl ReadCache {
    /// A cache holding at most `capacity_bytes` of written batches.
    pub fn new(capacity_bytes: u64) -> Self {
        Self {
            capacity_bytes,
            used_bytes: 0,
            order: VecDeque::new(),
            partitions: HashMap::new(),
            next_key: 1,
            stats: CacheStats::default(),
        }
    }

    /// Registers a partition and returns its key.
    pub fn register(&mut self) -> CacheKey {
        let key = self.next_key;
        self.next_key += 1;
        self.partitions.insert(key, PartitionEntries::default());
        key
    }

    /// Forgets a partition (log closed or deleted).
    pub fn unregister(&mut self, key: CacheKey) {
        if let Some(entries) = self.partitions.remove(&key) {
            let freed: u64 = entries.batches.iter().map(|b| b.bytes.len() as u64).sum();
            self.used_bytes -= freed;
        }
    }

    /// Adds a freshly appended batch (offsets must follow the partition's previous batch).
    pub fn insert(&mut self, key: CacheKey, base_offset: i64, last_offset: i64, bytes: Bytes) {
        let Some(entries) = self.partitions.get_mut(&key) else {
            return;
        };
        if let Some(prev) = entries.batches.back() {
            assert!(
                base_offset > prev.last_offset,
                "cache offsets must increase: {} after {}",
                base_offset,
                prev.last_offset
            );
        }
        self.used_bytes += bytes.len() as u64;
        entries.batches.push_back(CachedBatch { base_offset, last_offset, bytes });
        self.order.push_back((key, base_offset));
        self.evict();
    }

    /// Records that offsets below `offset` of a partition are on disk and so evictable.
    pub fn set_written(&mut self, key: CacheKey, offset: i64) {
        if let Some(entries) = self.partitions.get_mut(&key) {
            entries.written_offset = entries.written_offset.max(offset);
        }
        self.evict();
    }

    /// Drops a partition's batches whose last offset is at or past `offset` (log truncation).
    pub fn truncate(&mut self, key: CacheKey, offset: i64) {
        if let Some(entries) = self.partitions.get_mut(&key) {
            while entries.batches.back().is_some_and(|b| b.last_offset >= offset) {
                let batch = entries.batches.pop_back().expect("checked");
                self.used_bytes -= batch.bytes.len() as u64;
            }
            entries.written_offset = entries.written_offset.min(offset);
        }
    }

    /// Drops a partition's batches that end below `offset` (log start moved by retention).
    pub fn trim_front(&mut self, key: CacheKey, offset: i64) {
        if let Some(entries) = self.partitions.get_mut(&key) {
            while entries.batches.front().is_some_and(|b| b.last_offset < offset) {
                let batch = entries.batches.pop_front().expect("checked");
                self.used_bytes -= batch.bytes.len() as u64;
            }
        }
    }

    /// The lowest offset the cache can serve for a partition, if it holds anything.
    pub fn first_offset(&self, key: CacheKey) -> Option<i64> {
        self.partitions.get(&key).and_then(|e| e.batches.front()).map(|b| b.base_offset)
    }

    /// Batches starting with the one that contains `offset`, whose base offsets are below
    /// `upper_bound`, up to `max_bytes` (the first batch is returned even if larger). `None` when
    /// the cache does not reach back to `offset`.
    pub fn read(&mut self, key: CacheKey, offset: i64, max_bytes: usize, upper_bound: i64) -> Option<Vec<Bytes>> {
        let Some(entries) = self.partitions.get(&key) else {
            self.stats.misses += 1;
            return None;
        };
        match entries.batches.front() {
            Some(first) if first.base_offset <= offset => {}
            _ => {
                self.stats.misses += 1;
                return None;
            }
        }
        self.stats.hits += 1;
        let start = entries.batches.partition_point(|b| b.last_offset < offset);
        let mut out = Vec::new();
        let mut total = 0usize;
        for batch in entries.batches.range(start..) {
            if batch.base_offset >= upper_bound {
                break;
            }
            if !out.is_empty() && total + batch.bytes.len() > max_bytes {
                break;
            }
            total += batch.bytes.len();
            out.push(batch.bytes.clone());
            if total >= max_bytes {
                break;
            }
        }
        Some(out)
    }

    /// Current counters.
    pub fn stats(&self) -> CacheStats {
        CacheStats { used_bytes: self.used_bytes, ..self.stats }
    }

    fn evict(&mut self) {
        while self.used_bytes > self.capacity_bytes {
            let Some(&(key, base_offset)) = self.order.front() else {
                break;
            };
            let Some(entries) = self.partitions.get_mut(&key) else {
                self.order.pop_front();
                continue;
            };
            match entries.batches.front() {
                Some(front) if front.base_offset <= base_offset => {
                    if front.last_offset >= entries.written_offset {
                        // Oldest entry not yet on disk: nothing older can go either.
                        break;
                    }
                    let batch = entries.batches.pop_front().expect("checked");
                    self.used_bytes -= batch.bytes.len() as u64;
                    self.stats.evictions += 1;
                    self.order.pop_front();
                }
                // Already gone (truncated, trimmed, or evicted under an older entry).
                _ => {
                    self.order.pop_front();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: usize) -> Bytes {
        Bytes::from(vec![0u8; n])
    }

    #[test]
    fn reads_from_the_containing_batch_up_to_max_bytes() {
        let mut cache = ReadCache::new(1 << 20);
        let key = cache.register();
        cache.insert(key, 0, 9, batch(100));
        cache.insert(key, 10, 19, batch(100));
        cache.insert(key, 20, 29, batch(100));
        let got = cache.read(key, 15, 150, i64::MAX).expect("hit");
        assert_eq!(got.len(), 1, "second batch would exceed max_bytes");
        let got = cache.read(key, 15, 1000, 20).expect("hit");
        assert_eq!(got.len(), 1, "upper bound excludes batch 20");
        let got = cache.read(key, 0, 10, i64::MAX).expect("hit");
        assert_eq!(got.len(), 1, "first batch returned even when larger than max_bytes");
    }

    #[test]
    fn never_evicts_unwritten_batches() {
        let mut cache = ReadCache::new(150);
        let key = cache.register();
        cache.insert(key, 0, 0, batch(100));
        cache.insert(key, 1, 1, batch(100));
        assert_eq!(cache.stats().used_bytes, 200, "unwritten: over budget rather than lost");
        cache.set_written(key, 1);
        assert_eq!(cache.stats().used_bytes, 100);
        assert!(cache.read(key, 0, 1000, i64::MAX).is_none(), "offset 0 now only on disk");
        assert_eq!(cache.first_offset(key), Some(1));
    }

    #[test]
    fn eviction_is_oldest_first_across_partitions() {
        let mut cache = ReadCache::new(250);
        let a = cache.register();
        let b = cache.register();
        cache.insert(a, 0, 0, batch(100));
        cache.insert(b, 0, 0, batch(100));
        cache.set_written(a, 10);
        cache.set_written(b, 10);
        cache.insert(a, 1, 1, batch(100));
        assert_eq!(cache.first_offset(a), Some(1));
        assert_eq!(cache.first_offset(b), Some(0));
    }

    #[test]
    fn truncate_then_reappend_keeps_accounting_exact() {
        let mut cache = ReadCache::new(1000);
        let key = cache.register();
        cache.insert(key, 0, 4, batch(100));
        cache.insert(key, 5, 9, batch(100));
        cache.truncate(key, 5);
        assert_eq!(cache.stats().used_bytes, 100);
        cache.insert(key, 5, 7, batch(50));
        assert_eq!(cache.stats().used_bytes, 150);
        cache.unregister(key);
        assert_eq!(cache.stats().used_bytes, 0);
    }
}
