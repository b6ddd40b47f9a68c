//! Which alerts a rollout has right now, as plain data: `CanaryRollback`,
//! `CanaryRollbackUndelivered`, `CanaryCheckWarning`, `CanaryStalled`, and the traffic and
//! migration alerts (`CanaryTrafficDrift`, `CanaryTrafficRefused`, `CanaryRestoreDecisionNeeded`). Pure (the caller
//! passes `now` and how long the rollout has waited), so the publisher in
//! [`crate::controller::alertmanager`] only diffs and delivers.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::rollout::{PauseReason, Phase, Rollout};
use crate::verdict::{Check, Verdict};

/// One alert in Alertmanager API v2's shape (`POST /api/v2/alerts`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    #[serde(rename = "startsAt")]
    pub starts_at: DateTime<Utc>,
    /// Absent while firing (Alertmanager then applies its `resolve_timeout`); set to resolve.
    #[serde(rename = "endsAt", skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<DateTime<Utc>>,
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
}

impl Alert {
    pub fn name(&self) -> &str {
        self.labels.get("alertname").map_or("", String::as_str)
    }
}

/// What the derivation needs besides the rollout.
pub struct AlertContext<'a> {
    pub now: DateTime<Utc>,
    /// Since when the rollout has been in its current phase, as the publisher observed it.
    pub phase_since: DateTime<Utc>,
    pub stall_after: Duration,
    /// How long `CanaryRollback` keeps firing after the rollback was delivered. Alertmanager
    /// holds a new alert for its `group_wait` before it notifies anyone; an alert resolved
    /// sooner (a fast rollback hook) would page nobody.
    pub rollback_keep_firing_for: Duration,
    /// `{external_url}`; alerts link to the rollout's API page below it.
    pub external_url: &'a str,
}

/// Whether `r` can have alerts at `now`: live, or an automatic rollback on-call must still hear
/// of. The publisher re-derives these on its timer, so an alert whose time is up resolves.
pub fn may_alert(r: &Rollout, now: DateTime<Utc>, keep_firing_for: Duration) -> bool {
    !r.phase.is_terminal()
        || r.rollback_undelivered()
        || rollback_recent(r, now, keep_firing_for)
        || regression_recent(r, now, keep_firing_for)
        || restore_decision_recent(r, now, keep_firing_for)
}

/// A checkpoint after promotion failed, and the rollout is still live or ended less than
/// `keep_firing_for` ago (so a fast revert still pages someone, as a fast rollback does).
fn regression_recent(r: &Rollout, now: DateTime<Utc>, keep_firing_for: Duration) -> bool {
    if r.verify.as_ref().is_none_or(|v| v.failed().is_none()) {
        return false;
    }
    let Some(finished) = r.finished_at else {
        return true;
    };
    ended_within(finished, now, keep_firing_for)
}

/// A rolled-back release whose migration cannot simply be undone, finished less than
/// `keep_firing_for` ago (`rolled_back`, or `failed` when `migrate_down` failed).
fn restore_decision_recent(r: &Rollout, now: DateTime<Utc>, keep_firing_for: Duration) -> bool {
    let Some(finished) = r.finished_at.filter(|_| r.restore_decision_needed) else {
        return false;
    };
    ended_within(finished, now, keep_firing_for)
}

/// A rollback delivered less than `keep_firing_for` ago.
fn rollback_recent(r: &Rollout, now: DateTime<Utc>, keep_firing_for: Duration) -> bool {
    let Some(finished) = r.finished_at.filter(|_| r.phase == Phase::RolledBack) else {
        return false;
    };
    ended_within(finished, now, keep_firing_for)
}

/// Less than `keep` has passed since `finished` (a `keep` too large for a time delta is for ever,
/// never a panic: `plan::after` saturates).
fn ended_within(finished: DateTime<Utc>, now: DateTime<Utc>, keep: Duration) -> bool {
    now < crate::rollout::plan::after(finished, keep)
}

/// Every alert that should be firing for `r`. Terminal rollouts have none, except after a
/// rollback: `CanaryRollback` fires from the decision until `rollback_keep_firing_for` after the
/// rollback was delivered, and `CanaryRollbackUndelivered` as long as its hook has not arrived
/// (the canary may still take traffic).
pub fn alerts_for(r: &Rollout, cx: &AlertContext<'_>) -> Vec<Alert> {
    let mut out = Vec::new();
    let rolling_back = r.phase == Phase::RollingBack
        || (r.phase == Phase::Failed && r.rollback_decided)
        || rollback_recent(r, cx.now, cx.rollback_keep_firing_for);
    let regressed = r.verify.as_ref().and_then(|v| v.failed());
    if let Some((after, result)) = regressed
        && regression_recent(r, cx.now, cx.rollback_keep_firing_for)
    {
        let numbers: Vec<String> = result
            .metrics
            .iter()
            .map(|m| format!("{} {} → {}", m.name, fmt(m.before), fmt(m.after)))
            .collect();
        let summary = format!(
            "Promoted {} of {} regressed at T+{}: {}",
            r.version,
            r.rule,
            humantime::format_duration(Duration::from_secs(after)),
            numbers.join(", ")
        );
        let reason = r.reason.clone().unwrap_or_default();
        out.push(alert(
            r,
            cx,
            "CanaryPostPromotionRegression",
            "critical",
            None,
            summary,
            reason,
        ));
    }
    // A revert after a regression is announced by the regression alert above.
    if r.rollback_decided && rolling_back && regressed.is_none() {
        let check = rollback_check(r);
        let reason = r.reason.clone().unwrap_or_default();
        let summary = match check {
            Some(c) => format!(
                "Canary {} of {} rolled back: {} {}",
                r.version,
                r.rule,
                c.metric,
                numbers(c)
            ),
            None => format!("Canary {} of {} rolled back: {reason}", r.version, r.rule),
        };
        out.push(alert(
            r,
            cx,
            "CanaryRollback",
            "critical",
            check,
            summary,
            reason,
        ));
    }
    if r.rollback_undelivered() {
        let reason = r.reason.clone().unwrap_or_default();
        let summary = format!(
            "Rollback of canary {} of {} not delivered: the canary may still take traffic",
            r.version, r.rule
        );
        out.push(alert(
            r,
            cx,
            "CanaryRollbackUndelivered",
            "critical",
            None,
            summary,
            reason,
        ));
    }
    if r.phase.is_watching() && !r.rollback_decided {
        for c in r.last_tick.iter().flat_map(|t| &t.checks) {
            if c.verdict == Verdict::Warn {
                let summary = format!(
                    "Canary {} of {}: {} in its warning band {}",
                    r.version,
                    r.rule,
                    c.metric,
                    numbers(c)
                );
                out.push(alert(
                    r,
                    cx,
                    "CanaryCheckWarning",
                    "warning",
                    Some(c),
                    summary,
                    c.reason.clone(),
                ));
            }
        }
    }
    traffic_alerts(r, cx, &mut out);
    let waited = (cx.now - cx.phase_since).to_std().unwrap_or_default();
    let nodata = r.phase == Phase::Paused && r.pause_reason == Some(PauseReason::Nodata);
    let waiting = matches!(
        r.phase,
        Phase::Paused | Phase::WaitingWindow | Phase::WaitingApproval
    );
    // Held for readiness: progressing on paper, waiting in fact.
    let held = r
        .readiness_held_since
        .filter(|_| !r.phase.is_terminal() && !r.rollback_decided)
        .map(|since| (cx.now - since).to_std().unwrap_or_default())
        .filter(|held| *held >= cx.stall_after);
    if nodata || (waiting && waited >= cx.stall_after) || held.is_some() {
        let why = if nodata {
            r.reason.clone().unwrap_or_else(|| "no data".into())
        } else if let (Some(held), false) = (held, waiting) {
            format!(
                "held at step {} for readiness for {} (limit {}): {}",
                r.step + 1,
                humantime::format_duration(Duration::from_secs(held.as_secs())),
                humantime::format_duration(cx.stall_after),
                r.reason.as_deref().unwrap_or("readiness failed")
            )
        } else {
            format!(
                "{} for {} (limit {})",
                r.phase.as_str(),
                humantime::format_duration(Duration::from_secs(waited.as_secs())),
                humantime::format_duration(cx.stall_after)
            )
        };
        let summary = format!("Rollout of {} {} stalled: {why}", r.rule, r.version);
        out.push(alert(r, cx, "CanaryStalled", "warning", None, summary, why));
    }
    out
}

/// The traffic provider's findings and the migration a human must decide on:
/// `CanaryTrafficDrift` (weights changed behind canaryd's back; paused), `CanaryTrafficRefused`
/// (the provider refused a weight; paused at the old one) and `CanaryRestoreDecisionNeeded`
/// (a non-reversible migration was rolled back past: downgrade or restore, seed 001 §5).
fn traffic_alerts(r: &Rollout, cx: &AlertContext<'_>, out: &mut Vec<Alert>) {
    let reason = r.reason.clone().unwrap_or_default();
    if r.phase == Phase::Paused {
        let (name, severity, what) = match r.pause_reason {
            Some(PauseReason::Drift) => ("CanaryTrafficDrift", "critical", "traffic drift"),
            Some(PauseReason::Traffic) => (
                "CanaryTrafficRefused",
                "warning",
                "traffic provider refused a weight",
            ),
            _ => return,
        };
        let summary = format!("Rollout of {} {} paused: {what}", r.rule, r.version);
        out.push(alert(r, cx, name, severity, None, summary, reason));
        return;
    }
    if restore_decision_recent(r, cx.now, cx.rollback_keep_firing_for) {
        let path = r.migration_path.clone().unwrap_or_default();
        let summary = format!(
            "Canary {} of {} rolled back past a migration that cannot simply be undone: \
             decide between downgrade and restore",
            r.version, r.rule
        );
        out.push(alert(
            r,
            cx,
            "CanaryRestoreDecisionNeeded",
            "critical",
            None,
            summary,
            path,
        ));
    }
}

/// The check behind a metric rollback: the machine words its reason `"{metric}: ..."`, and
/// keeps it after `"(rollback was decided because: "` when the hook failed, so the alert keeps
/// its labels (and stays one alert) through `failed` and a late delivery.
fn rollback_check(r: &Rollout) -> Option<&Check> {
    let reason = r.reason.as_deref()?;
    let decided = reason
        .split_once(DECIDED_BECAUSE)
        .map_or(reason, |(_, why)| why);
    r.last_tick
        .iter()
        .flat_map(|t| &t.checks)
        .find(|c| decided.starts_with(&format!("{}:", c.metric)))
}

/// How `rollout::machine` quotes the original reason of a rollback whose hook failed.
const DECIDED_BECAUSE: &str = "(rollback was decided because: ";

fn fmt(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |v| {
        format!("{v:.6}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    })
}

fn numbers(c: &Check) -> String {
    let threshold = c
        .threshold
        .map(|t| {
            format!(
                "{} {}",
                serde_json::to_value(t.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default(),
                fmt(Some(t.value))
            )
        })
        .unwrap_or_else(|| "none".into());
    format!(
        "(canary {}, baseline {}, threshold {threshold})",
        fmt(c.canary),
        fmt(c.baseline)
    )
}

fn alert(
    r: &Rollout,
    cx: &AlertContext<'_>,
    name: &str,
    severity: &str,
    check: Option<&Check>,
    summary: String,
    reason: String,
) -> Alert {
    let mut labels = BTreeMap::new();
    for (k, v) in [
        ("alertname", name),
        ("severity", severity),
        ("rollout", &r.id),
        ("rule", &r.rule),
        ("version", &r.version),
    ] {
        labels.insert(k.to_string(), v.to_string());
    }
    labels.insert("step".into(), r.step.to_string());
    let mut annotations = BTreeMap::new();
    if let Some(c) = check {
        labels.insert("metric".into(), c.metric.to_string());
        annotations.insert("value".into(), fmt(c.canary));
        annotations.insert("baseline".into(), fmt(c.baseline));
        if let Some(t) = c.threshold {
            annotations.insert("threshold".into(), fmt(Some(t.value)));
        }
    }
    annotations.insert(
        "description".into(),
        format!(
            "{summary}. Rollout {} at step {} ({} % traffic), phase {}. {reason}",
            r.id,
            r.step,
            r.weight,
            r.phase.as_str()
        ),
    );
    annotations.insert("summary".into(), summary);
    Alert {
        labels,
        annotations,
        starts_at: cx.now,
        ends_at: None,
        generator_url: format!("{}/api/v1/rollouts/{}", cx.external_url, r.id),
    }
}
