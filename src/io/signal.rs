//! A single-threaded wake-up flag.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// A wake-up flag for one waiting task on the same shard: `notify` sets it (waking the waiter),
/// `notified` waits until it is set and clears it. Notifications do not queue up: many calls to
/// `notify` before the waiter runs wake it once, which is what a flusher or poller wants.
#[derive(Default)]
pub struct LocalSignal {
    set: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl LocalSignal {
    /// A signal that is not set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the flag and wakes the waiter, if any.
    pub fn notify(&self) {
        self.set.set(true);
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    /// Waits until the flag is set, then clears it.
    pub fn notified(&self) -> Notified<'_> {
        Notified { signal: self }
    }
}

/// Future returned by [`LocalSignal::notified`].
pub struct Notified<'a> {
    signal: &'a LocalSignal,
}

impl Future for Notified<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.signal.set.replace(false) {
            return Poll::Ready(());
        }
        *self.signal.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}
