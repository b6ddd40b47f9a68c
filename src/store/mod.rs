//! Where rollouts live between events: the persistence seam. A trait, so the embedded SQLite
//! store ([`sqlite::SqliteStore`]), the shared PostgreSQL store ([`postgres::PostgresStore`]) and
//! the in-memory one here replace each other without touching callers.
//!
//! What a store keeps: each rollout's state (everything the machine needs to resume), the text
//! of the rule it started with (so a reload or a deleted file cannot change a running rollout's
//! plan after a restart), every judged tick (history for the API), and a log of hook deliveries.

use std::collections::BTreeMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::rollout::{HookKind, Phase, Rollout, Tick};

pub mod leadership;
pub mod postgres;
pub mod sqlite;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state store unavailable: {0}")]
    Unavailable(String),
    #[error("state store holds a record it cannot read ({what}): {message}")]
    Corrupt { what: String, message: String },
    #[error(
        "another canaryd is using state_dir {} (it holds the directory's lock)",
        dir.display()
    )]
    Locked { dir: std::path::PathBuf },
    #[error(
        "state store {} is {state}, but {evidence} shows this state dir held rollouts: \
         restore the database from a backup, or start once with --init-state to begin with no \
         rollouts (the stale files are kept beside it, renamed *.stale-<time>)",
        db.display()
    )]
    Lost {
        db: std::path::PathBuf,
        /// `empty` or `missing`.
        state: &'static str,
        evidence: String,
    },
    #[error(
        "--init-state was given but {} already holds a store; remove the flag (it only starts \
         a state dir that lost its database)",
        db.display()
    )]
    AlreadyInitialized { db: std::path::PathBuf },
    /// A replica that does not (or no longer) lead tried to write: nothing was written.
    #[error("not the leader: {0}")]
    NotLeader(String),
}

/// One call of [`crate::actions::HookRunner::call`], with all its retries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub rollout_id: String,
    pub hook: HookKind,
    pub idempotency_key: String,
    pub attempts: u32,
    /// `delivered` or `failed`.
    pub outcome: String,
    pub error: Option<String>,
    pub at: DateTime<Utc>,
}

/// What [`Store::save_many`] came to: one result per decision, in order, and how many commits
/// it took (what `canaryd_store_commits_total` counts).
#[derive(Debug)]
pub struct SavedBatch {
    pub results: Vec<Result<(), StoreError>>,
    pub commits: u64,
}

/// Decisions are written here before their actions run; a failed write stops the action.
pub trait Store: Send + Sync + 'static {
    /// Records a new rollout with the source text of the rule it runs on.
    fn create(&self, rollout: &Rollout, rule_source: &str) -> Result<(), StoreError>;
    /// Saves a decision; with `tick`, the judged round that led to it, in the same write.
    fn save(&self, rollout: &Rollout, tick: Option<&Tick>) -> Result<(), StoreError>;
    /// Saves several decisions, each with its own result, as few commits (fsyncs) as the store
    /// can: the group commit of one scheduler slot ([`super::group_commit`]). The default saves
    /// one by one (one transaction each), which the PostgreSQL store keeps: its writes are
    /// fenced one by one by the leader epoch.
    fn save_many(&self, batch: &[(&Rollout, Option<&Tick>)]) -> SavedBatch {
        SavedBatch {
            results: batch.iter().map(|(r, t)| self.save(r, *t)).collect(),
            commits: batch.len() as u64,
        }
    }
    fn get(&self, id: &str) -> Result<Option<Rollout>, StoreError>;
    /// Every rollout, oldest first.
    fn list(&self) -> Result<Vec<Rollout>, StoreError>;
    /// The rollouts of `rule` in `phase`, oldest first: what a start needs (the version a
    /// revert goes back to) without reading every rollout. The default filters [`Store::list`];
    /// SQLite answers from its `(rule, phase)` index.
    fn list_in(&self, rule: &str, phase: Phase) -> Result<Vec<Rollout>, StoreError> {
        Ok(self
            .list()?
            .into_iter()
            .filter(|r| r.rule == rule && r.phase == phase)
            .collect())
    }
    /// The rule text a rollout started with (`None` if unknown).
    fn rule_source(&self, id: &str) -> Result<Option<String>, StoreError>;
    /// The last `limit` ticks of a rollout, oldest first.
    fn history(&self, id: &str, limit: usize) -> Result<Vec<Tick>, StoreError>;
    fn record_delivery(&self, delivery: &Delivery) -> Result<(), StoreError>;
    /// Hook deliveries of a rollout, oldest first.
    fn deliveries(&self, id: &str) -> Result<Vec<Delivery>, StoreError>;
    /// Cheap liveness check for `/health/ready`.
    fn ping(&self) -> Result<(), StoreError>;
}

#[derive(Default)]
struct Memory {
    rollouts: BTreeMap<String, Rollout>,
    sources: BTreeMap<String, String>,
    ticks: BTreeMap<String, Vec<Tick>>,
    deliveries: Vec<Delivery>,
}

/// Process memory: state is lost with the process. For `canaryd demo` and unit tests.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Memory>,
}

impl MemoryStore {
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Memory>, StoreError> {
        self.inner
            .lock()
            .map_err(|_| StoreError::Unavailable("lock poisoned".into()))
    }
}

impl Store for MemoryStore {
    fn create(&self, rollout: &Rollout, rule_source: &str) -> Result<(), StoreError> {
        let mut m = self.lock()?;
        m.sources
            .insert(rollout.id.clone(), rule_source.to_string());
        m.rollouts.insert(rollout.id.clone(), rollout.clone());
        Ok(())
    }

    fn save(&self, rollout: &Rollout, tick: Option<&Tick>) -> Result<(), StoreError> {
        let mut m = self.lock()?;
        m.rollouts.insert(rollout.id.clone(), rollout.clone());
        if let Some(t) = tick {
            m.ticks
                .entry(rollout.id.clone())
                .or_default()
                .push(t.clone());
        }
        Ok(())
    }

    /// One lock for the whole batch: the memory store's "transaction".
    fn save_many(&self, batch: &[(&Rollout, Option<&Tick>)]) -> SavedBatch {
        let results = match self.lock() {
            Ok(mut m) => batch
                .iter()
                .map(|(r, t)| {
                    m.rollouts.insert(r.id.clone(), (*r).clone());
                    if let Some(t) = t {
                        m.ticks.entry(r.id.clone()).or_default().push((*t).clone());
                    }
                    Ok(())
                })
                .collect(),
            Err(_) => batch
                .iter()
                .map(|_| Err(StoreError::Unavailable("lock poisoned".into())))
                .collect(),
        };
        SavedBatch {
            results,
            commits: 1,
        }
    }

    fn get(&self, id: &str) -> Result<Option<Rollout>, StoreError> {
        Ok(self.lock()?.rollouts.get(id).cloned())
    }

    fn list(&self) -> Result<Vec<Rollout>, StoreError> {
        let mut all: Vec<Rollout> = self.lock()?.rollouts.values().cloned().collect();
        all.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(all)
    }

    fn rule_source(&self, id: &str) -> Result<Option<String>, StoreError> {
        Ok(self.lock()?.sources.get(id).cloned())
    }

    fn history(&self, id: &str, limit: usize) -> Result<Vec<Tick>, StoreError> {
        let m = self.lock()?;
        let all = m.ticks.get(id).map(Vec::as_slice).unwrap_or_default();
        Ok(all[all.len().saturating_sub(limit)..].to_vec())
    }

    fn record_delivery(&self, delivery: &Delivery) -> Result<(), StoreError> {
        self.lock()?.deliveries.push(delivery.clone());
        Ok(())
    }

    fn deliveries(&self, id: &str) -> Result<Vec<Delivery>, StoreError> {
        Ok(self
            .lock()?
            .deliveries
            .iter()
            .filter(|d| d.rollout_id == id)
            .cloned()
            .collect())
    }

    fn ping(&self) -> Result<(), StoreError> {
        self.lock().map(|_| ())
    }
}
