//! Kayenta-style score: metrics are scored within their group, groups are weighted, 0–100.
//!
//! Per group: the share of its judged metrics that are healthy. Overall: the groups' shares
//! weighted by the sum of their metrics' `weight`. Metrics in no-data or error are left out of
//! their group (they could not be judged), muted metrics are left out entirely, and two rules
//! force the score to 0 so no average can hide them: a critical metric that is not healthy, and
//! half or more of the metrics without data.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::rules::schema::ScoreSpec;
use crate::verdict::{Check, Verdict};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScoreOutcome {
    Pass,
    Marginal,
    Fail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Score {
    pub value: f64,
    pub outcome: ScoreOutcome,
    /// True when the score is 0 only because data was missing: such a tick pauses a rollout,
    /// it must not count as a failing one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub nodata: bool,
    pub reason: String,
}

/// One metric's place in the score: its group and weight.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored<'a> {
    pub check: &'a Check,
    pub group: &'a str,
    pub weight: f64,
}

fn no_data(c: &Check) -> bool {
    matches!(c.verdict, Verdict::Nodata | Verdict::Error)
}

/// Scores one tick.
pub fn score(metrics: &[Scored<'_>], cutoffs: &ScoreSpec) -> Score {
    let live: Vec<&Scored<'_>> = metrics.iter().filter(|m| !m.check.muted).collect();
    let outcome_of = |value: f64| {
        if value >= cutoffs.pass {
            ScoreOutcome::Pass
        } else if value >= cutoffs.marginal {
            ScoreOutcome::Marginal
        } else {
            ScoreOutcome::Fail
        }
    };
    let zero = |reason: String, nodata: bool| Score {
        value: 0.0,
        outcome: ScoreOutcome::Fail,
        nodata,
        reason,
    };
    if let Some(m) = live
        .iter()
        .find(|m| m.check.critical && !m.check.is_healthy() && !no_data(m.check))
    {
        return zero(
            format!(
                "critical metric {} is {}",
                m.check.metric,
                verdict_word(m.check.verdict)
            ),
            false,
        );
    }
    let missing: Vec<&str> = live
        .iter()
        .filter(|m| no_data(m.check))
        .map(|m| &*m.check.metric)
        .collect();
    if live.is_empty() || missing.len() * 2 >= live.len() {
        return zero(
            format!(
                "no data for {} of {} metrics: {}",
                missing.len(),
                live.len(),
                missing.join(", ")
            ),
            true,
        );
    }
    if let Some(m) = live.iter().find(|m| m.check.critical && no_data(m.check)) {
        return zero(
            format!("critical metric {} has no data", m.check.metric),
            true,
        );
    }
    // group -> (healthy, judged, weight)
    let mut groups: BTreeMap<&str, (f64, f64, f64)> = BTreeMap::new();
    for m in &live {
        let g = groups.entry(m.group).or_insert((0.0, 0.0, 0.0));
        g.2 += m.weight;
        if !no_data(m.check) {
            g.1 += 1.0;
            if m.check.is_healthy() {
                g.0 += 1.0;
            }
        }
    }
    let (mut sum, mut weights) = (0.0, 0.0);
    for (healthy, judged, weight) in groups.values() {
        if *judged > 0.0 {
            sum += weight * healthy / judged;
            weights += weight;
        }
    }
    let value = if weights > 0.0 {
        100.0 * sum / weights
    } else {
        0.0
    };
    let unhealthy: Vec<&str> = live
        .iter()
        .filter(|m| !m.check.is_healthy())
        .map(|m| &*m.check.metric)
        .collect();
    let reason = if unhealthy.is_empty() {
        "every metric healthy".to_string()
    } else {
        format!("not healthy: {}", unhealthy.join(", "))
    };
    Score {
        value,
        outcome: outcome_of(value),
        nodata: false,
        reason,
    }
}

fn verdict_word(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "pass",
        Verdict::Warn => "warn",
        Verdict::Fail => "fail",
        Verdict::Nodata => "nodata",
        Verdict::Error => "error",
    }
}
