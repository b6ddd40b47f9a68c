//! What the machine does when a hook or the task reports back, and the moves several
//! transitions share: resume, ask for a weight, decide a rollback, fail the task.

use super::*;

pub(in crate::rollout) fn resume(r: &mut Rollout) {
    r.phase = Phase::Progressing;
    r.pause_reason = None;
    r.nodata_ticks = 0;
    r.reason = None;
}

pub(in crate::rollout) fn request_weight(
    r: &mut Rollout,
    plan: &Plan,
    step: usize,
    out: &mut Vec<Action>,
) {
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
pub(in crate::rollout) fn decide_rollback(
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

pub(super) fn hook_succeeded(
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
            if !crate::rollout::verify::on_promoted(r, now) {
                r.phase = Phase::Succeeded;
                r.weight = 100;
                r.finished_at = Some(now);
            }
        }
        Action::Rollback { .. } | Action::Revert { .. } => {
            r.weight = 0;
            crate::rollout::lifecycle::after_rollback(r, plan, now, out);
        }
        other => crate::rollout::lifecycle::hook_succeeded(r, plan, other, now, out),
    }
    None
}

pub(super) fn hook_failed(
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
            crate::rollout::lifecycle::hook_failed(r, hook, error, now);
            None
        }
        // Traffic is in an unknown state between two weights: the known-good state is the
        // baseline, so a weight change that cannot be delivered rolls back.
        HookKind::SetWeight => decide_rollback(r, format!("set_weight hook failed: {error}"), out),
        // A revert that cannot be delivered leaves the rollout to a human.
        HookKind::Revert => {
            crate::rollout::verify::revert_failed(r, &error, now);
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
pub(super) fn task_failed(
    r: &mut Rollout,
    reason: String,
    now: DateTime<Utc>,
    out: &mut Vec<Action>,
) {
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
