//! What a decision says in the log and which label its event carries in updates and metrics.

use crate::rollout::{Action, Event, Rollout};

pub(super) fn event_label(e: &Event) -> &'static str {
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

pub(super) fn log_transition(before: &Rollout, after: &Rollout, actions: &[Action]) {
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
