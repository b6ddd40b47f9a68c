//! Which alerts a rollout has right now, as plain data: `CanaryRollback`, `CanaryCheckWarning`
//! and `CanaryStalled`. Pure (the caller passes `now` and how long the rollout has waited), so
//! the publisher in [`super::alertmanager`] only diffs and delivers.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::judge::{Check, Verdict};
use crate::rollout::{PauseReason, Phase, Rollout};

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
    /// `{external_url}`; alerts link to the rollout's API page below it.
    pub external_url: &'a str,
}

/// Every alert that should be firing for `r`. Terminal rollouts have none, except a rollback
/// whose hook could not be delivered: the canary may still take traffic, so that one stays.
pub fn alerts_for(r: &Rollout, cx: &AlertContext<'_>) -> Vec<Alert> {
    let mut out = Vec::new();
    let rolling_back =
        r.phase == Phase::RollingBack || (r.phase == Phase::Failed && r.rollback_decided);
    if r.rollback_decided && rolling_back {
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
    let waited = (cx.now - cx.phase_since).to_std().unwrap_or_default();
    let nodata = r.phase == Phase::Paused && r.pause_reason == Some(PauseReason::Nodata);
    let waiting = matches!(
        r.phase,
        Phase::Paused | Phase::WaitingWindow | Phase::WaitingApproval
    );
    if nodata || (waiting && waited >= cx.stall_after) {
        let why = if nodata {
            r.reason.clone().unwrap_or_else(|| "no data".into())
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

/// The check behind a metric rollback: the machine words its reason `"{metric}: ..."`.
fn rollback_check(r: &Rollout) -> Option<&Check> {
    let reason = r.reason.as_deref()?;
    r.last_tick
        .iter()
        .flat_map(|t| &t.checks)
        .find(|c| reason.starts_with(&format!("{}:", c.metric)))
}

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
        labels.insert("metric".into(), c.metric.clone());
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
