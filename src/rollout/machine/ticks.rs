//! A judged tick: whether it counts (warmup, step, weight), rollback on failures, pause on no
//! data, and advancing a step once its hold is over.

use super::*;

fn in_warmup(r: &Rollout, plan: &Plan, at: DateTime<Utc>) -> bool {
    match r.step_started_at {
        Some(started) => at < crate::rollout::plan::after(started, plan.warmup),
        None => true,
    }
}

/// Whether the machine counts `tick` for `r` (and keeps it as `last_tick`): a rollout that is
/// watching, with no hook in flight, at the tick's step, past warmup. Every other tick changes
/// nothing. The controller asks first so that a kept tick is saved to history from the rollout
/// itself, not from a copy held while the slot's decisions wait for their commit.
pub fn keeps_tick(r: &Rollout, plan: &Plan, tick: &Tick) -> bool {
    r.phase.is_watching()
        && r.pending.is_none()
        && tick.step == r.step
        && !in_warmup(r, plan, tick.at)
}

pub(super) fn on_tick(
    r: &mut Rollout,
    plan: &Plan,
    tick: Tick,
    now: DateTime<Utc>,
    out: &mut Vec<Action>,
) {
    if !keeps_tick(r, plan, &tick) {
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
        r.failures.count(&c.metric, failing);
    }
    // A failing score counts as a failing tick too, unless it is 0 only for want of data.
    let score_failing =
        tick.score.outcome == crate::judge::ScoreOutcome::Fail && !tick.score.nodata;
    r.failures
        .count(crate::rollout::failures::score_key(), score_failing);
    let over = r
        .failures
        .iter()
        .find(|(_, n)| *n >= plan.failure_limit)
        .map(|(name, _)| name.to_string());
    if let Some(name) = over {
        let why = tick
            .checks
            .iter()
            .find(|c| *c.metric == *name)
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
    let after_warmup = crate::rollout::plan::after(started, plan.warmup);
    t.step == step
        && t.at >= after_warmup
        && t.at >= crate::rollout::plan::after(started, hold)
        && t.samples_since.is_some_and(|s| s >= after_warmup)
        && t.all_healthy()
        && t.score.outcome == crate::judge::ScoreOutcome::Pass
}

/// Leaves the step when its hold elapsed with a healthy, counted tick, a gate was passed and the
/// window allows. The last step promotes.
pub(in crate::rollout) fn try_advance(
    r: &mut Rollout,
    plan: &Plan,
    now: DateTime<Utc>,
    out: &mut Vec<Action>,
) {
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
    if now < crate::rollout::plan::after(started, step.hold) {
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
