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

pub(super) fn resume(r: &mut Rollout) {
    r.phase = Phase::Progressing;
    r.pause_reason = None;
    r.nodata_ticks = 0;
    r.reason = None;
}

pub(super) fn request_weight(r: &mut Rollout, plan: &Plan, step: usize, out: &mut Vec<Action>) {
    let weight = plan.steps.get(step).map_or(100, |s| s.weight);
    if plan.lifecycle.readiness {
        // The step is taken only when readiness answers: until then the rollout stays where it is.
        let action = Action::CheckReadiness { step, weight };
        r.pending = Some(action.clone());
        out.push(action);
        return;
    }
    let action = Action::SetWeight { step, weight };
    r.step = step;
    r.pending = Some(action.clone());
    out.push(action);
}

/// The one way into `rolling_back`. Idempotent: a second cause changes nothing.
pub(super) fn decide_rollback(
    r: &mut Rollout,
    reason: String,
    out: &mut Vec<Action>,
) -> Option<String> {
    if r.rollback_decided {
        return Some("rollback already decided".into());
    }
    r.rollback_decided = true;
    r.phase = Phase::RollingBack;
    r.pause_reason = None;
    r.reason = Some(reason.clone());
    let action = Action::Rollback { reason };
    r.pending = Some(action.clone());
    out.push(action);
    None
}

fn hook_succeeded(
    r: &mut Rollout,
    plan: &Plan,
    hook: HookKind,
    now: DateTime<Utc>,
    out: &mut Vec<Action>,
) -> Option<String> {
    let Some(pending) = r.pending.clone().filter(|a| a.hook() == hook) else {
        return Some(format!("no {} hook in flight", hook.as_str()));
    };
    r.pending = None;
    match pending {
        Action::SetWeight { step, weight } => {
            r.weight = weight;
            r.step = step;
            r.step_started_at = Some(now);
            r.failures.clear();
            r.nodata_ticks = 0;
            r.last_tick = None;
            try_advance(r, plan, now, out);
        }
        Action::Promote => {
            if !super::verify::on_promoted(r, now) {
                r.phase = Phase::Succeeded;
                r.weight = 100;
                r.finished_at = Some(now);
            }
        }
        Action::Rollback { .. } | Action::Revert { .. } => {
            r.weight = 0;
            super::lifecycle::after_rollback(r, plan, now, out);
        }
        other => super::lifecycle::hook_succeeded(r, plan, other, now, out),
    }
    None
}

fn hook_failed(
    r: &mut Rollout,
    hook: HookKind,
    error: String,
    now: DateTime<Utc>,
    out: &mut Vec<Action>,
) -> Option<String> {
    if !r.pending.as_ref().is_some_and(|a| a.hook() == hook) {
        return Some(format!("no {} hook in flight", hook.as_str()));
    }
    if hook != HookKind::Rollback {
        r.pending = None;
    }
    match hook {
        HookKind::PreRollout | HookKind::Readiness | HookKind::MigrateDown => {
            super::lifecycle::hook_failed(r, hook, error, now);
            None
        }
        // Traffic is in an unknown state between two weights: the known-good state is the
        // baseline, so a weight change that cannot be delivered rolls back.
        HookKind::SetWeight => decide_rollback(r, format!("set_weight hook failed: {error}"), out),
        // A revert that cannot be delivered leaves the rollout to a human.
        HookKind::Revert => {
            super::verify::revert_failed(r, &error, now);
            None
        }
        // The canary was healthy at every step; undoing it would be a guess. A human decides.
        HookKind::Promote => {
            r.phase = Phase::Failed;
            r.reason = Some(format!("promote hook failed: {error}"));
            r.finished_at = Some(now);
            None
        }
        // The rollback stays pending: `failed` tells humans it has not arrived, and the
        // controller keeps re-delivering it with a capped backoff until it does (at least once).
        HookKind::Rollback => {
            if r.phase != Phase::Failed {
                r.phase = Phase::Failed;
                r.reason = Some(format!(
                    "rollback hook failed: {error} (rollback was decided because: {})",
                    r.reason.clone().unwrap_or_default()
                ));
                r.finished_at = Some(now);
            }
            None
        }
    }
}

/// The task that watched the canary is gone, so the rollout is `failed` with the panic as its
/// reason. Traffic the canary may hold goes back to the baseline (the known-good state, as when a
/// weight change cannot be delivered); a rollback already decided stays owed and is delivered by
/// the restarted task; a promotion in flight is left to a human, as when its hook fails.
fn task_failed(r: &mut Rollout, reason: String, now: DateTime<Utc>, out: &mut Vec<Action>) {
    let reason = format!("rollout task failed: {reason}");
    let holds_traffic = r.weight > 0 || matches!(r.pending, Some(Action::SetWeight { .. }));
    let why = if r.rollback_decided {
        format!(
            "{reason} (rollback was decided because: {})",
            r.reason.clone().unwrap_or_default()
        )
    } else if matches!(r.pending, Some(Action::Promote)) {
        r.pending = None;
        format!("{reason}; the promotion in flight is unconfirmed: a human decides")
    } else if holds_traffic {
        let why = format!("{reason}; rolling back to the baseline");
        decide_rollback(r, why.clone(), out);
        why
    } else {
        r.pending = None;
        reason
    };
    r.phase = Phase::Failed;
    r.pause_reason = None;
    r.reason = Some(why);
    r.finished_at = Some(now);
}

fn in_warmup(r: &Rollout, plan: &Plan, at: DateTime<Utc>) -> bool {
    match r.step_started_at {
        Some(started) => at < super::plan::after(started, plan.warmup),
        None => true,
    }
}

fn on_tick(r: &mut Rollout, plan: &Plan, tick: Tick, now: DateTime<Utc>, out: &mut Vec<Action>) {
    if !r.phase.is_watching() || r.pending.is_some() || tick.step != r.step {
        return;
    }
    if in_warmup(r, plan, tick.at) {
        return;
    }
    // The running state moves onto the rollout; the tick kept as `last_tick` is only verdicts.
    let mut tick = tick;
    r.sequential.append(&mut tick.sequential);
    r.counters_moved.append(&mut tick.counters_moved);
    if let Some(c) = tick.checks.iter().find(|c| c.rolls_back_now()) {
        decide_rollback(r, format!("{}: {}", c.metric, c.reason), out);
        r.last_tick = Some(tick);
        return;
    }
    for c in &tick.checks {
        let failing = c.verdict == crate::verdict::Verdict::Fail && !c.muted;
        let count = r.failures.entry(c.metric.clone()).or_insert(0);
        *count = if failing { *count + 1 } else { 0 };
    }
    // A failing score counts as a failing tick too, unless it is 0 only for want of data.
    let score_failing =
        tick.score.outcome == crate::judge::ScoreOutcome::Fail && !tick.score.nodata;
    let count = r.failures.entry(SCORE_KEY.to_string()).or_insert(0);
    *count = if score_failing { *count + 1 } else { 0 };
    let over = r
        .failures
        .iter()
        .find(|(_, n)| **n >= plan.failure_limit)
        .map(|(name, _)| name.clone());
    if let Some(name) = over {
        let why = tick
            .checks
            .iter()
            .find(|c| c.metric == name)
            .map(|c| c.reason.clone())
            .unwrap_or_else(|| {
                format!(
                    "score {:.0} < marginal: {}",
                    tick.score.value, tick.score.reason
                )
            });
        let reason = format!(
            "{name}: failed {} ticks in a row (failure_limit {}): {why}",
            plan.failure_limit, plan.failure_limit
        );
        decide_rollback(r, reason, out);
        r.last_tick = Some(tick);
        return;
    }
    let missing: Vec<String> = tick
        .checks
        .iter()
        .filter(|c| {
            !c.muted
                && matches!(
                    c.verdict,
                    crate::verdict::Verdict::Nodata | crate::verdict::Verdict::Error
                )
        })
        .map(|c| format!("{} ({})", c.metric, c.reason))
        .collect();
    if missing.is_empty() {
        r.nodata_ticks = 0;
        if r.phase == Phase::Paused && r.pause_reason == Some(PauseReason::Nodata) {
            resume(r);
        }
    } else {
        r.nodata_ticks += 1;
        if r.nodata_ticks >= plan.nodata_limit && plan.on_nodata == OnNodata::Rollback {
            let reason = format!(
                "no data for {} ticks (nodata_limit {}, on_nodata: rollback): {}",
                r.nodata_ticks,
                plan.nodata_limit,
                missing.join("; ")
            );
            decide_rollback(r, reason, out);
            r.last_tick = Some(tick);
            return;
        }
        if r.nodata_ticks >= plan.nodata_limit && r.phase != Phase::Paused {
            r.phase = Phase::Paused;
            r.pause_reason = Some(PauseReason::Nodata);
            r.reason = Some(format!(
                "no data for {} ticks (nodata_limit {}): {}",
                r.nodata_ticks,
                plan.nodata_limit,
                missing.join("; ")
            ));
        }
    }
    r.last_tick = Some(tick);
    try_advance(r, plan, now, out);
}

/// Whether `t` is evidence that the step that started at `started` may be left: taken at this
/// step after its hold, judged only on samples from after this step's warmup (not on points
/// from an earlier weight), every metric healthy (a `nodata` or `error` metric is not) and a
/// passing score.
fn counts_toward_advancing(
    t: &Tick,
    step: usize,
    started: DateTime<Utc>,
    plan: &Plan,
    hold: std::time::Duration,
) -> bool {
    let after_warmup = super::plan::after(started, plan.warmup);
    t.step == step
        && t.at >= after_warmup
        && t.at >= super::plan::after(started, hold)
        && t.samples_since.is_some_and(|s| s >= after_warmup)
        && t.all_healthy()
        && t.score.outcome == crate::judge::ScoreOutcome::Pass
}

/// Leaves the step when its hold elapsed with a healthy, counted tick, a gate was passed and the
/// window allows. The last step promotes.
pub(super) fn try_advance(r: &mut Rollout, plan: &Plan, now: DateTime<Utc>, out: &mut Vec<Action>) {
    if r.rollback_decided || r.pending.is_some() || r.phase == Phase::Paused {
        return;
    }
    // The first weight was held (readiness said no, or the provider refused): ask again.
    if r.step_started_at.is_none() && r.phase == Phase::Progressing {
        request_weight(r, plan, r.step, out);
        return;
    }
    let (Some(started), Some(step)) = (r.step_started_at, plan.steps.get(r.step)) else {
        return;
    };
    let last = plan.is_last(r.step);
    // Reaching 100 % with no hold is the promotion itself: the canary proved itself at the
    // previous steps, and at 100 % there is no baseline traffic left to compare with.
    let needs_tick = !(last && step.hold.is_zero());
    if now < super::plan::after(started, step.hold) {
        return;
    }
    if needs_tick
        && !r
            .last_tick
            .as_ref()
            .is_some_and(|t| counts_toward_advancing(t, r.step, started, plan, step.hold))
    {
        return;
    }
    if step.approval && r.approved_step != Some(r.step) {
        r.phase = Phase::WaitingApproval;
        return;
    }
    if let Some(w) = &plan.windows
        && !r.emergency
        && !w.allows(now)
    {
        r.phase = Phase::WaitingWindow;
        r.reason = Some(match w.blackout(now) {
            Some(b) => format!("deploy blackout {b} ({})", w.timezone),
            None => format!("outside the deploy windows ({})", w.timezone),
        });
        return;
    }
    if r.phase == Phase::WaitingWindow {
        r.reason = None;
    }
    r.phase = Phase::Progressing;
    if last {
        r.phase = Phase::Promoting;
        r.pending = Some(Action::Promote);
        out.push(Action::Promote);
    } else {
        request_weight(r, plan, r.step + 1, out);
    }
}
