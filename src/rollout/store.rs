//! Where rollouts live between events. A trait, so the embedded store of the persistence work
//! and a shared PostgreSQL store later can replace the in-memory one without touching callers.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::Rollout;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state store unavailable: {0}")]
    Unavailable(String),
}

/// Decisions are written here before their actions run.
pub trait Store: Send + Sync + 'static {
    fn save(&self, rollout: &Rollout) -> Result<(), StoreError>;
    fn get(&self, id: &str) -> Result<Option<Rollout>, StoreError>;
    fn list(&self) -> Result<Vec<Rollout>, StoreError>;
}

/// Process memory: state is lost with the process.
#[derive(Default)]
pub struct MemoryStore {
    rollouts: Mutex<BTreeMap<String, Rollout>>,
}

impl Store for MemoryStore {
    fn save(&self, rollout: &Rollout) -> Result<(), StoreError> {
        self.rollouts
            .lock()
            .map_err(|_| StoreError::Unavailable("lock poisoned".into()))?
            .insert(rollout.id.clone(), rollout.clone());
        Ok(())
    }

    fn get(&self, id: &str) -> Result<Option<Rollout>, StoreError> {
        Ok(self
            .rollouts
            .lock()
            .map_err(|_| StoreError::Unavailable("lock poisoned".into()))?
            .get(id)
            .cloned())
    }

    fn list(&self) -> Result<Vec<Rollout>, StoreError> {
        let mut all: Vec<Rollout> = self
            .rollouts
            .lock()
            .map_err(|_| StoreError::Unavailable("lock poisoned".into()))?
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(all)
    }
}
