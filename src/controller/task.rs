//! One live rollout's actor: wait for its slot, judge, decide, save, act — in that order.
//!
//! The actor has no timer of its own: the scheduler ([`super::scheduler`]) owns every
//! rollout's next tick and gathers each slot's queries together; the actor says what it wants
//! gathered, judges the answer against its state and decides. Decisions are saved through the
//! group commit ([`super::group_commit`]), and acted on only once saved.
//!
//! Control preempts analysis: commands (abort, pause, an alert, a failing probe) are taken
//! before the slot, and are answered while a tick is in flight; a command that changes the
//! phase, step or pending action cancels that tick, whose answer is dropped unread. Each
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

use chrono::Utc;
use tokio::sync::{OwnedMutexGuard, mpsc, oneshot, watch};

use crate::store::leadership::Term;

use super::analysis::{Gathered, judge_gathered};
use super::deadline::{missed, tick_deadline};
use super::perform::check_traffic;
use super::registry::{Member, Wanted};
use super::scheduler::{Due, TickRequest};
use super::shell::{Command, ControlError, Inner, Reply, Update};
use super::supervisor::inject_fault;
use super::transition_log::{event_label, log_transition};
use crate::rollout::{Event, Phase, Plan, Rollout, Tick, handle};
use crate::rules::Rule;
use crate::source::health::HealthProbe;
use crate::store::StoreError;
use crate::telemetry;
use crate::traffic::TrafficProvider;

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

/// How long past its deadline a tick waits for a slot that never answers.
const ANSWER_MARGIN: Duration = Duration::from_secs(1);

/// The task's command queue, held for the task's whole life; the supervisor keeps the queue
/// across a restart, so commands sent while a task panicked are answered by the next one.
pub(super) type Commands = OwnedMutexGuard<mpsc::Receiver<Command>>;

pub(super) struct RolloutTask {
    pub(super) inner: Arc<Inner>,
    pub(super) rule: Arc<Rule>,
    pub(super) plan: Plan,
    pub(super) state: Rollout,
    pub(super) rx: Commands,
    pub(super) shutdown: watch::Receiver<bool>,
    /// Resumed from the store: analyse at once instead of after one interval.
    pub(super) recovered: bool,
    /// Consecutive decisions the store refused.
    pub(super) save_failures: u32,
    /// Consecutive failed deliveries of a rollback that is still owed.
    pub(super) rollback_rounds: u32,
    /// Why the previous task of this rollout panicked: decided (`TaskFailed`) before anything else.
    pub(super) panicked: Option<String>,
    /// How many tasks of this rollout panicked before this one.
    pub(super) panics: u32,
    /// The leader term this task acts under; it stops when the term ends.
    pub(super) epoch: Option<u64>,
    pub(super) lead: watch::Receiver<Option<Term>>,
    /// The rule's `traffic:` provider, which moves the weight before any hook runs.
    pub(super) traffic: Option<Arc<dyn TrafficProvider>>,
    /// Asks the canary's readiness endpoint (`hooks.readiness`).
    pub(super) probe: Option<HealthProbe>,
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
    pub(super) fn leading(&self) -> bool {
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
        // Recovered (or restarted after a panic): analyse at once instead of after one interval.
        let member = Member::new(self.rule.clone(), &self.state, deadline);
        let mut slots =
            self.inner
                .scheduler()
                .register(&self.state.id, interval, self.recovered, member);
        while self.state.is_live() && !*self.shutdown.borrow() && self.leading() {
            // Every decision passes here before the next slot is taken: the scheduler plans
            // that slot from this, without asking.
            slots.publish(Wanted::of(&self.state, self.plan.warmup));
            if self.save_failures > 0 {
                self.idle(retry_delay(self.save_failures)).await;
            }
            if let Some(reason) = self.panicked.clone() {
                if self.panics > 1 {
                    self.idle(retry_delay(self.panics - 1)).await;
                }
                if self.apply(Event::TaskFailed { reason }).await.is_ok() {
                    self.panicked = None;
                }
                continue;
            }
            // A fresh rollout is started by `Controller::start`; one recovered in `pending`, or
            // whose start the store refused, starts itself.
            if self.state.phase == Phase::Pending && (self.recovered || self.save_failures > 0) {
                let _ = self.apply(Event::Start).await;
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
            // Commands first: when a command and the slot are both ready, the command wins.
            tokio::select! {
                biased;
                Some(cmd) = self.rx.recv() => { let (event, reply) = *cmd; self.command(event, reply).await }
                _ = self.shutdown.changed() => {}
                Ok(()) = self.lead.changed() => {}
                Some(due) = slots.due.recv() => self.slot(due, deadline).await,
            }
        }
        if !self.state.is_live() {
            self.inner.forget(&self.state.id);
        }
    }

    /// This rollout's slot has come: it judges the tick the slot planned for its state, asks
    /// the scheduler to gather one, measures a checkpoint after promotion itself, or lets the
    /// machine see the time (a hold, a window).
    async fn slot(&mut self, due: Due, deadline: Duration) {
        let wanted = Wanted::of(&self.state, self.plan.warmup).filter(|w| w.due(Utc::now()));
        if self.state.phase == Phase::Verifying {
            let _ = due.answer.send(None);
            self.checkpoint().await;
        } else if let Some(planned) = due.planned.filter(|p| wanted == Some(p.wanted)) {
            let _ = due.answer.send(None);
            self.analyse(planned.answer, deadline).await;
        } else if wanted.is_some() {
            let (reply, answer) = oneshot::channel();
            let request = TickRequest {
                rule: self.rule.clone(),
                rollout: Arc::new(self.state.clone()),
                deadline,
                reply,
            };
            // A slot that is gone (shutting down) drops the request: the tick is then missed.
            let _ = due.answer.send(Some(request));
            self.analyse(answer, deadline).await;
        } else {
            let _ = due.answer.send(None);
            let _ = self.apply(Event::Timer).await;
        }
    }

    /// Waits for this rollout's part of its slot and decides it, while still answering
    /// commands. A command that changes the phase, the step or the pending action makes the
    /// tick moot: it is cancelled (its answer dropped) and the loop acts on the command's
    /// decision at once.
    async fn analyse(
        &mut self,
        answer: oneshot::Receiver<Result<Gathered, SystemTime>>,
        deadline: Duration,
    ) {
        let before = (
            self.state.phase,
            self.state.step,
            self.state.pending.clone(),
        );
        let (rule, state) = (self.rule.clone(), self.state.clone());
        let traffic = self.traffic.clone();
        let gather = async move {
            if let Some(t) = traffic
                && let Some(found) = check_traffic(t.as_ref(), &state).await
            {
                return Event::TrafficDrift { found };
            }
            // The slot answers by the deadline; the margin only guards against a slot that
            // never answers, which is then a missed tick like any other.
            let tick = match tokio::time::timeout(deadline + ANSWER_MARGIN, answer).await {
                Ok(Ok(Ok(gathered))) => judge_gathered(&rule, &state, &gathered),
                Ok(Ok(Err(end))) => missed(&rule, &state, end, deadline),
                _ => missed(&rule, &state, SystemTime::now(), deadline),
            };
            Event::Tick(tick)
        };
        tokio::pin!(gather);
        loop {
            tokio::select! {
                biased;
                Some(cmd) = self.rx.recv() => {
                    let (event, reply) = *cmd;
                    self.command(event, reply).await;
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
                    let _ = self.apply(event).await;
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
                Some(cmd) = self.rx.recv() => {
                    let (event, reply) = *cmd;
                    self.command(event, reply).await;
                    if self.state.phase != Phase::Verifying {
                        return;
                    }
                }
                _ = self.shutdown.changed() => return,
                result = &mut measure => {
                    let _ = self.apply(Event::Checkpoint { index, result }).await;
                    return;
                }
            }
        }
    }

    /// Waits `d` while still answering commands, so an abort is never stuck behind a backoff.
    async fn idle(&mut self, d: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            Some(cmd) = self.rx.recv() => { let (event, reply) = *cmd; self.command(event, reply).await }
            _ = self.shutdown.changed() => {}
            Ok(()) = self.lead.changed() => {}
        }
    }

    pub(super) async fn command(&mut self, event: Event, reply: Reply) {
        let answer = match self.apply(event).await {
            Err(e) => Err(ControlError::Store(e)),
            Ok(Some(why)) => Err(ControlError::Rejected(why)),
            Ok(None) => Ok(self.state.clone()),
        };
        let _ = reply.send(answer);
    }

    /// Decide, save, publish. Returns the machine's rejection, if any, or the store's refusal,
    /// in which case the decision is dropped and nothing it asked for is performed.
    pub(super) async fn apply(&mut self, event: Event) -> Result<Option<String>, StoreError> {
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
            // Every metric of every tick: DEBUG, or 10,000 rollouts log thousands of lines a
            // second. What is decided from them (steps, rollbacks, promotions, hooks) is INFO.
            for c in &t.checks {
                tracing::debug!(event = "check.verdict", rollout = %self.state.id, metric = %c.metric, verdict = ?c.verdict,
                    canary = ?c.canary, baseline = ?c.baseline, threshold = ?c.threshold.map(|t| t.value), reason = %c.reason, "check");
            }
        }
        let before = self.state.clone();
        let t = handle(&self.state, &self.plan, event, now);
        if t.rollout != before || tick.is_some() {
            if let Err(e) = self
                .inner
                .commits
                .save(t.rollout.clone(), tick.clone())
                .await
            {
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
        self.inner.announce(Update {
            rollout: Arc::new(self.state.clone()),
            event: label,
            actions: t.actions,
        });
        Ok(t.rejected)
    }
}
