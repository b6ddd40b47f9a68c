//! Checkpoints after promotion (the runbooks' "verify at T+15m, T+1h, T+24h"): the promoted
//! version is compared with the same service before the rollout started, and a regression
//! raises `CanaryPostPromotionRegression` and, when the rule says so, reverts.
//!
//! Pure: the schedule, the comparison and the transitions take data and `now`. The numbers are
//! fetched by `checkpoint.rs` (the I/O edge) and arrive as an [`Event::Checkpoint`].
//!
//! Why "before the rollout started" and not a live baseline: after promotion there is no
//! baseline left, and the window before the start is the service as it was known good.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Action, Phase, Rollout};
use crate::rules::checkpoints::parse_checkpoints;
use crate::rules::schema::{MetricSpec, VerifySpec};

/// Seed 003: an emergency deploy is monitored for 2 hours after it.
pub const EMERGENCY_VERIFY: Duration = Duration::from_secs(2 * 3600);

/// A rollout's verification plan and results, stored on the rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verification {
    pub checkpoints: Vec<Checkpoint>,
    pub revert_on_failure: bool,
    /// When the promotion was confirmed: checkpoints count from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoted_at: Option<DateTime<Utc>>,
    /// The version the service ran before this rollout (the last one promoted under the same
    /// rule), for the revert hook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_version: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Seconds after the promotion.
    pub after_secs: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<CheckpointResult>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointResult {
    pub at: DateTime<Utc>,
    pub passed: bool,
    pub metrics: Vec<CheckpointMetric>,
}

/// One metric at one checkpoint: before → after, and why it passed or not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMetric {
    pub name: String,
    pub before: Option<f64>,
    pub after: Option<f64>,
    pub passed: bool,
    pub reason: String,
}

/// The verification a new rollout carries: the rule's checkpoints, and for an emergency one
/// more at [`EMERGENCY_VERIFY`] when the rule's stop sooner (or the rule has none).
pub fn plan_for(spec: Option<&VerifySpec>, emergency: bool) -> Option<Verification> {
    let mut times = spec
        .and_then(|v| parse_checkpoints(v).ok())
        .unwrap_or_default();
    if emergency && times.last().is_none_or(|last| *last < EMERGENCY_VERIFY) {
        times.push(EMERGENCY_VERIFY);
    }
    if times.is_empty() {
        return None;
    }
    Some(Verification {
        checkpoints: times
            .into_iter()
            .map(|d| Checkpoint {
                after_secs: d.as_secs(),
                result: None,
            })
            .collect(),
        revert_on_failure: spec.is_some_and(|v| v.revert_on_failure),
        promoted_at: None,
        previous_version: None,
    })
}

impl Verification {
    /// The first checkpoint without a result whose time has come, if any.
    pub fn due(&self, now: DateTime<Utc>) -> Option<usize> {
        let promoted = self.promoted_at?;
        let (i, c) = self
            .checkpoints
            .iter()
            .enumerate()
            .find(|(_, c)| c.result.is_none())?;
        let at = super::plan::after(promoted, Duration::from_secs(c.after_secs));
        (now >= at).then_some(i)
    }

    /// A checkpoint that failed, if any: the regression alert fires from it.
    pub fn failed(&self) -> Option<(u64, &CheckpointResult)> {
        self.checkpoints.iter().find_map(|c| {
            c.result
                .as_ref()
                .filter(|r| !r.passed)
                .map(|r| (c.after_secs, r))
        })
    }
}

/// Compares one metric after promotion with before the rollout, with the rule's own lines:
/// an absolute rollback line crossed, or more than `max_ratio` times the value before (for
/// "lower is better" metrics, `rollback_below` and the inverse ratio). Missing numbers fail:
/// a checkpoint that cannot see the service has not verified it.
pub fn judge_metric(m: &MetricSpec, before: Option<f64>, after: Option<f64>) -> CheckpointMetric {
    let fail = |reason: String| CheckpointMetric {
        name: m.name.clone(),
        before,
        after,
        passed: false,
        reason,
    };
    let Some(a) = after.filter(|a| a.is_finite()) else {
        return fail("no data after the promotion".into());
    };
    if let Some(line) = m.rollback_above
        && a > line
    {
        return fail(format!("{a:.4} is above rollback_above {line}"));
    }
    if let Some(line) = m.rollback_below
        && a < line
    {
        return fail(format!("{a:.4} is below rollback_below {line}"));
    }
    if let Some(ratio) = m.max_ratio {
        match before.filter(|b| b.is_finite()) {
            Some(b) if b > 0.0 && a / b > ratio => {
                return fail(format!(
                    "{a:.4} is {:.2}x the {b:.4} before the rollout (max_ratio {ratio})",
                    a / b
                ));
            }
            None => return fail("no data from before the rollout to compare with".into()),
            _ => {}
        }
    }
    CheckpointMetric {
        name: m.name.clone(),
        before,
        after,
        passed: true,
        reason: match before {
            Some(b) => format!("{b:.4} → {a:.4}"),
            None => format!("{a:.4}"),
        },
    }
}

/// The machine's transition on promotion confirmed: `verifying` when there are checkpoints.
/// Returns whether it took the rollout (the caller then leaves it alone).
pub(super) fn on_promoted(r: &mut Rollout, now: DateTime<Utc>) -> bool {
    let Some(v) = r.verify.as_mut() else {
        return false;
    };
    v.promoted_at = Some(now);
    r.phase = Phase::Verifying;
    r.weight = 100;
    r.reason = Some(format!(
        "promoted; verifying at {}",
        v.checkpoints
            .iter()
            .map(|c| humantime::format_duration(Duration::from_secs(c.after_secs)).to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    true
}

/// A checkpoint's result: the next one waits, the last passing one succeeds, a failing one
/// reverts (when the rule says so) or fails for a human to decide.
pub(super) fn on_checkpoint(
    r: &mut Rollout,
    index: usize,
    result: CheckpointResult,
    now: DateTime<Utc>,
    out: &mut Vec<Action>,
) -> Option<String> {
    if r.phase != Phase::Verifying {
        return Some(format!(
            "no checkpoint due: rollout is {}",
            r.phase.as_str()
        ));
    }
    let Some(v) = r.verify.as_mut() else {
        return Some("rollout has no checkpoints".into());
    };
    let Some(c) = v.checkpoints.get_mut(index).filter(|c| c.result.is_none()) else {
        return Some(format!("checkpoint {index} is not pending"));
    };
    let after = humantime::format_duration(Duration::from_secs(c.after_secs)).to_string();
    let passed = result.passed;
    let failing: Vec<String> = result
        .metrics
        .iter()
        .filter(|m| !m.passed)
        .map(|m| format!("{}: {}", m.name, m.reason))
        .collect();
    c.result = Some(result);
    let last = v.checkpoints.iter().all(|c| c.result.is_some());
    let revert = v.revert_on_failure;
    if passed {
        if last {
            r.phase = Phase::Succeeded;
            r.finished_at = Some(now);
            r.reason = Some(format!("verified: every checkpoint up to T+{after} passed"));
        } else {
            r.reason = Some(format!("checkpoint T+{after} passed"));
        }
        return None;
    }
    let why = format!(
        "post-promotion regression of {} at T+{after}: {}",
        r.version,
        failing.join("; ")
    );
    if revert {
        revert_now(r, why, out);
    } else {
        r.phase = Phase::Failed;
        r.finished_at = Some(now);
        r.reason = Some(format!("{why} (revert_on_failure is off: a human decides)"));
    }
    None
}

/// Abort while verifying, or a failing checkpoint with `revert_on_failure`: the `revert` hook
/// brings back the previous version. Final, as a rollback decision is.
pub(super) fn revert_now(r: &mut Rollout, reason: String, out: &mut Vec<Action>) -> Option<String> {
    if r.rollback_decided {
        return Some("rollback already decided".into());
    }
    r.rollback_decided = true;
    r.phase = Phase::RollingBack;
    r.reason = Some(reason.clone());
    let previous = r.verify.as_ref().and_then(|v| v.previous_version.clone());
    let action = Action::Revert { reason, previous };
    r.pending = Some(action.clone());
    out.push(action);
    None
}

/// A revert that cannot be delivered: the promoted version may still serve, so the rollout is
/// `failed` for a human, with both reasons (the regression alert keeps firing meanwhile).
pub(super) fn revert_failed(r: &mut Rollout, error: &str, now: DateTime<Utc>) {
    r.phase = Phase::Failed;
    r.reason = Some(format!(
        "revert hook failed: {error} (revert was decided because: {})",
        r.reason.clone().unwrap_or_default()
    ));
    r.finished_at = Some(now);
}
