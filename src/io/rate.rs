//! A byte-rate allowance (token bucket) for background work that must leave the disk to the data
//! path: the zero-fill ahead of small writes and the log cleaner.
//!
//! Ownership: one per shard (or per task), used only from that thread: `Cell`s, no locks.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// Bytes per second with a burst allowance; a rate of `f64::INFINITY` never waits.
#[derive(Debug)]
pub struct RateLimit {
    bytes_per_sec: f64,
    burst_bytes: f64,
    /// Bytes available (negative: owed after a take larger than what was there), and when that
    /// was worked out.
    state: Cell<Option<(f64, Instant)>>,
}

impl RateLimit {
    /// An allowance of `bytes_per_sec` that can save up to `burst_bytes`.
    pub fn new(bytes_per_sec: f64, burst_bytes: f64) -> Self {
        Self { bytes_per_sec, burst_bytes, state: Cell::new(None) }
    }

    /// An allowance that never runs out.
    pub fn unlimited() -> Self {
        Self::new(f64::INFINITY, f64::INFINITY)
    }

    fn available(&self, now: Instant) -> f64 {
        let (available, since) = self.state.get().unwrap_or((self.burst_bytes, now));
        (available + now.duration_since(since).as_secs_f64() * self.bytes_per_sec).min(self.burst_bytes)
    }

    /// Takes `bytes` if the allowance holds that much now; otherwise takes nothing.
    pub fn try_take(&self, bytes: u64) -> bool {
        let now = Instant::now();
        let available = self.available(now);
        let granted = available >= bytes as f64;
        self.state.set(Some((if granted { available - bytes as f64 } else { available }, now)));
        granted
    }

    /// Takes `bytes`, waiting first for as long as the allowance needs to cover them (a take
    /// larger than the burst is paid off by the wait).
    pub async fn take(&self, bytes: u64) {
        // Kafka's default, Double.MAX_VALUE, means no limit too.
        if self.bytes_per_sec >= 1e18 {
            return;
        }
        let now = Instant::now();
        let left = self.available(now) - bytes as f64;
        self.state.set(Some((left, now)));
        if left < 0.0 {
            super::sleep(Duration::from_secs_f64(-left / self.bytes_per_sec.max(1.0))).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_only_what_the_allowance_holds() {
        let limit = RateLimit::new(1.0, 100.0);
        assert!(limit.try_take(60));
        assert!(!limit.try_take(60), "40 bytes left, at 1 byte/s");
        assert!(limit.try_take(40));
        assert!(RateLimit::unlimited().try_take(u64::MAX));
    }
}
