//! The append path: offsets stamped, batches copied once into the write buffer, durability
//! futures handed out, producers held back when the write-behind is full.

use bytes::{Bytes, BytesMut};
use futures_channel::oneshot;

use super::*;
use crate::model::batch::{self, BatchSpan};
use crate::storage::{StorageError, TimestampType};

impl Log {
    /// Appends the batches in `records` (already checked by [`batch::validate_all`], which gave
    /// `spans`), giving them consecutive offsets and stamping `leader_epoch`. Nothing is written
    /// if the log is offline. The batches are copied once, into the write buffer; `records`
    /// itself becomes the cached copy that fetches are served from.
    pub fn append(
        &self,
        mut records: BytesMut,
        spans: &[BatchSpan],
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, StorageError> {
        let log_append_time = {
            let state = self.inner.state.borrow();
            (state.config.timestamp_type == TimestampType::LogAppendTime).then_some(now_ms)
        };
        let mut next = self.log_end_offset();
        for span in spans {
            let bytes = &mut records[span.start..span.end()];
            batch::stamp(bytes, next, leader_epoch);
            if let Some(time) = log_append_time {
                batch::set_log_append_time(bytes, time);
            }
            next += span.header.offset_count();
        }
        let mut info = self.append_stamped(records.freeze(), spans, now_ms)?;
        info.log_append_time_ms = log_append_time;
        Ok(info)
    }

    /// Appends batches a leader stamped (a follower copying its log): offsets, leader epochs and
    /// timestamps stay as they are, and base offsets must increase from the log end (a leader's
    /// compacted log has gaps; the first one makes this log one with gaps too, recorded before
    /// it is written). Nothing is decoded; the batches are copied once, into the write buffer.
    pub fn append_replica(&self, records: Bytes, spans: &[BatchSpan], now_ms: i64) -> Result<AppendInfo, StorageError> {
        let mut expected = self.log_end_offset();
        let mut gapped = false;
        for span in spans {
            if span.header.base_offset < expected {
                return Err(StorageError::OutOfOrder { expected, found: span.header.base_offset });
            }
            gapped |= span.header.base_offset > expected;
            expected = span.header.last_offset() + 1;
        }
        if gapped {
            let mut state = self.inner.state.borrow_mut();
            if state.offsets == Offsets::Consecutive {
                state.offsets = Offsets::MayGap;
                state.gaps_unrecorded = true;
            }
        }
        self.append_stamped(records, spans, now_ms)
    }

    /// Appends batches whose offsets are already the log's next ones.
    fn append_stamped(&self, records: Bytes, spans: &[BatchSpan], now_ms: i64) -> Result<AppendInfo, StorageError> {
        let inner = &*self.inner;
        let mut guard = inner.state.borrow_mut();
        let state = &mut *guard;
        if let Some(reason) = &state.offline {
            return Err(StorageError::Offline(reason.clone()));
        }
        if state.closing {
            return Err(StorageError::Closed);
        }
        if state.should_roll(records.len() as u64, now_ms) {
            state.roll(&inner.dir, now_ms);
        }
        let first_offset = state.next_offset;
        let index_interval = state.config.index_interval_bytes;
        let mut placed = Vec::with_capacity(spans.len());
        for span in spans {
            let bytes = &records[span.start..span.end()];
            let header = batch::BatchHeader::parse(bytes).expect("validated batch");
            if header.last_offset() - state.active().base_offset > i64::from(u32::MAX) {
                // The segment cannot span this batch's offsets (after a gap compaction left on
                // the leader, or simply a full segment): the batch starts a new one at its base.
                state.next_offset = header.base_offset;
                state.roll(&inner.dir, now_ms);
            }
            let position = state.active().size;
            assert_eq!(state.buf_position + state.buf.len() as u64, position, "write buffer ends at segment end");
            state.buf.extend_from_slice(bytes);
            state.active_mut().note_batch(&header, position, index_interval);
            assert!(header.base_offset >= state.next_offset, "offsets are assigned in order");
            state.next_offset = header.last_offset() + 1;
            placed.push((header.base_offset, header.last_offset(), span.start, span.end()));
        }
        // A follower's first batch may start past the log end (a gap compaction left).
        let base_offset = placed.first().map_or(first_offset, |p| p.0);
        let last_offset = state.next_offset - 1;
        {
            let mut cache = inner.cache.borrow_mut();
            for (base, last, start, end) in placed {
                cache.insert(inner.cache_key, base, last, records.slice(start..end));
            }
        }
        let durable = if state.durable_offset >= state.next_offset {
            Durable::ready()
        } else {
            let (tx, rx) = oneshot::channel();
            state.durability_waiters.push_back(Waiter { end_offset: state.next_offset, reply: tx });
            Durable { receiver: Some(rx) }
        };
        let log_start_offset = state.log_start_offset;
        drop(guard);
        inner.wake_flusher.notify();
        Ok(AppendInfo { base_offset, last_offset, log_append_time_ms: None, log_start_offset, durable })
    }

    /// A future that resolves once every offset below `end_offset` is durable (for an
    /// acknowledgement that refers to data appended earlier, such as a retried batch).
    pub fn durable_up_to(&self, end_offset: i64) -> Durable {
        let mut state = self.inner.state.borrow_mut();
        if state.durable_offset >= end_offset {
            return Durable::ready();
        }
        if let Some(reason) = &state.offline {
            let (tx, rx) = oneshot::channel();
            let _ = tx.send(Err(StorageError::Offline(reason.clone())));
            return Durable { receiver: Some(rx) };
        }
        let (tx, rx) = oneshot::channel();
        // Waiters are completed in end-offset order; keep the queue sorted.
        let at = state.durability_waiters.partition_point(|w| w.end_offset <= end_offset);
        state.durability_waiters.insert(at, Waiter { end_offset, reply: tx });
        Durable { receiver: Some(rx) }
    }

    /// Waits while more than `max.unwritten.bytes` of appended data is not yet written: callers
    /// hold produce acknowledgements behind this, so producers cannot outrun the disk forever.
    pub async fn wait_for_write_room(&self) {
        let receiver = {
            let mut state = self.inner.state.borrow_mut();
            if state.unwritten_bytes() <= state.config.max_unwritten_bytes as u64 || state.offline.is_some() {
                return;
            }
            let (tx, rx) = oneshot::channel();
            state.room_waiters.push(tx);
            rx
        };
        self.inner.wake_flusher.notify();
        let _ = receiver.await;
    }
}
