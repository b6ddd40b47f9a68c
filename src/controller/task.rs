//! One live rollout: sleep, query, judge, decide, save, act — in that order, in one task.
//!
//! Control preempts analysis: commands (abort, pause, an alert, a failing probe) are taken
//! before the timer, and are answered while a tick is in flight; a command that changes the
//! phase, step or pending action cancels that tick, whose queries are dropped unanswered. Each
//! tick has its own deadline ([`super::deadline`]), so however slow Prometheus is, a decision is
//! taken, saved and its hook called at once.
//!
//! A decision the store refuses is dropped (the in-memory state never runs ahead of the disk),
//! nothing is performed, and the task tries again after a backoff: ticks re-decide, a hook whose
//! success could not be saved is delivered again (same Idempotency-Key). A rollback whose hook
//! keeps failing leaves the rollout `failed` and is re-delivered until it arrives. A panic ends
//! the task; [`super::supervisor`] starts it again from the stored state with the panic's reason.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use tokio::sync::{OwnedMutexGuard, mpsc, watch};

use crate::store::leadership::Term;

use super::deadline::{gather_within, tick_deadline};
use super::shell::{ControlError, Inner, Reply, Update};
use super::supervisor::inject_fault;
use crate::actions::HookPayload;
use crate::rollout::{Action, Event, Phase, Plan, Rollout, Tick, handle};
use crate::rules::Rule;
use crate::source::health::HealthProbe;
use crate::store::{Delivery, StoreError};
use crate::telemetry;
use crate::traffic::{Reconcile, TrafficError, TrafficProvider};

/// Longest wait between re-deliveries of an undelivered rollback, and between retries of a
/// refused save: long enough not to hammer a dead receiver, short enough that recovery is quick.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);

/// Bounds of the analysis interval: a floor so a tiny interval cannot spin the task, a ceiling
/// so the next tick's instant is always representable.
const MIN_INTERVAL: Duration = Duration::from_millis(100);
const MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// 1 s, 2 s, 4 s, … capped at [`MAX_RETRY_DELAY`].
pub(super) fn retry_delay(round: u32) -> Duration {
    Duration::from_secs(1u64 << round.saturating_sub(1).min(6)).min(MAX_RETRY_DELAY)
}

/// The task's command queue, held for the task's whole life; the supervisor keeps the queue
/// across a restart, so commands sent while a task panicked are answered by the next one.
pub(super) type Commands = OwnedMutexGuard<mpsc::Receiver<(Event, Reply)>>;

pub(super) struct RolloutTask {
    inner: Arc<Inner>,
    rule: Arc<Rule>,
    plan: Plan,
    state: Rollout,
    rx: Commands,
    shutdown: watch::Receiver<bool>,
    /// Resumed from the store: analyse at once instead of after one interval.
    recovered: bool,
    /// Consecutive decisions the store refused.
    save_failures: u32,
    /// Consecutive failed deliveries of a rollback that is still owed.
    rollback_rounds: u32,
    /// Why the previous task of this rollout panicked: decided (`TaskFailed`) before anything else.
    panicked: Option<String>,
    /// How many tasks of this rollout panicked before this one.
    panics: u32,
    /// The leader term this task acts under; it stops when the term ends.
    epoch: Option<u64>,
    lead: watch::Receiver<Option<Term>>,
    /// The rule's `traffic:` provider, which moves the weight before any hook runs.
    traffic: Option<Arc<dyn TrafficProvider>>,
    /// Asks the canary's readiness endpoint (`hooks.readiness`).
    probe: Option<HealthProbe>,
}

/// What performing an action came to, beyond the hook's own errors.
enum Failure {
    Hook(crate::actions::HookError),
    Traffic(TrafficError),
    Readiness(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Hook(e) => e.fmt(f),
            Failure::Traffic(e) => write!(f, "traffic: {e}"),
            Failure::Readiness(e) => write!(f, "canary not ready: {e}"),
        }
    }
}

impl RolloutTask {
    pub(super) fn new(
        inner: Arc<Inner>,
        rule: Arc<Rule>,
        state: Rollout,
        rx: Commands,
        recovered: bool,
    ) -> RolloutTask {
        let shutdown = inner.shutdown.subscribe();
        let (epoch, lead) = (inner.leadership.epoch(), inner.leadership.subscribe());
        let traffic = rule
            .spec
            .traffic
            .as_ref()
            .map(|t| Arc::from(crate::traffic::provider(&t.value)));
        let probe = rule
            .spec
            .hooks
            .readiness
            .as_ref()
            .and_then(|_| HealthProbe::new().ok());
        RolloutTask {
            epoch,
            lead,
            traffic,
            probe,
            plan: Plan::from_rule(&rule),
            inner,
            rule,
            state,
            rx,
            shutdown,
            recovered,
            save_failures: 0,
            rollback_rounds: 0,
            panicked: None,
            panics: 0,
        }
    }

    /// A task restarted after its predecessor panicked `panics` times: it records the panic
    /// first, and waits a growing delay (answering commands) when the panics repeat, so a panic
    /// that comes back every time cannot spin.
    pub(super) fn after_panic(mut self, reason: String, panics: u32) -> RolloutTask {
        self.panicked = Some(reason);
        self.panics = panics;
        self
    }

    /// Still in the term it was started in: a task of a replica that stopped leading acts on
    /// nothing (its writes would be fenced anyway, and its hook calls refused).
    fn leading(&self) -> bool {
        self.epoch.is_some() && self.inner.leadership.epoch() == self.epoch
    }

    pub(super) async fn run(mut self) {
        let interval = self
            .rule
            .spec
            .analysis
            .interval
            .clamp(MIN_INTERVAL, MAX_INTERVAL);
        let deadline = tick_deadline(interval, self.inner.source.timeout());
        let mut next_tick = tokio::time::Instant::now();
        if !self.recovered {
            next_tick += interval;
        }
        while self.state.is_live() && !*self.shutdown.borrow() && self.leading() {
            if self.save_failures > 0 {
                self.idle(retry_delay(self.save_failures)).await;
            }
            if let Some(reason) = self.panicked.clone() {
                if self.panics > 1 {
                    self.idle(retry_delay(self.panics - 1)).await;
                }
                if self.apply(Event::TaskFailed { reason }).is_ok() {
                    self.panicked = None;
                }
                continue;
            }
            // A fresh rollout is started by `Controller::start`; one recovered in `pending`, or
            // whose start the store refused, starts itself.
            if self.state.phase == Phase::Pending && (self.recovered || self.save_failures > 0) {
                let _ = self.apply(Event::Start);
                continue;
            }
            if let Some(action) = self.state.pending.clone() {
                if self.state.rollback_undelivered() && self.rollback_rounds > 0 {
                    self.idle(retry_delay(self.rollback_rounds)).await;
                    if !self.state.is_live() || *self.shutdown.borrow() {
                        break;
                    }
                }
                self.perform(action).await;
                continue;
            }
            // Commands first: when a command and the timer are both ready, the command wins.
            tokio::select! {
                biased;
                Some((event, reply)) = self.rx.recv() => self.command(event, reply),
                _ = self.shutdown.changed() => {}
                Ok(()) = self.lead.changed() => {}
                _ = tokio::time::sleep_until(next_tick) => {
                    next_tick = tokio::time::Instant::now() + interval;
                    if self.state.phase == Phase::Verifying {
                        self.checkpoint().await;
                    } else if self.wants_analysis(Utc::now()) {
                        self.analyse(deadline).await;
                    } else {
                        let _ = self.apply(Event::Timer);
                    }
                }
            }
        }
        if !self.state.is_live() {
            self.inner.forget(&self.state.id);
        }
    }

    /// Gathers and decides one tick while still answering commands. A command that changes the
    /// phase, the step or the pending action makes the tick moot: it is cancelled (its queries
    /// dropped) and the loop acts on the command's decision at once.
    async fn analyse(&mut self, deadline: Duration) {
        let before = (
            self.state.phase,
            self.state.step,
            self.state.pending.clone(),
        );
        let (inner, rule, state) = (self.inner.clone(), self.rule.clone(), self.state.clone());
        let traffic = self.traffic.clone();
        let gather = async move {
            if let Some(t) = traffic
                && let Some(found) = check_traffic(t.as_ref(), &state).await
            {
                return Event::TrafficDrift { found };
            }
            Event::Tick(
                gather_within(deadline, &inner.source, &rule, &state, SystemTime::now()).await,
            )
        };
        tokio::pin!(gather);
        loop {
            tokio::select! {
                biased;
                Some((event, reply)) = self.rx.recv() => {
                    self.command(event, reply);
                    let now = (self.state.phase, self.state.step, self.state.pending.clone());
                    if now != before {
                        tracing::info!(event = "tick.cancelled", rollout = %self.state.id,
                            phase = self.state.phase.as_str(), "analysis in flight cancelled by a newer decision");
                        return;
                    }
                }
                _ = self.shutdown.changed() => return,
                Ok(()) = self.lead.changed() => if !self.leading() { return },
                event = &mut gather => {
                    crate::faults::stop_at("mid_tick", "gathered");
                    let _ = self.apply(event);
                    return;
                }
            }
        }
    }

    /// Measures the checkpoint after promotion that is due, if any, still answering commands:
    /// an abort while its queries run wins, and the measurement is dropped.
    async fn checkpoint(&mut self) {
        let now = Utc::now();
        let Some(index) = self.state.verify.as_ref().and_then(|v| v.due(now)) else {
            return;
        };
        let (inner, rule, state) = (self.inner.clone(), self.rule.clone(), self.state.clone());
        let measure =
            async move { super::checkpoint::measure(&inner.source, &rule, &state, now).await };
        tokio::pin!(measure);
        loop {
            tokio::select! {
                biased;
                Some((event, reply)) = self.rx.recv() => {
                    self.command(event, reply);
                    if self.state.phase != Phase::Verifying {
                        return;
                    }
                }
                _ = self.shutdown.changed() => return,
                result = &mut measure => {
                    let _ = self.apply(Event::Checkpoint { index, result });
                    return;
                }
            }
        }
    }

    /// Waits `d` while still answering commands, so an abort is never stuck behind a backoff.
    async fn idle(&mut self, d: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            Some((event, reply)) = self.rx.recv() => self.command(event, reply),
            _ = self.shutdown.changed() => {}
            Ok(()) = self.lead.changed() => {}
        }
    }

    /// Runs one hook while still listening for commands: an abort during a slow `set_weight`
    /// must cancel it and roll back instead of waiting for its retries.
    async fn perform(&mut self, action: Action) {
        let payload = self.payload(&action);
        let hooks_spec = &self.rule.spec.hooks;
        let spec = match action {
            Action::SetWeight { .. } => hooks_spec.set_weight.as_ref(),
            Action::Promote => hooks_spec.promote.as_ref(),
            Action::Rollback { .. } => hooks_spec.rollback.as_ref(),
            Action::Revert { .. } => hooks_spec.revert.as_ref(),
            Action::PreRollout => hooks_spec.pre_rollout.as_ref(),
            Action::MigrateDown => hooks_spec.migrate_down.as_ref(),
            Action::CheckReadiness { .. } => None,
        }
        .map(|s| s.value.clone());
        if matches!(action, Action::Rollback { .. }) {
            inject_fault("rollback");
        }
        crate::faults::stop_at("before_hook", action.hook().as_str());
        let hooks = self.inner.hooks.clone();
        let fence = self.epoch.and_then(|e| self.inner.leadership.fence(e));
        let traffic = self.traffic.clone();
        let readiness = hooks_spec.readiness.as_ref().map(|r| r.value.clone());
        let probe = self.probe.clone();
        let act = action.clone();
        let hook_payload = payload.clone();
        let call = async move {
            // Traffic moves first: on rollback the canary is at 0 before any hook runs.
            let pct = match &act {
                Action::SetWeight { weight, .. } => Some(*weight),
                Action::Promote => Some(100),
                // A revert after promotion takes the promoted version's traffic away, as a rollback.
                Action::Rollback { .. } | Action::Revert { .. } => Some(0),
                _ => None,
            };
            // A deposed leader moves no traffic either (the hook below checks on every attempt).
            if let Some(f) = fence.as_ref().filter(|f| !f.holds()) {
                return (
                    0,
                    Err(Failure::Hook(crate::actions::HookError::NotLeader {
                        epoch: f.epoch,
                    })),
                );
            }
            if let (Some(t), Some(pct)) = (&traffic, pct)
                && let Err(e) = crate::traffic::set_confirmed(t.as_ref(), pct).await
            {
                return (1, Err(Failure::Traffic(e)));
            }
            if let Action::CheckReadiness { .. } = act {
                let result = match (readiness, probe) {
                    (Some(r), Some(p)) => p.check(&r.url, r.timeout).await,
                    _ => Err("no readiness client".to_string()),
                };
                return (1, result.map_err(Failure::Readiness));
            }
            let (n, result) = hooks
                .deliver_fenced(spec.as_ref(), &hook_payload, fence)
                .await;
            (n, result.map_err(Failure::Hook))
        };
        tokio::pin!(call);
        loop {
            tokio::select! {
                (attempts, result) = &mut call => {
                    crate::faults::stop_at("after_hook", action.hook().as_str());
                    self.log_delivery(&payload, attempts, &result);
                    let hook = action.hook();
                    let event = match result {
                        Ok(()) => Event::HookSucceeded { hook },
                        // The old weights still serve: hold and tell, no need to roll back.
                        Err(Failure::Traffic(e)) if e.traffic_unchanged() && matches!(action, Action::SetWeight { .. }) => {
                            Event::TrafficHeld { error: e.to_string() }
                        }
                        Err(e) => Event::HookFailed { hook, error: e.to_string() },
                    };
                    let failed = matches!(event, Event::HookFailed { .. });
                    let _ = self.apply(event);
                    if self.state.rollback_undelivered() {
                        self.rollback_rounds = if failed { self.rollback_rounds.saturating_add(1) } else { 0 };
                        tracing::error!(event = "rollout.rollback_undelivered", rollout = %self.state.id,
                            rule = %self.state.rule, rounds = self.rollback_rounds,
                            retry_in = ?retry_delay(self.rollback_rounds),
                            "rollback hook still not delivered; rollout is failed and the rollback will be delivered again");
                    }
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
                Ok(()) = self.lead.changed() => if !self.leading() {
                    tracing::warn!(rollout = %self.state.id, hook = action.hook().as_str(), "hook in flight dropped: this replica no longer leads");
                    return;
                },
            }
        }
    }

    /// The delivery log is for humans: a refused write is logged, not fatal.
    fn log_delivery<E: std::fmt::Display>(
        &self,
        payload: &HookPayload,
        attempts: u32,
        result: &Result<(), E>,
    ) {
        let d = Delivery {
            rollout_id: payload.rollout_id.clone(),
            hook: payload.event,
            idempotency_key: payload.idempotency_key(),
            attempts,
            outcome: if result.is_ok() {
                "delivered"
            } else {
                "failed"
            }
            .into(),
            error: result.as_ref().err().map(ToString::to_string),
            at: Utc::now(),
        };
        if let Err(e) = self.inner.store.record_delivery(&d) {
            tracing::warn!(rollout = %d.rollout_id, error = %e, "cannot log a hook delivery");
        }
    }

    fn command(&mut self, event: Event, reply: Reply) {
        let answer = match self.apply(event) {
            Err(e) => Err(ControlError::Store(e)),
            Ok(Some(why)) => Err(ControlError::Rejected(why)),
            Ok(None) => Ok(self.state.clone()),
        };
        let _ = reply.send(answer);
    }

    /// Decide, save, publish. Returns the machine's rejection, if any, or the store's refusal,
    /// in which case the decision is dropped and nothing it asked for is performed.
    fn apply(&mut self, event: Event) -> Result<Option<String>, StoreError> {
        let label = event_label(&event);
        if label == "tick" {
            inject_fault("tick");
        }
        let now = Utc::now();
        // History keeps the verdicts; the sequential tests' running state lives on the rollout
        // once, not again in every stored tick.
        let tick = match &event {
            Event::Tick(t) => Some(Tick {
                sequential: Default::default(),
                ..t.clone()
            }),
            _ => None,
        };
        if let Some(t) = &tick {
            telemetry::record_tick(&self.state, &self.rule, t);
            for c in &t.checks {
                tracing::info!(event = "check.verdict", rollout = %self.state.id, metric = %c.metric, verdict = ?c.verdict,
                    canary = ?c.canary, baseline = ?c.baseline, threshold = ?c.threshold.map(|t| t.value), reason = %c.reason, "check");
            }
        }
        let before = self.state.clone();
        let t = handle(&self.state, &self.plan, event, now);
        if t.rollout != before || tick.is_some() {
            if let Err(e) = self.inner.store.save(&t.rollout, tick.as_ref()) {
                self.save_failures += 1;
                tracing::error!(rollout = %before.id, error = %e, event = label, failures = self.save_failures,
                    "decision not saved; not acting on it, will decide again");
                // A follower's refused write is its role, not a broken store.
                if !matches!(e, StoreError::NotLeader(_)) {
                    self.inner.set_store_error(Some(e.to_string()));
                }
                return Err(e);
            }
            if self.save_failures > 0 {
                self.inner.set_store_error(None);
            }
            self.save_failures = 0;
        }
        self.state = t.rollout;
        log_transition(&before, &self.state, &t.actions);
        telemetry::record_rollout(&self.state, &before);
        let _ = self.inner.updates.send(Update {
            rollout: self.state.clone(),
            event: label,
            actions: t.actions,
        });
        Ok(t.rejected)
    }

    fn wants_analysis(&self, now: DateTime<Utc>) -> bool {
        self.state.phase.is_watching()
            && self.state.pending.is_none()
            && self
                .state
                .step_started_at
                .is_some_and(|s| now >= crate::rollout::plan::after(s, self.plan.warmup))
    }

    fn payload(&self, action: &Action) -> HookPayload {
        let (step, weight, reason) = match action {
            Action::SetWeight { step, weight } => (*step, *weight, None),
            Action::Promote => (self.state.step, 100, self.state.reason.clone()),
            Action::Rollback { reason } => (self.state.step, 0, Some(reason.clone())),
            Action::PreRollout => (0, 0, None),
            Action::CheckReadiness { step, weight } => (*step, *weight, None),
            Action::MigrateDown => (self.state.step, 0, self.state.reason.clone()),
            Action::Revert { reason, .. } => (self.state.step, 100, Some(reason.clone())),
        };
        // The revert hook is told which version to go back to.
        let version = match action {
            Action::Revert {
                previous: Some(p), ..
            } => p.clone(),
            _ => self.state.version.clone(),
        };
        HookPayload {
            event: action.hook(),
            rollout_id: self.state.id.clone(),
            rule: self.state.rule.clone(),
            version,
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
        Event::AlertPause { .. } => "alert_pause",
        Event::Resume => "resume",
        Event::Promote => "promote",
        Event::Approve => "approve",
        Event::AlertFired { .. } => "alert_fired",
        Event::HealthFailed { .. } => "health_failed",
        Event::TaskFailed { .. } => "task_failed",
        Event::Control { control, .. } => control.as_str(),
        Event::Checkpoint { .. } => "checkpoint",
        Event::TrafficHeld { .. } => "traffic_held",
        Event::TrafficDrift { .. } => "traffic_drift",
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
            Action::Revert { reason, previous } => {
                tracing::warn!(event = "rollout.revert", rollout = %after.id, version = %after.version, previous = ?previous, reason = %reason, "reverting after promotion")
            }
            Action::Rollback { reason } => {
                tracing::warn!(event = "rollout.rollback", rollout = %after.id, version = %after.version, reason = %reason, "rolling back")
            }
            Action::PreRollout => {
                tracing::info!(event = "rollout.pre_rollout", rollout = %after.id, "pre_rollout hook before any traffic moves")
            }
            Action::CheckReadiness { step, weight } => {
                tracing::info!(event = "step.readiness", rollout = %after.id, step, weight, "asking the canary's readiness before raising its weight")
            }
            Action::MigrateDown => {
                tracing::warn!(event = "rollout.migrate_down", rollout = %after.id, "traffic is on the baseline; migrating down")
            }
        }
    }
    if before.phase != after.phase {
        tracing::info!(rollout = %after.id, from = before.phase.as_str(), to = after.phase.as_str(), reason = ?after.reason, "phase changed");
    }
}

/// Compares the provider's reading with the weight canaryd confirmed. A server that reloaded
/// gets its weights again here (no step is lost); anything else that differs is drift, returned
/// for the machine to pause on. A reading that fails is logged, not drift: the next weight
/// change would fail and roll back if the server were really gone.
async fn check_traffic(t: &dyn TrafficProvider, state: &Rollout) -> Option<String> {
    let reading = match t.current().await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(rollout = %state.id, provider = t.name(), error = %e, "cannot read the traffic weights");
            return None;
        }
    };
    match crate::traffic::reconcile(state.weight, &reading) {
        Reconcile::InSync => None,
        Reconcile::Reloaded => {
            tracing::warn!(event = "traffic.reapplied", rollout = %state.id, provider = t.name(), weight = state.weight,
                found = %reading.weights, "server is back at its configured weights (reloaded); setting canaryd's again");
            match crate::traffic::set_confirmed(t, state.weight).await {
                Ok(_) => None,
                Err(e) => Some(format!(
                    "server reloaded and re-applying {} % failed: {e}",
                    state.weight
                )),
            }
        }
        Reconcile::Drift { found } => Some(found),
    }
}
