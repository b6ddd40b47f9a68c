//! The I/O half of a checkpoint after promotion: each window metric of the rule, rendered for
//! the stable service (the `baseline` selector, which runs the promoted version now), averaged
//! over one analysis window before the rollout started and one ending now. The pure
//! comparison is [`crate::rollout::verify::judge_metric`].
//!
//! Sequential metrics are not checkpointed: their evidence compares two groups at once, and
//! after promotion there is only one.

use std::time::SystemTime;

use chrono::{DateTime, Utc};

use crate::judge::observation::Series;
use crate::rollout::Rollout;
use crate::rollout::verify::{CheckpointResult, judge_metric};
use crate::rules::schema::MetricKind;
use crate::rules::{Group, QueryContext, Rule};
use crate::source::PrometheusSource;

/// Mean of the finite points, `None` when there are none (or the query failed).
pub fn mean(s: &Series) -> Option<f64> {
    let Series::Points { points } = s else {
        return None;
    };
    let finite: Vec<f64> = points
        .iter()
        .map(|p| p.value)
        .filter(|v| v.is_finite())
        .collect();
    (!finite.is_empty()).then(|| finite.iter().sum::<f64>() / finite.len() as f64)
}

/// Measures one checkpoint of `r` at `now`.
pub async fn measure(
    source: &PrometheusSource,
    rule: &Rule,
    r: &Rollout,
    now: DateTime<Utc>,
) -> CheckpointResult {
    let ctx = QueryContext {
        rollout: &r.id,
        version: &r.version,
    };
    let (window, step) = (rule.spec.analysis.window, rule.spec.analysis.step);
    let started = SystemTime::from(r.created_at);
    let at = SystemTime::from(now);
    let mut metrics = Vec::new();
    for m in rule.metrics() {
        let MetricKind::Window(q) = m.kind() else {
            continue;
        };
        let (before, after) = match rule.render(q, Group::Baseline, &ctx) {
            Ok(query) => {
                let (b, a) = tokio::join!(
                    source.range_series(&query, started, window, step),
                    source.range_series(&query, at, window, step)
                );
                (mean(&b), mean(&a))
            }
            Err(_) => (None, None),
        };
        metrics.push(judge_metric(m, before, after));
    }
    CheckpointResult {
        at: now,
        passed: metrics.iter().all(|m| m.passed),
        metrics,
    }
}
