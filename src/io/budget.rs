//! A shard's budget of bytes: what its connections may hold of requests being read (Kafka's
//! `queued.max.request.bytes`, split over the shards).
//!
//! Ownership: one [`MemoryBudget`] per shard, shared by `Rc` with that shard's connections; a
//! [`Permit`] holds some of it and gives it back when dropped. Single-threaded: no atomics.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::task::{Poll, Waker};

struct Inner {
    total: usize,
    used: Cell<usize>,
    /// Tasks waiting for bytes to come back; all are woken on every release (few wait at once).
    waiters: RefCell<Vec<Waker>>,
}

/// Bytes a shard's holders may take between them.
#[derive(Clone)]
pub struct MemoryBudget {
    inner: Rc<Inner>,
}

impl MemoryBudget {
    /// A budget of `total` bytes.
    pub fn new(total: usize) -> Self {
        Self { inner: Rc::new(Inner { total, used: Cell::new(0), waiters: RefCell::new(Vec::new()) }) }
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.inner.used.get()
    }

    /// The budget's size.
    pub fn total(&self) -> usize {
        self.inner.total
    }

    /// A permit holding nothing yet.
    pub fn permit(&self) -> Permit {
        Permit { inner: self.inner.clone(), bytes: 0 }
    }
}

/// Some bytes of a budget, given back when dropped.
pub struct Permit {
    inner: Rc<Inner>,
    bytes: usize,
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Permit({} bytes)", self.bytes)
    }
}

impl Permit {
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Holds `more` bytes, waiting while others hold too much for them to fit. A permit that
    /// is alone in holding anything may go past the budget (one request larger than the whole
    /// budget is still read, just never beside another).
    pub async fn grow(&mut self, more: usize) {
        std::future::poll_fn(|cx| {
            let used = self.inner.used.get();
            if used + more <= self.inner.total || used == self.bytes {
                self.inner.used.set(used + more);
                self.bytes += more;
                Poll::Ready(())
            } else {
                self.inner.waiters.borrow_mut().push(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

impl Permit {
    /// Gives back all but `bytes` (nothing when it holds no more than that).
    pub fn shrink_to(&mut self, bytes: usize) {
        if bytes >= self.bytes {
            return;
        }
        let released = self.bytes - bytes;
        self.bytes = bytes;
        self.inner.used.set(self.inner.used.get() - released);
        for waker in self.inner.waiters.borrow_mut().drain(..) {
            waker.wake();
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.shrink_to(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    #[test]
    fn permits_wait_while_the_budget_is_used_and_go_on_when_it_returns() {
        let budget = MemoryBudget::new(100);
        let mut a = budget.permit();
        assert!(a.grow(60).now_or_never().is_some());
        let mut b = budget.permit();
        assert!(b.grow(30).now_or_never().is_some());
        assert_eq!(budget.used(), 90);
        // 90 + 20 > 100: b waits while a holds its 60.
        let mut c = budget.permit();
        assert!(c.grow(20).now_or_never().is_none(), "over the budget: it waits");
        drop(a);
        assert_eq!(budget.used(), 30);
        assert!(c.grow(20).now_or_never().is_some(), "room again");
        drop((b, c));
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_claim_larger_than_the_budget_goes_through_alone() {
        let budget = MemoryBudget::new(100);
        let mut big = budget.permit();
        assert!(big.grow(80).now_or_never().is_some());
        assert!(big.grow(80).now_or_never().is_some(), "alone, it may go past the budget");
        assert_eq!(budget.used(), 160);
        let mut other = budget.permit();
        assert!(other.grow(1).now_or_never().is_none(), "nobody beside it");
        big.shrink_to(10);
        assert_eq!(budget.used(), 10);
        assert!(other.grow(1).now_or_never().is_some(), "room once it gave most back");
        drop(big);
        assert_eq!(budget.used(), 1);
    }
}
