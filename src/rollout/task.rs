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

use super::controller::{ControlError, Inner, Reply, Update};
use super::deadline::{gather_within, tick_deadline};
use super::store::{Delivery, StoreError};
use super::supervisor::inject_fault;
use super::{Action, Event, Phase, Plan, Rollout, Tick, handle};
use crate::actions::HookPayload;
use crate::rules::Rule;
use crate::telemetry;

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
        RolloutTask {
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
        while self.state.is_live() && !*self.shutdown.borrow() {
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
                _ = tokio::time::sleep_until(next_tick) => {
                    next_tick = tokio::time::Instant::now() + interval;
                    if self.wants_analysis(Utc::now()) {
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
        let gather = async move {
            gather_within(deadline, &inner.source, &rule, &state, SystemTime::now()).await
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
                tick = &mut gather => {
                    crate::faults::stop_at("mid_tick", "gathered");
                    let _ = self.apply(Event::Tick(tick));
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
        if matches!(action, Action::Rollback { .. }) {
            inject_fault("rollback");
        }
        crate::faults::stop_at("before_hook", action.hook().as_str());
        let hooks = self.inner.hooks.clone();
        let call = hooks.deliver(spec.as_ref(), &payload);
        tokio::pin!(call);
        loop {
            tokio::select! {
                (attempts, result) = &mut call => {
                    crate::faults::stop_at("after_hook", action.hook().as_str());
                    self.log_delivery(&payload, attempts, &result);
                    let hook = action.hook();
                    let event = match result {
                        Ok(()) => Event::HookSucceeded { hook },
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
            }
        }
    }

    /// The delivery log is for humans: a refused write is logged, not fatal.
    fn log_delivery(
        &self,
        payload: &HookPayload,
        attempts: u32,
        result: &Result<(), crate::actions::HookError>,
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
                self.inner.set_store_error(Some(e.to_string()));
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
                .is_some_and(|s| now >= super::plan::after(s, self.plan.warmup))
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
        Event::AlertPause { .. } => "alert_pause",
        Event::Resume => "resume",
        Event::Promote => "promote",
        Event::Approve => "approve",
        Event::AlertFired { .. } => "alert_fired",
        Event::HealthFailed { .. } => "health_failed",
        Event::TaskFailed { .. } => "task_failed",
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
