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
//!
//! The actor is one type in four files: this one (its state and loop), [`super::task_slot`]
//! (a slot: judge, or ask to be gathered, while answering commands), [`super::decide`] (decide,
//! save, publish) and [`super::perform`] (act: traffic, then the hook).

use std::sync::Arc;
use std::time::Duration;

use super::commands::Control;
use super::deadline::tick_deadline;
use super::gather_memo::RolloutRule;
use super::registry::{Member, Wanted};
use super::shell::{Command, Inner};
use crate::rollout::{Event, Phase, Plan, Rollout};
use crate::rules::Rule;
use crate::source::health::HealthProbe;
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

/// The task's command queue, held for the task's whole life; the supervisor keeps the queue
/// across a restart, so commands sent while a task panicked are answered by the next one.
pub(super) type Commands = super::commands::Receiver<Command>;

pub(super) struct RolloutTask {
    pub(super) inner: Arc<Inner>,
    /// The rule snapshot, and the memo of the rollout's queries every slot shares.
    pub(super) rule: RolloutRule,
    /// The rollout as last decided and saved, shared with what the controller announced of it
    /// ([`super::latest`], the update stream): one copy at rest, not one per holder.
    pub(super) state: Arc<Rollout>,
    /// Commands, and the stop signal (shutdown, the end of the term) woken through the same
    /// queue: [`RolloutTask::control`].
    pub(super) rx: Commands,
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
        let epoch = inner.leadership.epoch();
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
            traffic,
            probe,
            inner,
            rule: RolloutRule::new(rule),
            state: Arc::new(state),
            rx,
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

    /// The rule's plan, worked out when a decision needs it: held in every actor it was 112
    /// bytes of its task cell and a steps list on the heap per rollout, for a value the rule
    /// snapshot (which the task keeps anyway) gives whenever asked.
    pub(super) fn plan(&self) -> Plan {
        Plan::from_rule(&self.rule)
    }

    /// The rule's warmup (the plan's, without building the plan).
    pub(super) fn warmup(&self) -> Duration {
        self.rule.spec.analysis.warmup
    }

    /// Shutting down, or the term this task acts under ended: the task stops (a task of a
    /// replica that stopped leading acts on nothing; its writes would be fenced anyway, and its
    /// hook calls refused).
    pub(super) fn stopping(&self) -> bool {
        self.inner.stops_now(self.epoch)
    }

    /// The next command, or [`Control::Stop`] when the task must stop: one wait for both, woken
    /// by a command or by the scheduler's poke ([`super::scheduler`]). It borrows only the queue
    /// and what the stop check reads, so it sits in a `select!` beside waits on other fields.
    pub(super) fn control(&mut self) -> impl std::future::Future<Output = Control<Command>> + '_ {
        let (inner, epoch) = (&self.inner, self.epoch);
        self.rx.control(move || inner.stops_now(epoch))
    }

    /// The actor's loop, until the rollout ends, the controller shuts down or the term ends.
    ///
    /// A plain fn returning an `async move` block rather than an `async fn`: an async fn
    /// keeps its by-value arguments twice (as given and as moved into its body), and this
    /// one lives as long as the rollout, so `self` would sit twice in every resting
    /// rollout's task cell (264 bytes more, `-Zprint-type-sizes`).
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn keeps its arguments twice"
    )]
    pub(super) fn run(mut self) -> impl std::future::Future<Output = ()> + Send {
        async move {
            // In a block: its locals would otherwise sit in the resting future for the
            // rollout's whole life (a `let` lives to the end of its scope, across every await).
            let (deadline, mut slots) = {
                let interval = self
                    .rule
                    .spec
                    .analysis
                    .interval
                    .clamp(MIN_INTERVAL, MAX_INTERVAL);
                let deadline = tick_deadline(interval, self.inner.source.timeout());
                // Recovered (or restarted after a panic): analyse at once instead of after one
                // interval.
                let member = Member::new(self.rule.clone(), deadline);
                let registered = self.inner.scheduler().register(
                    &self.state.id,
                    interval,
                    self.recovered,
                    member,
                    self.rx.poker(),
                );
                (deadline, registered)
            };
            while self.state.is_live() && !self.stopping() {
                // Every decision passes here before the next slot is taken: the scheduler plans
                // that slot from this, without asking.
                slots.publish(Wanted::of(&self.state, self.warmup()), &self.state);
                if self.owes() && Box::pin(self.owed()).await {
                    continue;
                }
                // Commands first: when a command and the slot are both ready, the command wins.
                tokio::select! {
                    biased;
                    // A stop is seen by the loop's condition.
                    control = self.control() => if let Control::Command(cmd) = control {
                        self.command_boxed(cmd).await
                    },
                    Some(due) = slots.due.recv() => Box::pin(self.slot(due, deadline)).await,
                }
            }
            if !self.state.is_live() {
                self.inner.forget(&self.state.id);
            }
        }
    }

    /// The work owed before the next slot, if any: a refused save's backoff, a panic to
    /// record, a start to redo, an action to perform. `true` when it did one and the loop should
    /// look again. One boxed future for all of them: their locals (a pending action, a panic's
    /// reason) held across an await would otherwise sit in every resting rollout's future.
    async fn owed(&mut self) -> bool {
        if self.save_failures > 0 {
            Box::pin(self.idle(retry_delay(self.save_failures))).await;
        }
        if let Some(reason) = self.panicked.clone() {
            if self.panics > 1 {
                Box::pin(self.idle(retry_delay(self.panics - 1))).await;
            }
            if Box::pin(self.apply(Event::TaskFailed { reason }))
                .await
                .is_ok()
            {
                self.panicked = None;
            }
            return true;
        }
        // A fresh rollout is started by `Controller::start`; one recovered in `pending`, or
        // whose start the store refused, starts itself.
        if self.state.phase == Phase::Pending && (self.recovered || self.save_failures > 0) {
            let _ = Box::pin(self.apply(Event::Start)).await;
            return true;
        }
        if let Some(action) = self.state.pending.clone() {
            if self.state.rollback_undelivered() && self.rollback_rounds > 0 {
                Box::pin(self.idle(retry_delay(self.rollback_rounds))).await;
                if !self.state.is_live() || self.stopping() {
                    // The loop's condition ends it.
                    return true;
                }
            }
            Box::pin(self.perform(action)).await;
            return true;
        }
        false
    }

    /// Whether [`RolloutTask::owed`] has anything to do: checked first, so a resting rollout's
    /// loop allocates nothing.
    fn owes(&self) -> bool {
        self.save_failures > 0
            || self.panicked.is_some()
            || self.state.pending.is_some()
            || (self.state.phase == Phase::Pending && self.recovered)
    }

    /// Waits `d` while still answering commands, so an abort is never stuck behind a backoff.
    pub(super) async fn idle(&mut self, d: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            control = self.control() => if let Control::Command(cmd) = control {
                self.command_boxed(cmd).await
            },
        }
    }

    /// Answers a command with its future on the heap, only while it runs: a future is as large
    /// as the largest state it awaits in, so every arm that decides or acts is boxed and the
    /// resting actor is only its own fields (8.5 KB a rollout before, heaptrack at 2,000).
    pub(super) async fn command_boxed(&mut self, cmd: Command) {
        let (event, reply) = *cmd;
        Box::pin(self.command(event, reply)).await
    }
}

#[cfg(test)]
mod tests {
    /// The size of the future an async fn returns, without calling it.
    fn future_size<A, B, C, D, E, R>(_: impl FnOnce(A, B, C, D, E) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    /// The same for a two-argument method.
    fn method_future_size<A, B, R>(_: impl FnOnce(A, B) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    /// Every rollout of a slot waits for the group commit at once, inside `apply`'s future: the
    /// decision is queued at the call, and the wait holds only its handles. As an `async fn`
    /// holding the event, the transition and the save's request it was 1,200 bytes. Structural,
    /// as above: moving the decision back into the future breaks it.
    #[test]
    fn a_decision_waiting_for_its_commit_holds_only_handles() {
        let waiting = method_future_size(super::RolloutTask::apply);
        assert!(
            waiting <= 384,
            "a decision waiting for its commit is {waiting} bytes"
        );
    }

    /// Every live rollout's future is one tokio task cell, as large as the largest state it
    /// awaits in, resting or not. With the arms that decide, act or wait for a slot inline it
    /// was 8.5 KB a rollout (heaptrack at 2,000 rollouts); boxed, they take heap only while
    /// they run. A structural bound (sizes are fixed at compile time), not a measurement: an
    /// arm left inline breaks it.
    /// Also the arguments: as `async fn`s, `supervise` and `run` kept each by-value argument
    /// twice (as given and as moved into the body), the task itself included, and the waits on
    /// the command queue and the slot cell were `Notify` futures of 88 bytes each: 1,256 bytes
    /// in a debug build, 736 without. Then 376: the shutdown and leadership waits (120 bytes
    /// each) became one control wait with the commands ([`super::RolloutTask::control`]), the
    /// plan (112) is worked out when deciding, and the loop's setup locals live in a block.
    #[test]
    fn a_rollouts_resting_future_holds_its_task_not_its_biggest_arm() {
        let supervised = future_size(super::super::supervisor::supervise);
        assert!(
            supervised <= 400,
            "a rollout's supervised task future is {supervised} bytes"
        );
        // What the supervisor adds around the task's loop: its handles, the rollout's id and a
        // panic count, each once (64 bytes); its arguments kept twice made it 88.
        let around = supervised - one_arg_future_size(super::RolloutTask::run);
        assert!(around <= 72, "the supervisor adds {around} bytes");
    }

    /// The same for a one-argument fn.
    fn one_arg_future_size<A, R>(_: impl FnOnce(A) -> R) -> usize {
        std::mem::size_of::<R>()
    }
}
