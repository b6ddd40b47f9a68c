//! The async shell around the pure machine: owns one actor per live rollout (see
//! [`super::task`]; their ticks are the scheduler's, [`super::scheduler`]), the rule set, and
//! the store (saved through the group commit, [`super::group_commit`]).
//!
//! Order per event: decide (machine) → save (store) → act (hooks). A decision the store refuses
//! is not acted on. Each task runs under a supervisor ([`super::supervisor`]) that restarts it
//! after a panic, so no rollout is left without a task that answers. On start, [`Controller::recover`] resumes every live rollout from the store
//! with the rule text it started with.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use tokio::sync::{broadcast, oneshot, watch};
use tokio::task::JoinHandle;

use super::group_commit::GroupCommit;
use super::latest::Latest;
use super::live::LiveSet;
use super::scheduler::Scheduler;
use super::supervisor::supervise;
use crate::actions::HookRunner;
use crate::rollout::{Action, Event, Rollout, Tick};
use crate::rules::Rule;
use crate::source::PrometheusSource;
use crate::store::leadership::Leadership;
use crate::store::{Delivery, Store, StoreError};

/// Updates a subscriber may fall behind by before it resyncs from the store. A slot sends one
/// update per rollout at once, and a subscriber that lags re-reads (and re-parses) every rollout
/// from the store: with a buffer smaller than the rollouts of a slot, every subscriber did that
/// every slot (profiled at 2,500 rollouts: about 40 % of canaryd's CPU; BENCHMARKS.md, "Scale").
/// Large enough for 10,000 rollouts per slot with headroom; the slots are allocated once.
const UPDATE_BUFFER: usize = 16_384;

/// The rules a controller can start rollouts from, by name.
pub type RuleSet = BTreeMap<String, Arc<Rule>>;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("unknown rule {0:?}")]
    UnknownRule(String),
    #[error("unknown rollout {0:?}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Rejected(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("controller is shutting down")]
    ShuttingDown,
}

/// Every state change, for the demo's printer and for tests that watch a rollout.
///
/// The state is shared, not copied: the update stream keeps its last [`UPDATE_BUFFER`] updates
/// until they are overwritten, and [`Latest`] the last of every rollout; one `Rollout` serves
/// both and every subscriber (each copy was a few KB per rollout at 10,000 rollouts).
#[derive(Debug, Clone)]
pub struct Update {
    pub rollout: Arc<Rollout>,
    pub event: &'static str,
    pub actions: Vec<Action>,
}

/// How a rollout starts besides its rule and version.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Ignore deploy windows; a human approves before the first step.
    pub emergency: bool,
    /// The rollout this run retries.
    pub retry_of: Option<String>,
    /// 0 or 1 for a first run.
    pub run: u32,
    /// Controls to record from the start (the `retry` that created this run).
    pub controls: Vec<crate::rollout::controls::ControlRecord>,
    /// The release's database migration (`rollout::lifecycle`): what a rollback does about it.
    pub migration: Option<crate::rollout::lifecycle::Migration>,
}

pub(super) type Reply = oneshot::Sender<Result<Rollout, ControlError>>;

/// A command for a rollout's actor, boxed: an `(Event, Reply)` is large and the queue
/// ([`super::commands`]) is nearly always empty.
pub(super) type Command = Box<(Event, Reply)>;

pub(super) struct Live {
    tx: super::commands::Sender<Command>,
    handle: JoinHandle<()>,
}

pub(super) struct Inner {
    rules: RwLock<Arc<RuleSet>>,
    pub(super) store: Arc<dyn Store>,
    pub(super) source: PrometheusSource,
    pub(super) hooks: HookRunner,
    /// The task of every live rollout, by id and by rule ([`super::live`]).
    live: Mutex<LiveSet<Live>>,
    /// The last announced state of every live and recently ended rollout ([`super::latest`]).
    pub(super) latest: Mutex<Latest>,
    pub(super) updates: broadcast::Sender<Update>,
    pub(super) shutdown: watch::Sender<bool>,
    /// The last write the store refused, until one succeeds: `/health/ready` shows it.
    pub(super) store_error: Mutex<Option<String>>,
    /// Only a leading replica's tasks act ([`super::lease`]); always for the embedded store.
    pub(super) leadership: Leadership,
    /// Every decision is saved through it: one commit for the decisions of a slot.
    pub(super) commits: GroupCommit,
    /// Owns every live rollout's next tick; started with the first rollout, on its runtime.
    pub(super) scheduler: OnceLock<Scheduler>,
}

impl Inner {
    pub(super) fn forget(&self, id: &str) {
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    pub(super) fn scheduler(&self) -> &Scheduler {
        self.scheduler
            .get_or_init(|| Scheduler::start(self.source.clone(), self.stops()))
    }

    /// What stops every actor, for the scheduler's loop to watch ([`super::stops::Stops`]).
    pub(super) fn stops(&self) -> super::stops::Stops {
        super::stops::Stops {
            shutdown: self.shutdown.subscribe(),
            lead: self.leadership.subscribe(),
        }
    }

    /// Whether an actor started in term `epoch` must stop: the controller shuts down, or the
    /// term ended (a replica that stopped leading acts on nothing).
    pub(super) fn stops_now(&self, epoch: Option<u64>) -> bool {
        *self.shutdown.borrow() || epoch.is_none() || self.leadership.epoch() != epoch
    }

    pub(super) fn lock_latest(&self) -> std::sync::MutexGuard<'_, Latest> {
        self.latest.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Announces a rollout's new state to the subscribers.
    pub(super) fn announce(&self, update: Update) {
        self.lock_latest().record(update.rollout.clone());
        let _ = self.updates.send(update);
    }

    pub(super) fn set_store_error(&self, e: Option<String>) {
        *self.store_error.lock().unwrap_or_else(|p| p.into_inner()) = e;
    }
}

/// Owns the rollout tasks. Cheap to clone.
#[derive(Clone)]
pub struct Controller {
    pub(super) inner: Arc<Inner>,
}

impl Controller {
    pub fn new(
        rules: RuleSet,
        store: Arc<dyn Store>,
        source: PrometheusSource,
        hooks: HookRunner,
    ) -> Controller {
        Controller {
            inner: Arc::new(Inner {
                rules: RwLock::new(Arc::new(rules)),
                commits: GroupCommit::start(store.clone()),
                scheduler: OnceLock::new(),
                store,
                source,
                hooks,
                live: Mutex::new(LiveSet::default()),
                latest: Mutex::new(Latest::default()),
                updates: broadcast::channel(UPDATE_BUFFER).0,
                shutdown: watch::channel(false).0,
                store_error: Mutex::new(None),
                leadership: Leadership::always(),
            }),
        }
    }

    /// A replica of a shared store: its tasks act only while `leadership` leads. Call right
    /// after [`Controller::new`], before the controller is cloned.
    pub fn with_leadership(mut self, leadership: Leadership) -> Controller {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.leadership = leadership,
            None => tracing::error!("with_leadership called on a shared controller; ignored"),
        }
        self
    }

    pub fn leadership(&self) -> &Leadership {
        &self.inner.leadership
    }

    /// This replica lost the lease: forget every task. Each one sees its term end and stops
    /// before acting again; [`Controller::recover`] starts them afresh on the next term.
    pub fn stand_down(&self) {
        let drained = self.lock_live().drain();
        let mut latest = self.inner.lock_latest();
        for (id, _) in &drained {
            latest.forget(id);
        }
        let n = drained.len();
        tracing::info!(
            event = "rollouts.stand_down",
            count = n,
            "following: rollout tasks stop"
        );
    }

    pub fn rules(&self) -> Arc<RuleSet> {
        self.inner
            .rules
            .read()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// Swaps in a new rule set. Running rollouts keep the snapshot they started with.
    pub fn replace_rules(&self, rules: RuleSet) {
        if let Ok(mut guard) = self.inner.rules.write() {
            *guard = Arc::new(rules);
        }
    }

    pub fn source(&self) -> &PrometheusSource {
        &self.inner.source
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Update> {
        self.inner.updates.subscribe()
    }

    pub fn get(&self, id: &str) -> Result<Rollout, ControlError> {
        self.inner
            .store
            .get(id)?
            .ok_or_else(|| ControlError::NotFound(id.to_string()))
    }

    pub fn list(&self) -> Result<Vec<Rollout>, ControlError> {
        Ok(self.inner.store.list()?)
    }

    /// The last `limit` judged ticks and every hook delivery of a rollout.
    pub fn history(
        &self,
        id: &str,
        limit: usize,
    ) -> Result<(Vec<Tick>, Vec<Delivery>), ControlError> {
        self.get(id)?;
        Ok((
            self.inner.store.history(id, limit)?,
            self.inner.store.deliveries(id)?,
        ))
    }

    /// `Err` with the reason when the store cannot be read or refused the last decision.
    pub fn store_health(&self) -> Result<(), String> {
        if let Some(e) = self
            .inner
            .store_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Err(e);
        }
        self.inner.store.ping().map_err(|e| e.to_string())
    }

    pub(super) fn spawn(
        &self,
        live: &mut LiveSet<Live>,
        rule: Arc<Rule>,
        rollout: Rollout,
        recovered: bool,
    ) {
        let (tx, rx) = super::commands::queue();
        let (id, rollout_rule) = (rollout.id.clone(), rollout.rule.clone());
        let handle = tokio::spawn(supervise(
            self.inner.clone(),
            rule,
            Box::new(rollout),
            rx,
            recovered,
        ));
        live.insert(id, rollout_rule, Live { tx, handle });
    }

    /// Sends a user or alert event to a live rollout and returns its new state.
    pub async fn send(&self, id: &str, event: Event) -> Result<Rollout, ControlError> {
        let tx = self.lock_live().get(id).map(|l| l.tx.clone());
        let Some(tx) = tx else {
            return Err(self.not_live(id));
        };
        let (reply, answer) = oneshot::channel();
        if tx.send(Box::new((event, reply))).await.is_err() {
            // The task ended between the lookup and the send.
            return Err(self.not_live(id));
        }
        match answer.await {
            Ok(result) => result,
            // The task ended with the command still queued, or panicked while handling it (the
            // supervisor then restarts it, and the new task records the panic).
            Err(_) => match self.get(id) {
                Ok(r) if r.is_live() && !*self.inner.shutdown.borrow() => {
                    Err(ControlError::Conflict(format!(
                        "the task of rollout {id} failed while handling this request and was \
                         restarted; the rollout's reason says why"
                    )))
                }
                _ => Err(self.not_live(id)),
            },
        }
    }

    /// Why an event cannot be sent to a rollout that has no task.
    fn not_live(&self, id: &str) -> ControlError {
        if *self.inner.shutdown.borrow() {
            return ControlError::ShuttingDown;
        }
        match self.get(id) {
            Ok(r) => ControlError::Rejected(format!("rollout is {}", r.phase.as_str())),
            Err(e) => e,
        }
    }

    /// Live rollouts of a rule (for alerts that stop every rollout of a service), from the
    /// in-memory index: an alert storm must not read every rollout from the store per alert.
    pub fn live_of_rule(&self, rule: &str) -> Vec<String> {
        self.lock_live().of_rule(rule)
    }

    /// Stops every task after its current step; state stays in the store.
    pub async fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
        let handles: Vec<JoinHandle<()>> = self
            .lock_live()
            .drain()
            .into_iter()
            .map(|(_, l)| l.handle)
            .collect();
        for h in handles {
            let _ = h.await;
        }
    }

    pub(super) fn lock_live(&self) -> std::sync::MutexGuard<'_, LiveSet<Live>> {
        self.inner.live.lock().unwrap_or_else(|p| p.into_inner())
    }
}
