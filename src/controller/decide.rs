//! Decide, save, publish: the one path every event of a rollout's actor takes. The machine
//! decides; the decision is saved through the group commit ([`super::group_commit`]) before
//! anything it asks for is performed ([`super::perform`]); a decision the store refuses is
//! dropped, so the in-memory state never runs ahead of the disk, and the actor decides again
//! after a backoff.

use chrono::Utc;

use super::shell::{ControlError, Reply, Update};
use super::supervisor::inject_fault;
use super::task::RolloutTask;
use super::transition_log::{event_label, log_transition};
use crate::rollout::{Event, Rollout, Tick, handle};
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
        if t.rollout != *before || tick.is_some() {
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
        self.state = std::sync::Arc::new(t.rollout);
        log_transition(&before, &self.state, &t.actions);
        telemetry::record_rollout(&self.state, &before);
        self.inner.announce(Update {
            rollout: self.state.clone(),
            event: label,
            actions: t.actions,
        });
        Ok(t.rejected)
    }
}
