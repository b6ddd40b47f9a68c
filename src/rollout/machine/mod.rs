//! The rollout state machine: `(rollout, plan, event, now) -> (rollout, actions)`.
//!
//! Pure, so every phase × event pair is a table row in the tests. The controller performs the
//! returned actions and reports their outcome back as `Hook*` events.
//!
//! Safety rules that every transition keeps:
//! - a rollback decision is final: `rollback_decided` never clears, and no later event can lead
//!   to `Promote` or `SetWeight` for that rollout;
//! - no step advances on no-data or on a tick taken during warmup;
//! - a step advances only on a tick taken after its hold, judged on samples from this step's
//!   weight (after warmup) alone: evidence from an earlier weight never promotes;
//! - weights only go up, one step at a time, until a rollback.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{PauseReason, Phase, Plan, Rollout, Tick};
use crate::rules::schema::OnNodata;

mod hooks;
mod ticks;

pub(super) use hooks::{decide_rollback, request_weight, resume};
use hooks::{hook_failed, hook_succeeded, task_failed};
pub use ticks::keeps_tick;
use ticks::on_tick;
pub(super) use ticks::try_advance;

/// Something that happened to a rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Start,
    /// A judged analysis round.
    Tick(Tick),
    /// Time passed without analysis (warmup, waiting for a window).
    Timer,
    HookSucceeded {
        hook: HookKind,
    },
    HookFailed {
        hook: HookKind,
        error: String,
    },
    Abort {
        reason: String,
    },
    Pause,
    /// A matching Alertmanager alert asks to hold the rollout (`alerts.pause_on`).
    AlertPause {
        alert: String,
    },
    Resume,
    Promote,
    Approve,
    /// A matching Alertmanager alert fired.
    AlertFired {
        alert: String,
    },
    /// A health probe failed `failure_limit` times in a row.
    HealthFailed {
        url: String,
        error: String,
    },
    /// The rollout's task panicked (a bug) and was restarted from the stored state.
    TaskFailed {
        reason: String,
    },
    /// A checkpoint after promotion was measured (`verify`).
    Checkpoint {
        index: usize,
        result: super::verify::CheckpointResult,
    },
    /// A human control with who asked and why, recorded when accepted (`controls`).
    Control {
        control: super::controls::Control,
        by: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// The traffic provider refused a new weight and the old one still serves.
    TrafficHeld {
        error: String,
    },
    /// The traffic provider reads back weights canaryd did not set.
    TrafficDrift {
        found: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HookKind {
    SetWeight,
    Promote,
    Rollback,
    /// After promotion: bring back the previous version (`verify`).
    Revert,
    PreRollout,
    Readiness,
    MigrateDown,
}

impl HookKind {
    pub fn as_str(self) -> &'static str {
        match self {
            HookKind::SetWeight => "set_weight",
            HookKind::Promote => "promote",
            HookKind::Rollback => "rollback",
            HookKind::Revert => "revert",
            HookKind::PreRollout => "pre_rollout",
            HookKind::Readiness => "readiness",
            HookKind::MigrateDown => "migrate_down",
        }
    }
}

/// What the controller must do on the world.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    SetWeight {
        step: usize,
        weight: u32,
    },
    Promote,
    Rollback {
        reason: String,
    },
    /// A checkpoint after promotion failed: the `revert` hook, with the version to go back to.
    Revert {
        reason: String,
        previous: Option<String>,
    },
    /// Before any traffic moves.
    PreRollout,
    /// Ask the canary's readiness endpoint before raising its weight to `weight`.
    CheckReadiness {
        step: usize,
        weight: u32,
    },
    /// Undo a reversible migration, after the rollback put traffic back on the baseline.
    MigrateDown,
}

impl Action {
    pub fn hook(&self) -> HookKind {
        match self {
            Action::SetWeight { .. } => HookKind::SetWeight,
            Action::Promote => HookKind::Promote,
            Action::Rollback { .. } => HookKind::Rollback,
            Action::Revert { .. } => HookKind::Revert,
            Action::PreRollout => HookKind::PreRollout,
            Action::CheckReadiness { .. } => HookKind::Readiness,
            Action::MigrateDown => HookKind::MigrateDown,
        }
    }
}

/// The outcome of one event.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub rollout: Rollout,
    pub actions: Vec<Action>,
    /// Set when the event does not apply in this phase (the API answers 409 with it).
    pub rejected: Option<String>,
}

/// Failure counter of the tick's score, beside the per-metric ones.
pub const SCORE_KEY: &str = "(score)";

/// Applies one event. Never panics, whatever the state and event.
pub fn handle(current: &Rollout, plan: &Plan, event: Event, now: DateTime<Utc>) -> Transition {
    let mut r = current.clone();
    let mut actions = Vec::new();
    let rejected = apply(&mut r, plan, event, now, &mut actions);
    if r != *current {
        r.updated_at = now;
    }
    Transition {
        rollout: r,
        actions,
        rejected,
    }
}

fn apply(
    r: &mut Rollout,
    plan: &Plan,
    event: Event,
    now: DateTime<Utc>,
    out: &mut Vec<Action>,
) -> Option<String> {
    // A failed rollout whose rollback is still owed only hears about that rollback's delivery.
    let owed_rollback = r.rollback_undelivered()
        && matches!(
            &event,
            Event::HookSucceeded {
                hook: HookKind::Rollback
            } | Event::HookFailed {
                hook: HookKind::Rollback,
                ..
            }
        );
    if r.phase.is_terminal() && !owed_rollback {
        return Some(format!("rollout is {}", r.phase.as_str()));
    }
    match event {
        // An emergency skips the windows, so a human approves before any traffic moves.
        Event::Start if r.phase == Phase::Pending && r.emergency => {
            r.phase = Phase::WaitingApproval;
            r.reason = Some("emergency rollout: waiting for approval before the first step".into());
            None
        }
        Event::Start if r.phase == Phase::Pending => {
            r.phase = Phase::Progressing;
            super::lifecycle::start(r, plan, out);
            None
        }
        Event::Start => Some("rollout already started".into()),
        Event::HookSucceeded { hook } => hook_succeeded(r, plan, hook, now, out),
        Event::HookFailed { hook, error } => hook_failed(r, hook, error, now, out),
        Event::Abort { reason } if r.phase == Phase::Verifying => {
            super::verify::revert_now(r, format!("aborted: {reason}"), out)
        }
        Event::Abort { reason } => decide_rollback(r, format!("aborted: {reason}"), out),
        Event::Checkpoint { index, result } => {
            super::verify::on_checkpoint(r, index, result, now, out)
        }
        Event::AlertFired { alert } => decide_rollback(r, format!("alert fired: {alert}"), out),
        Event::HealthFailed { url, error } => {
            decide_rollback(r, format!("health check {url} failed: {error}"), out)
        }
        Event::TaskFailed { reason } => {
            task_failed(r, reason, now, out);
            None
        }
        Event::TrafficHeld { error } => super::lifecycle::traffic_held(r, error),
        Event::TrafficDrift { found } => super::lifecycle::traffic_drift(r, found),
        Event::Tick(tick) => {
            on_tick(r, plan, tick, now, out);
            None
        }
        Event::Timer => {
            if r.phase.is_watching() {
                try_advance(r, plan, now, out);
            }
            None
        }
        Event::Pause | Event::AlertPause { .. } => {
            if r.phase.is_watching() && r.phase != Phase::Paused {
                r.phase = Phase::Paused;
                (r.pause_reason, r.reason) = match event {
                    Event::AlertPause { alert } => (
                        Some(PauseReason::Alert),
                        Some(format!("paused by alert: {alert}")),
                    ),
                    _ => (Some(PauseReason::Manual), Some("paused by user".into())),
                };
                None
            } else {
                Some(format!(
                    "cannot pause a rollout that is {}",
                    r.phase.as_str()
                ))
            }
        }
        Event::Resume => {
            if r.phase == Phase::Paused {
                let drifted = r.pause_reason == Some(PauseReason::Drift);
                resume(r);
                if drifted {
                    // The human looked and said go on: canaryd's weight is set again, and the
                    // step's hold starts over, as the traffic was not at its weight.
                    super::lifecycle::reapply_weight(r, out);
                } else {
                    try_advance(r, plan, now, out);
                }
                None
            } else {
                Some(format!(
                    "cannot resume a rollout that is {}",
                    r.phase.as_str()
                ))
            }
        }
        Event::Approve if r.phase == Phase::WaitingApproval && r.step_started_at.is_none() => {
            r.approved_step = Some(0);
            r.phase = Phase::Progressing;
            r.reason = None;
            request_weight(r, plan, 0, out);
            None
        }
        Event::Approve => {
            if r.phase == Phase::WaitingApproval {
                r.approved_step = Some(r.step);
                r.phase = Phase::Progressing;
                try_advance(r, plan, now, out);
                None
            } else {
                Some(format!(
                    "nothing to approve: rollout is {}",
                    r.phase.as_str()
                ))
            }
        }
        Event::Promote => {
            if r.phase.is_watching() && !r.rollback_decided {
                r.phase = Phase::Promoting;
                r.reason = Some("promoted by user".into());
                r.pending = Some(crate::rollout::Action::Promote);
                out.push(Action::Promote);
                None
            } else {
                Some(format!(
                    "cannot promote a rollout that is {}",
                    r.phase.as_str()
                ))
            }
        }
        Event::Control {
            control,
            by,
            reason,
        } => super::controls::apply_control(r, plan, control, by, reason, now, out, apply),
    }
}
