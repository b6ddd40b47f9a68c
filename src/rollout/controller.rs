//! The async shell around the pure machine: one task per live rollout that sleeps, queries,
//! judges, feeds events to the machine, saves the result and performs the actions.
//!
//! Order per event: decide (machine) → save (store) → act (hooks). A hook that is in flight when
//! a rollback is decided is cancelled before the rollback hook is called, so a slow `set_weight`
//! can never land after the rollback it raced with.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::store::Store;
use super::{Action, Event, Plan, Rollout, Tick, handle};
use crate::actions::{HookPayload, HookRunner};
use crate::judge;
use crate::rules::{Group, QueryContext, Rule};
use crate::source::PrometheusSource;
use crate::telemetry;

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
    Store(#[from] super::store::StoreError),
    #[error("controller is shutting down")]
    ShuttingDown,
}

/// Every state change, for the demo's printer and for tests that watch a rollout.
#[derive(Debug, Clone)]
pub struct Update {
    pub rollout: Rollout,
    pub event: &'static str,
    pub actions: Vec<Action>,
}

type Reply = oneshot::Sender<Result<Rollout, ControlError>>;

struct Live {
    tx: mpsc::Sender<(Event, Reply)>,
    handle: JoinHandle<()>,
}

struct Inner {
    rules: RwLock<Arc<RuleSet>>,
    store: Arc<dyn Store>,
    source: PrometheusSource,
    hooks: HookRunner,
    live: Mutex<HashMap<String, Live>>,
    updates: broadcast::Sender<Update>,
    shutdown: watch::Sender<bool>,
}

/// Owns the rollout tasks. Cheap to clone.
#[derive(Clone)]
pub struct Controller {
    inner: Arc<Inner>,
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
                store,
                source,
                hooks,
                live: Mutex::new(HashMap::new()),
                updates: broadcast::channel(1024).0,
                shutdown: watch::channel(false).0,
            }),
        }
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

    /// Starts a rollout of `version` under `rule`. One live rollout per rule.
    pub async fn start(&self, rule_name: &str, version: &str) -> Result<Rollout, ControlError> {
        if *self.inner.shutdown.borrow() {
            return Err(ControlError::ShuttingDown);
        }
        let rule = self
            .rules()
            .get(rule_name)
            .cloned()
            .ok_or_else(|| ControlError::UnknownRule(rule_name.to_string()))?;
        if version.trim().is_empty() {
            return Err(ControlError::Rejected("version must not be empty".into()));
        }
        let (tx, rx) = mpsc::channel(32);
        let rollout = {
            let mut live = self.lock_live();
            if let Some(other) = self
                .inner
                .store
                .list()?
                .into_iter()
                .find(|r| r.rule == rule_name && !r.phase.is_terminal())
            {
                return Err(ControlError::Conflict(format!(
                    "rule {rule_name:?} already has a live rollout {} ({})",
                    other.id,
                    other.phase.as_str()
                )));
            }
            let id = format!("ro-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
            let rollout = Rollout::new(
                id.clone(),
                rule_name.to_string(),
                version.to_string(),
                Utc::now(),
            );
            self.inner.store.save(&rollout)?;
            let task = RolloutTask {
                inner: self.inner.clone(),
                plan: Plan::from_rule(&rule),
                rule,
                state: rollout.clone(),
                rx,
                shutdown: self.inner.shutdown.subscribe(),
            };
            let handle = tokio::spawn(task.run());
            live.insert(
                id,
                Live {
                    tx: tx.clone(),
                    handle,
                },
            );
            rollout
        };
        tracing::info!(event = "rollout.start", rollout = %rollout.id, rule = %rollout.rule, version = %rollout.version, "rollout started");
        self.send(&rollout.id, Event::Start).await
    }

    /// Sends a user or alert event to a live rollout and returns its new state.
    pub async fn send(&self, id: &str, event: Event) -> Result<Rollout, ControlError> {
        let tx = {
            let live = self.lock_live();
            match live.get(id) {
                Some(l) => l.tx.clone(),
                None => {
                    let r = self.get(id)?;
                    return Err(ControlError::Rejected(format!(
                        "rollout is {}",
                        r.phase.as_str()
                    )));
                }
            }
        };
        let (reply, answer) = oneshot::channel();
        tx.send((event, reply))
            .await
            .map_err(|_| ControlError::ShuttingDown)?;
        answer.await.map_err(|_| ControlError::ShuttingDown)?
    }

    /// Live rollouts of a rule (for alerts that stop every rollout of a service).
    pub fn live_of_rule(&self, rule: &str) -> Vec<String> {
        self.list()
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.rule == rule && !r.phase.is_terminal())
            .map(|r| r.id)
            .collect()
    }

    /// Stops every task after its current step; state stays in the store.
    pub async fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
        let handles: Vec<JoinHandle<()>> =
            self.lock_live().drain().map(|(_, l)| l.handle).collect();
        for h in handles {
            let _ = h.await;
        }
    }

    fn lock_live(&self) -> std::sync::MutexGuard<'_, HashMap<String, Live>> {
        self.inner.live.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct RolloutTask {
    inner: Arc<Inner>,
    rule: Arc<Rule>,
    plan: Plan,
    state: Rollout,
    rx: mpsc::Receiver<(Event, Reply)>,
    shutdown: watch::Receiver<bool>,
}

impl RolloutTask {
    async fn run(mut self) {
        // A floor so a tiny interval cannot spin the task.
        let interval = self
            .rule
            .spec
            .analysis
            .interval
            .max(Duration::from_millis(100));
        let mut next_tick = tokio::time::Instant::now() + interval;
        while !self.state.phase.is_terminal() {
            if *self.shutdown.borrow() {
                break;
            }
            if let Some(action) = self.state.pending.clone() {
                self.perform(action).await;
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(next_tick) => {
                    next_tick = tokio::time::Instant::now() + interval;
                    let event = if self.wants_analysis(Utc::now()) {
                        Event::Tick(self.analyse().await)
                    } else {
                        Event::Timer
                    };
                    self.apply(event);
                }
                Some((event, reply)) = self.rx.recv() => self.command(event, reply),
                _ = self.shutdown.changed() => {}
            }
        }
        if let Ok(mut live) = self.inner.live.lock()
            && self.state.phase.is_terminal()
        {
            live.remove(&self.state.id);
        }
    }

    /// Runs one hook while still listening for commands: an abort during a slow `set_weight`
    /// must cancel it and roll back instead of waiting for its retries.
    async fn perform(&mut self, action: Action) {
        let payload = self.payload(&action);
        let spec = match action {
            Action::SetWeight { .. } => self.rule.spec.hooks.set_weight.as_ref(),
            Action::Promote => self.rule.spec.hooks.promote.as_ref(),
            Action::Rollback { .. } => self.rule.spec.hooks.rollback.as_ref(),
        }
        .map(|s| s.value.clone());
        let hooks = self.inner.hooks.clone();
        let call = hooks.call(spec.as_ref(), &payload);
        tokio::pin!(call);
        loop {
            tokio::select! {
                result = &mut call => {
                    let hook = action.hook();
                    self.apply(match result {
                        Ok(_) => Event::HookSucceeded { hook },
                        Err(e) => Event::HookFailed { hook, error: e.to_string() },
                    });
                    return;
                }
                Some((event, reply)) = self.rx.recv() => {
                    self.command(event, reply);
                    if self.state.pending.as_ref() != Some(&action) {
                        tracing::warn!(rollout = %self.state.id, hook = action.hook().as_str(), "hook in flight cancelled by a newer decision");
                        return;
                    }
                }
                _ = self.shutdown.changed() => return,
            }
        }
    }

    fn command(&mut self, event: Event, reply: Reply) {
        let rejected = self.apply(event);
        let answer = match rejected {
            Some(why) => Err(ControlError::Rejected(why)),
            None => Ok(self.state.clone()),
        };
        let _ = reply.send(answer);
    }

    /// Decide, save, publish. Returns the machine's rejection, if any.
    fn apply(&mut self, event: Event) -> Option<String> {
        let label = event_label(&event);
        let now = Utc::now();
        if let Event::Tick(t) = &event {
            telemetry::record_tick(&self.state, &self.rule, t);
            for c in &t.checks {
                tracing::info!(event = "check.verdict", rollout = %self.state.id, metric = %c.metric, verdict = ?c.verdict,
                    canary = ?c.canary, baseline = ?c.baseline, threshold = ?c.threshold.map(|t| t.value), reason = %c.reason, "check");
            }
        }
        let before = self.state.clone();
        let t = handle(&self.state, &self.plan, event, now);
        if t.rollout != before
            && let Err(e) = self.inner.store.save(&t.rollout)
        {
            tracing::error!(rollout = %before.id, error = %e, "cannot save rollout state");
        }
        self.state = t.rollout;
        log_transition(&before, &self.state, &t.actions);
        telemetry::record_rollout(&self.state, &before);
        let _ = self.inner.updates.send(Update {
            rollout: self.state.clone(),
            event: label,
            actions: t.actions,
        });
        t.rejected
    }

    fn wants_analysis(&self, now: DateTime<Utc>) -> bool {
        self.state.phase.is_watching()
            && self.state.pending.is_none()
            && self
                .state
                .step_started_at
                .is_some_and(|s| now >= s + self.plan.warmup)
    }

    async fn analyse(&self) -> Tick {
        let a = &self.rule.spec.analysis;
        let end = SystemTime::now();
        let ctx = QueryContext {
            rollout: &self.state.id,
            version: &self.state.version,
        };
        let mut observations = Vec::new();
        for m in self.rule.metrics() {
            let queries = (
                self.rule.render_query(m, Group::Canary, &ctx),
                self.rule.render_query(m, Group::Baseline, &ctx),
            );
            observations.push(match queries {
                (Ok(cq), Ok(bq)) => tokio::join!(
                    self.inner.source.range(&cq, end, a.window, a.step),
                    self.inner.source.range(&bq, end, a.window, a.step)
                ),
                (Err(e), _) | (_, Err(e)) => {
                    let failed = judge::Observation::Failed {
                        message: e.to_string(),
                    };
                    (failed.clone(), failed)
                }
            });
        }
        let (checks, score) = judge::judge_tick(self.rule.metrics(), &observations, a);
        Tick {
            at: DateTime::<Utc>::from(end),
            step: self.state.step,
            checks,
            score,
        }
    }

    fn payload(&self, action: &Action) -> HookPayload {
        let (step, weight, reason) = match action {
            Action::SetWeight { step, weight } => (*step, *weight, None),
            Action::Promote => (self.state.step, 100, self.state.reason.clone()),
            Action::Rollback { reason } => (self.state.step, 0, Some(reason.clone())),
        };
        HookPayload {
            event: action.hook(),
            rollout_id: self.state.id.clone(),
            rule: self.state.rule.clone(),
            version: self.state.version.clone(),
            step,
            weight,
            phase: self.state.phase.as_str().to_string(),
            reason,
            checks: self
                .state
                .last_tick
                .as_ref()
                .map(|t| t.checks.clone())
                .unwrap_or_default(),
            time: Utc::now(),
        }
    }
}

fn event_label(e: &Event) -> &'static str {
    match e {
        Event::Start => "start",
        Event::Tick(_) => "tick",
        Event::Timer => "timer",
        Event::HookSucceeded { .. } => "hook_succeeded",
        Event::HookFailed { .. } => "hook_failed",
        Event::Abort { .. } => "abort",
        Event::Pause => "pause",
        Event::Resume => "resume",
        Event::Promote => "promote",
        Event::Approve => "approve",
        Event::AlertFired { .. } => "alert_fired",
        Event::HealthFailed { .. } => "health_failed",
    }
}

fn log_transition(before: &Rollout, after: &Rollout, actions: &[Action]) {
    for a in actions {
        match a {
            Action::SetWeight { step, weight } => {
                tracing::info!(event = "step.advance", rollout = %after.id, step, weight, "shifting traffic")
            }
            Action::Promote => {
                tracing::info!(event = "rollout.promote", rollout = %after.id, version = %after.version, "promoting")
            }
            Action::Rollback { reason } => {
                tracing::warn!(event = "rollout.rollback", rollout = %after.id, version = %after.version, reason = %reason, "rolling back")
            }
        }
    }
    if before.phase != after.phase {
        tracing::info!(rollout = %after.id, from = before.phase.as_str(), to = after.phase.as_str(), reason = ?after.reason, "phase changed");
    }
}
