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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{MetricInput, judge_tick};
    use crate::judge::Observation;
    use crate::rules::schema::{AnalysisSpec, MetricSpec};

    fn metric(yaml: &str) -> MetricSpec {
        serde_saphyr::from_str(yaml).expect("metric")
    }

    fn window(v: f64) -> MetricInput {
        let o = || Observation::from_values([v; 4]);
        MetricInput::Window(o(), o())
    }

    /// Each check carries its own metric's name, and the rule's copy of it: every tick of every
    /// rollout on this rule points at one name instead of a string per check.
    #[test]
    fn checks_carry_their_own_metrics_name_shared_with_the_rule() {
        let specs = [
            metric("name: error_rate\nquery: x\nrollback_above: 0.05\n"),
            metric("name: p95_latency\nquery: y\nwarn_above: 5\n"),
        ];
        let inputs = [window(0.01), window(9.0)];
        let a = AnalysisSpec::default();
        let (first, _) = judge_tick(&specs, &inputs, &a);
        let (second, _) = judge_tick(&specs, &inputs, &a);
        let names: Vec<&str> = first.iter().map(|c| &*c.metric).collect();
        assert_eq!(names, ["error_rate", "p95_latency"]);
        assert!(first[1].reason.contains("above"), "{}", first[1].reason);
        for (x, y) in first.iter().zip(&second) {
            assert!(Arc::ptr_eq(&x.metric, &y.metric), "{} copied", x.metric);
        }
    }

    /// A metric renamed after its name was first shared (a copy of a shared spec changed in
    /// place) gives its new name, never the one it was shared under.
    #[test]
    fn a_renamed_metric_never_gives_its_old_shared_name() {
        let mut m = metric("name: error_rate\nquery: x\n");
        assert_eq!(&*m.shared_name(), "error_rate");
        m.name = "errors_5xx".into();
        assert_eq!(&*m.shared_name(), "errors_5xx");
    }
}
