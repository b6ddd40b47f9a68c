//! Kayenta-style score: the weighted share of healthy metrics, 0–100.

use serde::{Deserialize, Serialize};

use super::checks::Check;
use crate::rules::schema::ScoreSpec;

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
    pub reason: String,
}

/// Scores one tick. `weights` pairs with `checks` by index. A critical metric that is not
/// healthy forces 0: no average of good metrics may hide it. No-data counts as not healthy.
pub fn score(checks: &[Check], weights: &[f64], cutoffs: &ScoreSpec) -> Score {
    if let Some(c) = checks.iter().find(|c| c.critical && !c.is_healthy()) {
        return Score {
            value: 0.0,
            outcome: ScoreOutcome::Fail,
            reason: format!("critical metric {} is {:?}", c.metric, c.verdict).to_lowercase(),
        };
    }
    let total: f64 = weights.iter().sum();
    let healthy: f64 = checks
        .iter()
        .zip(weights)
        .filter(|(c, _)| c.is_healthy())
        .map(|(_, w)| w)
        .sum();
    let value = if total > 0.0 {
        100.0 * healthy / total
    } else {
        0.0
    };
    let outcome = if value >= cutoffs.pass {
        ScoreOutcome::Pass
    } else if value >= cutoffs.marginal {
        ScoreOutcome::Marginal
    } else {
        ScoreOutcome::Fail
    };
    let unhealthy: Vec<&str> = checks
        .iter()
        .filter(|c| !c.is_healthy())
        .map(|c| c.metric.as_str())
        .collect();
    let reason = if unhealthy.is_empty() {
        "every metric healthy".to_string()
    } else {
        format!("not healthy: {}", unhealthy.join(", "))
    };
    Score {
        value,
        outcome,
        reason,
    }
}
