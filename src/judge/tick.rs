//! One analysis round: every metric judged and scored together. Shared by the controller,
//! `canaryd judge` and `canaryd analyze`, so all three decide alike.

use super::Observation;
use super::checks::judge_metric;
use super::score::{Score, Scored, score};
use crate::rules::schema::{AnalysisSpec, MetricSpec};
use crate::verdict::Check;

/// What one metric brought to the tick.
#[derive(Debug, Clone)]
pub enum MetricInput {
    /// A window metric's canary and baseline observations, still to judge.
    Window(Observation, Observation),
    /// A sequential metric, already judged against its running state.
    Judged(Box<Check>),
}

/// Judges `metrics` with their inputs, pairwise by index, and scores the tick.
pub fn judge_tick<'a>(
    metrics: impl IntoIterator<Item = &'a MetricSpec>,
    inputs: &[MetricInput],
    analysis: &AnalysisSpec,
) -> (Vec<Check>, Score) {
    let metrics: Vec<&MetricSpec> = metrics.into_iter().collect();
    let mut checks: Vec<Check> = metrics
        .iter()
        .enumerate()
        .map(|(i, m)| match inputs.get(i) {
            Some(MetricInput::Window(c, b)) => judge_metric(m, c, b, analysis),
            Some(MetricInput::Judged(check)) => (**check).clone(),
            None => {
                let missing = Observation::Failed {
                    message: "no observation supplied".into(),
                };
                judge_metric(m, &missing, &missing, analysis)
            }
        })
        .collect();
    // Every live rollout keeps its last tick, so its texts are cut to their length: `format!`
    // can leave a reason nearly twice the room it needs (a failure's 56 bytes in 104; a pass's
    // usually fits).
    for c in &mut checks {
        c.reason.shrink_to_fit();
    }
    let scored: Vec<Scored<'_>> = metrics
        .iter()
        .zip(&checks)
        .map(|(m, c)| Scored {
            check: c,
            group: m.group(),
            weight: m.weight,
        })
        .collect();
    let mut s = score(&scored, &analysis.score);
    s.reason.shrink_to_fit();
    (checks, s)
}
