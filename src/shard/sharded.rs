//! Sharded services: one instance of a service per shard, reached from any shard by running
//! work on the instance of the shard that owns what the work is about (in the manner of
//! Seastar's and Redpanda's `sharded<T>`).
//!
//! Ownership: a [`Sharded<T>`] handle is `Send + Sync` and holds no `T`: each shard's instance
//! lives in that shard's thread-local slot, installed once by the shard at start, and is only
//! ever touched on that thread. Work for another shard's instance travels as a `Send` closure
//! that receives the instance on arrival.

use std::any::Any;
use std::cell::RefCell;
use std::future::Future;
use std::marker::PhantomData;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::runtime::{Pending, ShardGone, ShardId, ShardSet};

/// Slot numbers handed out to sharded services (one per `Sharded::new`).
static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's instances, by slot.
    static INSTANCES: RefCell<Vec<Option<Rc<dyn Any>>>> = const { RefCell::new(Vec::new()) };
}

/// A service with one instance per shard.
pub struct Sharded<T> {
    slot: usize,
    shards: ShardSet,
    _service: PhantomData<fn() -> T>,
}

impl<T> Clone for Sharded<T> {
    fn clone(&self) -> Self {
        Self { slot: self.slot, shards: self.shards.clone(), _service: PhantomData }
    }
}

impl<T: 'static> Sharded<T> {
    /// A new service over `shards`, with no instance installed yet.
    pub fn new(shards: &ShardSet) -> Self {
        Self { slot: NEXT_SLOT.fetch_add(1, Ordering::Relaxed), shards: shards.clone(), _service: PhantomData }
    }

    /// The shards the service runs on.
    pub fn shards(&self) -> &ShardSet {
        &self.shards
    }

    /// Installs the calling shard's instance.
    pub fn install(&self, instance: Rc<T>) {
        INSTANCES.with(|slots| {
            let mut slots = slots.borrow_mut();
            if slots.len() <= self.slot {
                slots.resize_with(self.slot + 1, || None);
            }
            slots[self.slot] = Some(instance);
        });
    }

    /// The calling shard's instance, if it installed one.
    pub fn try_local(&self) -> Option<Rc<T>> {
        INSTANCES.with(|slots| slots.borrow().get(self.slot).cloned().flatten()).and_then(|any| any.downcast().ok())
    }

    /// The calling shard's instance. Every shard installs its services before it serves
    /// anything, so a missing one is a wiring bug.
    pub fn local(&self) -> Rc<T> {
        self.try_local().expect("sharded service used on a shard that did not install it")
    }

    /// Sends `f` to `shard`'s instance now (see [`ShardSet::submit_on`] for the ordering).
    pub async fn submit_on<F, Fut, R>(&self, shard: ShardId, f: F) -> Pending<R>
    where
        F: FnOnce(Rc<T>) -> Fut + Send + 'static,
        Fut: Future<Output = R> + 'static,
        R: Send + 'static,
    {
        let this = self.clone();
        self.shards.submit_on(shard, move || f(this.local())).await
    }

    /// Sends `f` to `shard`'s instance, dropped there once the caller drops the handle (see
    /// [`ShardSet::submit_cancellable_on`]).
    pub async fn submit_cancellable_on<F, Fut, R>(&self, shard: ShardId, f: F) -> Pending<R>
    where
        F: FnOnce(Rc<T>) -> Fut + Send + 'static,
        Fut: Future<Output = R> + 'static,
        R: Send + 'static,
    {
        let this = self.clone();
        self.shards.submit_cancellable_on(shard, move || f(this.local())).await
    }

    /// Runs `f` on `shard`'s instance (data lane) and waits for its result.
    pub async fn invoke_on<F, Fut, R>(&self, shard: ShardId, f: F) -> Result<R, ShardGone>
    where
        F: FnOnce(Rc<T>) -> Fut + Send + 'static,
        Fut: Future<Output = R> + 'static,
        R: Send + 'static,
    {
        self.submit_on(shard, f).await.wait().await
    }

    /// Runs `f` on `shard`'s instance on the control lane and waits for its result.
    pub async fn control_on<F, Fut, R>(&self, shard: ShardId, f: F) -> Result<R, ShardGone>
    where
        F: FnOnce(Rc<T>) -> Fut + Send + 'static,
        Fut: Future<Output = R> + 'static,
        R: Send + 'static,
    {
        let this = self.clone();
        self.shards.control_on(shard, move || f(this.local())).await
    }
}
