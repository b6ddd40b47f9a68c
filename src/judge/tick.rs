//! One analysis round: every metric's pair of observations judged and scored together. Shared
//! by the controller, `canaryd judge` and `canaryd analyze`, so all three decide alike.

use super::Observation;
use super::checks::{Check, judge_metric};
use super::score::{Score, Scored, score};
use crate::rules::schema::{AnalysisSpec, MetricSpec};

/// Judges `metrics` against their `(canary, baseline)` observations, pairwise by index.
pub fn judge_tick<'a>(
    metrics: impl IntoIterator<Item = &'a MetricSpec>,
    observations: &[(Observation, Observation)],
    analysis: &AnalysisSpec,
) -> (Vec<Check>, Score) {
    let metrics: Vec<&MetricSpec> = metrics.into_iter().collect();
    let missing = (
        Observation::Failed {
            message: "no observation supplied".into(),
        },
        Observation::Failed {
            message: "no observation supplied".into(),
        },
    );
    let checks: Vec<Check> = metrics
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let (c, b) = observations.get(i).unwrap_or(&missing);
            judge_metric(m, c, b, analysis)
        })
        .collect();
    let scored: Vec<Scored<'_>> = metrics
        .iter()
        .zip(&checks)
        .map(|(m, c)| Scored {
            check: c,
            group: m.group(),
            weight: m.weight,
        })
        .collect();
    let s = score(&scored, &analysis.score);
    (checks, s)
}
