//! The release lifecycle around the steps, as pure machine arms: `pre_rollout` before any
//! traffic moves, `readiness` before each weight increase, and after a rollback either
//! `migrate_down` (a reversible migration, once traffic is back on the baseline) or a human's
//! downgrade-vs-restore decision (seed 001). Also the traffic provider's two findings: a weight
//! it refused (held, paused) and weights changed behind canaryd's back (drift, paused).
//!
//! Pure like `machine`: data and `now` in, state and actions out.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::machine::{Action, HookKind, request_weight};
use super::{PauseReason, Phase, Plan, Rollout};

/// Which lifecycle hooks a rule configures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LifecycleHooks {
    pub pre_rollout: bool,
    pub readiness: bool,
    pub migrate_down: bool,
}

/// The migration a release brings, declared when the rollout starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Migration {
    pub reversible: bool,
    #[serde(default)]
    pub id: String,
}

/// `Start`: the migration hook first if there is one, else the first weight.
pub(super) fn start(r: &mut Rollout, plan: &Plan, out: &mut Vec<Action>) {
    if plan.lifecycle.pre_rollout {
        r.pending = Some(Action::PreRollout);
        out.push(Action::PreRollout);
    } else {
        request_weight(r, plan, 0, out);
    }
}

/// Successes of the lifecycle's own actions (`SetWeight`, `Promote`, `Rollback` stay in the
/// machine).
pub(super) fn hook_succeeded(
    r: &mut Rollout,
    plan: &Plan,
    done: Action,
    now: DateTime<Utc>,
    out: &mut Vec<Action>,
) {
    match done {
        Action::PreRollout => request_weight(r, plan, 0, out),
        Action::CheckReadiness { step, weight } => {
            let action = Action::SetWeight { step, weight };
            r.step = step;
            r.reason = None;
            r.readiness_held_since = None;
            r.pending = Some(action.clone());
            out.push(action);
        }
        Action::MigrateDown => {
            r.phase = Phase::RolledBack;
            r.finished_at = Some(now);
            r.migration_path = Some(format!(
                "reversible migration {}: migrate_down ran after traffic was back on the baseline",
                migration_id(r)
            ));
        }
        _ => {}
    }
}

/// Failures of the lifecycle's own actions.
pub(super) fn hook_failed(r: &mut Rollout, hook: HookKind, error: String, now: DateTime<Utc>) {
    match hook {
        HookKind::PreRollout => {
            r.phase = Phase::Failed;
            r.reason = Some(format!(
                "pre_rollout hook failed: {error}; no traffic was moved"
            ));
            r.finished_at = Some(now);
        }
        // The step is held: the canary keeps its weight and readiness is asked again at the
        // next tick (or timer, before the first weight). The reason says why it waits.
        HookKind::Readiness => {
            r.readiness_held_since.get_or_insert(now);
            r.reason = Some(format!(
                "readiness failed: {error}; holding at {} % (step {})",
                r.weight,
                r.step + 1
            ));
        }
        // Traffic is on the baseline already; the database is not where it should be.
        HookKind::MigrateDown => {
            r.phase = Phase::Failed;
            r.restore_decision_needed = true;
            r.migration_path = Some(format!(
                "reversible migration {}: migrate_down failed: {error}; a human decides \
                 between downgrade and restore",
                migration_id(r)
            ));
            r.reason = Some(format!(
                "migrate_down hook failed: {error} (traffic is on the baseline; rollback was \
                 decided because: {})",
                r.reason.clone().unwrap_or_default()
            ));
            r.finished_at = Some(now);
        }
        _ => {}
    }
}

/// The rollback arrived (traffic is on the baseline): the migration path, then `rolled_back`.
pub(super) fn after_rollback(
    r: &mut Rollout,
    plan: &Plan,
    now: DateTime<Utc>,
    out: &mut Vec<Action>,
) {
    let finish = |r: &mut Rollout, path: Option<String>| {
        r.phase = Phase::RolledBack;
        r.finished_at = Some(now);
        r.migration_path = path;
    };
    match r.migration.as_deref().cloned() {
        None => finish(r, None),
        Some(m) if m.reversible && plan.lifecycle.migrate_down => {
            r.pending = Some(Action::MigrateDown);
            out.push(Action::MigrateDown);
        }
        Some(m) if m.reversible => finish(
            r,
            Some(format!(
                "reversible migration {}: no migrate_down hook configured, nothing was run",
                migration_id(r)
            )),
        ),
        Some(_) => {
            r.restore_decision_needed = true;
            let path = format!(
                "non-reversible migration {}: migrate_down not run (undoing it is unsafe or \
                 undefined); a human decides between downgrade and restore from backup",
                migration_id(r)
            );
            finish(r, Some(path));
        }
    }
}

fn migration_id(r: &Rollout) -> String {
    match r.migration.as_ref().map(|m| m.id.as_str()) {
        Some("") | None => "(no id)".into(),
        Some(id) => format!("{id:?}"),
    }
}

/// The provider refused the weight and still serves the old one: pause with its error.
pub(super) fn traffic_held(r: &mut Rollout, error: String) -> Option<String> {
    let Some(Action::SetWeight { step, weight }) = r.pending.clone() else {
        return Some("no weight change in flight".into());
    };
    r.pending = None;
    if weight != r.weight && r.step_started_at.is_some() {
        r.step = step.saturating_sub(1);
    }
    r.phase = Phase::Paused;
    r.pause_reason = Some(PauseReason::Traffic);
    r.reason = Some(format!(
        "traffic provider refused {weight} %: {error}; traffic unchanged at {} %",
        r.weight
    ));
    None
}

/// The server holds other weights than canaryd set: pause until a human looks.
pub(super) fn traffic_drift(r: &mut Rollout, found: String) -> Option<String> {
    if !r.phase.is_watching() || r.pending.is_some() || r.rollback_decided {
        return Some(format!("drift ignored: rollout is {}", r.phase.as_str()));
    }
    if r.phase == Phase::Paused && r.pause_reason == Some(PauseReason::Drift) {
        return None;
    }
    r.phase = Phase::Paused;
    r.pause_reason = Some(PauseReason::Drift);
    r.reason = Some(format!(
        "traffic drift: {found}; paused (resume sets {} % again)",
        r.weight
    ));
    None
}

/// Resume after drift: canaryd's own weight for this step, again, without a readiness check
/// (the weight does not go up).
pub(super) fn reapply_weight(r: &mut Rollout, out: &mut Vec<Action>) {
    let action = Action::SetWeight {
        step: r.step,
        weight: r.weight,
    };
    r.pending = Some(action.clone());
    out.push(action);
}
