//! Performing a decided action: traffic first, then the hook, while still answering commands.

use chrono::Utc;

use super::commands::Control;
use super::supervisor::inject_fault;
use super::task::{RolloutTask, retry_delay};
use crate::actions::HookPayload;
use crate::rollout::{Action, Event};
use crate::store::Delivery;
use crate::traffic::{Reconcile, TrafficError, TrafficProvider};

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
    /// Runs one hook while still listening for commands: an abort during a slow `set_weight`
    /// must cancel it and roll back instead of waiting for its retries.
    pub(super) async fn perform(&mut self, action: Action) {
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
                    let _ = Box::pin(self.apply(event)).await;
                    if self.state.rollback_undelivered() {
                        self.rollback_rounds = if failed { self.rollback_rounds.saturating_add(1) } else { 0 };
                        tracing::error!(event = "rollout.rollback_undelivered", rollout = %self.state.id,
                            rule = %self.state.rule, rounds = self.rollback_rounds,
                            retry_in = ?retry_delay(self.rollback_rounds),
                            "rollback hook still not delivered; rollout is failed and the rollback will be delivered again");
                    }
                    return;
                }
                control = self.control() => {
                    let Control::Command(cmd) = control else {
                        if !*self.inner.shutdown.borrow() {
                            tracing::warn!(rollout = %self.state.id, hook = action.hook().as_str(), "hook in flight dropped: this replica no longer leads");
                        }
                        return;
                    };
                    self.command_boxed(cmd).await;
                    if self.state.pending.as_ref() != Some(&action) {
                        tracing::warn!(rollout = %self.state.id, hook = action.hook().as_str(), "hook in flight cancelled by a newer decision");
                        return;
                    }
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

/// Compares the provider's reading with the weight canaryd confirmed. A server that reloaded
/// gets its weights again here (no step is lost); anything else that differs is drift, returned
/// for the machine to pause on. A reading that fails is logged, not drift: the next weight
/// change would fail and roll back if the server were really gone.
/// Takes the rollout's id and confirmed weight, not the rollout: it runs while the tick waits.
pub(super) async fn check_traffic(
    t: &dyn TrafficProvider,
    id: &str,
    weight: u32,
) -> Option<String> {
    let reading = match t.current().await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(rollout = %id, provider = t.name(), error = %e, "cannot read the traffic weights");
            return None;
        }
    };
    match crate::traffic::reconcile(weight, &reading) {
        Reconcile::InSync => None,
        Reconcile::Reloaded => {
            tracing::warn!(event = "traffic.reapplied", rollout = %id, provider = t.name(), weight,
                found = %reading.weights, "server is back at its configured weights (reloaded); setting canaryd's again");
            match crate::traffic::set_confirmed(t, weight).await {
                Ok(_) => None,
                Err(e) => Some(format!(
                    "server reloaded and re-applying {weight} % failed: {e}"
                )),
            }
        }
        Reconcile::Drift { found } => Some(found),
    }
}
