//! Decide, save, publish: the one path every event of a rollout's actor takes. The machine
//! decides; the decision is saved through the group commit ([`super::group_commit`]) before
//! anything it asks for is performed ([`super::perform`]); a decision the store refuses is
//! dropped, so the in-memory state never runs ahead of the disk, and the actor decides again
//! after a backoff.

use std::future::Future;
use std::sync::Arc;

use chrono::Utc;

use super::group_commit::TickRow;

use super::shell::{ControlError, Reply, Update};
use super::supervisor::inject_fault;
use super::task::RolloutTask;
use super::transition_log::{event_label, log_transition};
use crate::rollout::{Action, Event, Rollout, Tick, Transition, handle, keeps_tick};
use crate::store::StoreError;
use crate::telemetry;

impl RolloutTask {
    pub(super) async fn command(&mut self, event: Event, reply: Reply) {
        let answer = match self.apply(event).await {
            Err(e) => Err(ControlError::Store(e)),
            Ok(Some(why)) => Err(ControlError::Rejected(why)),
            Ok(None) => Ok(Rollout::clone(&self.state)),
        };
        let _ = reply.send(answer);
    }

    /// Decide, save, publish. Returns the machine's rejection, if any, or the store's refusal,
    /// in which case the decision is dropped and nothing it asked for is performed.
    ///
    /// The machine decides and the decision is queued for the commit at the call, not at the
    /// first poll; the future only waits for the commit and then publishes. It is what every
    /// rollout of a slot holds while their group commit runs, so it keeps only the decision's
    /// handles: as an `async fn` holding the event, the transition and the save's request it
    /// was 1,200 bytes a rollout (12 MB at 10,000 rollouts, in every slot).
    pub(super) fn apply(
        &mut self,
        event: Event,
    ) -> impl Future<Output = Result<Option<String>, StoreError>> + Send + '_ {
        let decided = self.decide(event);
        async move {
            let Decided {
                before,
                rollout,
                actions,
                rejected,
                label,
                commit,
            } = decided;
            if let Some(commit) = commit {
                if let Err(e) = commit.await {
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
            self.state = rollout;
            log_transition(&before, &self.state, &actions);
            telemetry::record_rollout(&self.state, &before);
            self.inner.announce(Update {
                rollout: self.state.clone(),
                event: label,
                actions,
            });
            Ok(rejected)
        }
    }

    /// The machine's decision on `event`, queued for the group commit when it changed anything
    /// or carries a tick. Nothing is acted on or published yet.
    fn decide(
        &mut self,
        event: Event,
    ) -> Decided<impl Future<Output = Result<(), StoreError>> + Send + use<>> {
        let label = event_label(&event);
        if label == "tick" {
            inject_fault("tick");
        }
        let now = Utc::now();
        if let Event::Tick(t) = &event {
            telemetry::record_tick(&self.state, &self.rule, t);
            // Every metric of every tick: DEBUG, or 10,000 rollouts log thousands of lines a
            // second. What is decided from them (steps, rollbacks, promotions, hooks) is INFO.
            for c in &t.checks {
                tracing::debug!(event = "check.verdict", rollout = %self.state.id, metric = %c.metric, verdict = ?c.verdict,
                    canary = ?c.canary, baseline = ?c.baseline, threshold = ?c.threshold.map(|t| t.value), reason = %c.reason, "check");
            }
        }
        // History keeps every tick's verdicts. A tick the machine counts becomes the rollout's
        // `last_tick` (its running state moved onto the rollout), and is saved from there: a
        // slot's decisions all wait for their commit at once, and a copy of each tick held
        // meanwhile was most of the slot's memory. Only a tick the machine ignores (warmup, a
        // hook in flight, another step) needs its own row.
        let plan = self.plan();
        let row = match &event {
            Event::Tick(t) if keeps_tick(&self.state, &plan, t) => TickRow::Last,
            Event::Tick(t) => TickRow::Own(Tick {
                sequential: Default::default(),
                counters_moved: Default::default(),
                ..t.clone()
            }),
            _ => TickRow::None,
        };
        let before = self.state.clone();
        let Transition {
            rollout,
            actions,
            rejected,
        } = handle(&self.state, &plan, event, now);
        let changed = rollout != *before;
        // Shared with the commit, not copied: the saved state is the one the actor then holds.
        let rollout = Arc::new(rollout);
        let commit = (changed || !matches!(row, TickRow::None))
            .then(|| self.inner.commits.save(rollout.clone(), row));
        Decided {
            before,
            rollout,
            actions,
            rejected,
            label,
            commit,
        }
    }
}

/// A decision between the machine and the commit: the state before and after, what the machine
/// asked for, and the commit's answer to wait for (`None` when nothing needs saving).
struct Decided<C> {
    before: Arc<Rollout>,
    rollout: Arc<Rollout>,
    actions: Vec<Action>,
    rejected: Option<String>,
    label: &'static str,
    commit: Option<C>,
}
