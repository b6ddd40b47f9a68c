//! Human controls with the semantics Argo Rollouts users know, and the audit trail of who
//! applied each one and why.
//!
//! Pure, like the machine: a control is an [`Event::Control`] that wraps what the human asked
//! for with their name (the API token's name) and reason; [`apply_control`] applies it through
//! the machine's own transitions and records it only when the machine accepted it, so the trail
//! never shows a control that did not happen.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::machine::Event;
use super::{Action, Phase, Plan, Rollout};

/// What a human can ask of a live rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Control {
    /// Leave the current step now (skip its hold, its analysis and its gate): the next weight,
    /// or the promotion from the last step.
    Promote,
    /// Skip every remaining step and analysis and promote now.
    PromoteFull,
    Abort,
    Pause,
    Resume,
    Approve,
}

impl Control {
    pub fn as_str(self) -> &'static str {
        match self {
            Control::Promote => "promote",
            Control::PromoteFull => "promote_full",
            Control::Abort => "abort",
            Control::Pause => "pause",
            Control::Resume => "resume",
            Control::Approve => "approve",
        }
    }
}

/// One control as it was applied: shown in the rollout's status, its report and history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlRecord {
    pub at: DateTime<Utc>,
    /// `promote`, `promote_full`, `abort`, `pause`, `resume`, `approve` or `retry`.
    pub action: String,
    /// The name of the API token that asked (`default` for the single token, `anonymous` when
    /// the API has no token). Never the token itself.
    pub by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Phase before and after, so the trail reads without the rest of the history.
    pub from: Phase,
    pub to: Phase,
}

pub(crate) fn first_run() -> u32 {
    1
}

/// The most records kept on one rollout: a script looping pause/resume must not grow the
/// stored state without bound. The oldest go first; the decisive ones are the latest.
pub const MAX_CONTROLS: usize = 200;

/// Applies a control through the machine and records it when accepted. `apply` is the machine's
/// own event function, so every safety rule of the machine holds for controls too.
#[allow(clippy::too_many_arguments)]
pub(super) fn apply_control(
    r: &mut Rollout,
    plan: &Plan,
    control: Control,
    by: String,
    reason: Option<String>,
    now: DateTime<Utc>,
    out: &mut Vec<Action>,
    apply: impl FnOnce(&mut Rollout, &Plan, Event, DateTime<Utc>, &mut Vec<Action>) -> Option<String>,
) -> Option<String> {
    let from = r.phase;
    let rejected = match control {
        Control::Promote => promote_step(r, plan, now, out, apply),
        Control::PromoteFull => apply(r, plan, Event::Promote, now, out),
        // The rollback's reason reads as before controls had names; who is in the record.
        Control::Abort => {
            let why = reason
                .clone()
                .unwrap_or_else(|| "requested through the API".into());
            apply(r, plan, Event::Abort { reason: why }, now, out)
        }
        Control::Pause => apply(r, plan, Event::Pause, now, out),
        Control::Resume => apply(r, plan, Event::Resume, now, out),
        Control::Approve => apply(r, plan, Event::Approve, now, out),
    };
    if rejected.is_none() {
        r.controls.push(ControlRecord {
            at: now,
            action: control.as_str().to_string(),
            by,
            reason,
            from,
            to: r.phase,
        });
        if r.controls.len() > MAX_CONTROLS {
            let extra = r.controls.len() - MAX_CONTROLS;
            r.controls.drain(..extra);
        }
    }
    rejected
}

/// Argo's `promote`: leave the current step now. From the last step (or when the plan has no
/// next step) that is the promotion itself. A human decision: it passes the step's hold, its
/// analysis, its approval gate and a closed window, never a rollback decision, and never while a
/// hook is in flight (the weight it would change is not known yet).
fn promote_step(
    r: &mut Rollout,
    plan: &Plan,
    now: DateTime<Utc>,
    out: &mut Vec<Action>,
    apply: impl FnOnce(&mut Rollout, &Plan, Event, DateTime<Utc>, &mut Vec<Action>) -> Option<String>,
) -> Option<String> {
    if r.rollback_decided || !r.phase.is_watching() {
        return Some(format!(
            "cannot promote a rollout that is {}",
            r.phase.as_str()
        ));
    }
    if r.pending.is_some() || r.step_started_at.is_none() {
        return Some("a hook is in flight; promote again when it is confirmed".into());
    }
    if plan.is_last(r.step) {
        return apply(r, plan, Event::Promote, now, out);
    }
    // The next weight goes the way every weight increase goes: through readiness when the
    // rule asks for it.
    super::machine::resume(r);
    super::machine::request_weight(r, plan, r.step + 1, out);
    None
}

/// Whether a retry may start a new run of this rollout: only once it ended without promoting
/// (`rolled_back`, or `failed` with nothing still owed). A retry is a new rollout with a new id,
/// `retry_of` pointing here and `run` one higher; this one stays as it ended, with its history.
pub fn can_retry(r: &Rollout) -> Result<(), String> {
    match r.phase {
        Phase::RolledBack => Ok(()),
        Phase::Failed if !r.rollback_undelivered() => Ok(()),
        Phase::Failed => Err("its rollback has not been delivered yet".into()),
        other => Err(format!(
            "only a rolled_back or failed rollout can be retried; this one is {}",
            other.as_str()
        )),
    }
}
