//! A memory store with a test's hook before its writes: for tests of what the controller does
//! when saving fails or is slow, without each writing out every `Store` method to delegate.

use canaryd::rollout::{Rollout, Tick};
use canaryd::store::{Delivery, MemoryStore, SavedBatch, Store, StoreError};

/// What a test does before the store writes. Both default to letting the write through.
pub trait SaveHook: Send + Sync + 'static {
    /// Before one decision is saved: an error refuses it (nothing is written).
    fn before_save(&self, _rollout: &Rollout, _tick: Option<&Tick>) -> Result<(), StoreError> {
        Ok(())
    }
    /// Before a group commit's batch is saved (one transaction).
    fn before_batch(&self, _batch: &[(&Rollout, Option<&Tick>)]) {}
}

/// A [`MemoryStore`] that asks its hook before every write of a rollout.
#[derive(Default)]
pub struct Hooked<H> {
    pub inner: MemoryStore,
    pub hook: H,
}

impl<H: SaveHook> Store for Hooked<H> {
    fn create(&self, rollout: &Rollout, rule_source: &str) -> Result<(), StoreError> {
        self.inner.create(rollout, rule_source)
    }
    fn save(&self, rollout: &Rollout, tick: Option<&Tick>) -> Result<(), StoreError> {
        self.hook.before_save(rollout, tick)?;
        self.inner.save(rollout, tick)
    }
    fn save_many(&self, batch: &[(&Rollout, Option<&Tick>)]) -> SavedBatch {
        self.hook.before_batch(batch);
        SavedBatch {
            results: batch.iter().map(|(r, t)| self.save(r, *t)).collect(),
            commits: 1,
        }
    }
    fn get(&self, id: &str) -> Result<Option<Rollout>, StoreError> {
        self.inner.get(id)
    }
    fn list(&self) -> Result<Vec<Rollout>, StoreError> {
        self.inner.list()
    }
    fn rule_source(&self, id: &str) -> Result<Option<String>, StoreError> {
        self.inner.rule_source(id)
    }
    fn history(&self, id: &str, limit: usize) -> Result<Vec<Tick>, StoreError> {
        self.inner.history(id, limit)
    }
    fn record_delivery(&self, delivery: &Delivery) -> Result<(), StoreError> {
        self.inner.record_delivery(delivery)
    }
    fn deliveries(&self, id: &str) -> Result<Vec<Delivery>, StoreError> {
        self.inner.deliveries(id)
    }
    fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping()
    }
}
