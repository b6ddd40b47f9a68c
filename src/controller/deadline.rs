//! Every tick has a deadline: the smaller of the analysis interval and the Prometheus timeout.
//! The scheduler's slot holds it ([`super::gather::answer_slot`]: a slot ends by the smallest
//! deadline of its rollouts).
//!
//! Each query still running just before it is given up alone (`source::tick_deadline`): its
//! metric is `error`, the metrics that answered are judged. A tick the slot-wide safety net cuts
//! is judged `error` on every metric ([`missed`]) — no data, never a pass — so a hanging
//! Prometheus cannot stretch one tick over many intervals, and what the tick would have said had
//! it finished late is never acted on.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use crate::judge::{MetricInput, judge_tick};
use crate::rollout::{Rollout, Tick};
use crate::rules::Rule;
use crate::verdict::{Check, Verdict};

/// The time one tick may take: a tick must end before the next one is due, and no tick waits
/// for Prometheus longer than one query may.
pub(super) fn tick_deadline(interval: Duration, prometheus_timeout: Duration) -> Duration {
    interval.min(prometheus_timeout)
}

/// Why a tick with no answer from its slot is missed.
pub(super) fn no_answer(deadline: Duration) -> String {
    format!(
        "no answer from Prometheus within the tick's deadline of {} \
         (the smaller of analysis.interval and the Prometheus timeout)",
        humantime::format_duration(deadline)
    )
}

/// The tick of an analysis that missed its deadline, for `reason`: every metric `error`,
/// scored like any tick, so it counts toward `nodata_limit` and never toward promotion.
/// Sequential states are left out, so the running tests carry on from their last real
/// observation.
pub(super) fn missed(rule: &Rule, rollout: &Rollout, end: SystemTime, reason: &str) -> Tick {
    let inputs: Vec<MetricInput> = rule
        .metrics()
        .map(|m| MetricInput::Judged(Box::new(Check::new(m, Verdict::Error, reason.to_string()))))
        .collect();
    let (checks, score) = judge_tick(rule.metrics(), &inputs, &rule.spec.analysis);
    Tick {
        at: end.into(),
        step: rollout.step,
        checks,
        score,
        sequential: BTreeMap::new(),
        // No samples were judged, so this tick can never count toward advancing a step, and no
        // counter was seen to move.
        samples_since: None,
        counters_moved: BTreeMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::ScoreOutcome;

    const RULE: &str = r#"name: api
selector:
  canary: 'track="canary"'
  baseline: 'track="baseline"'
steps:
  - { weight: 10, hold: 1m }
  - { weight: 100 }
metrics:
  - name: error_rate
    query: sum(rate(errors{ {{selector}} }[1m]))
    rollback_above: 0.05
    critical: true
  - name: latency
    query: sum(rate(latency{ {{selector}} }[1m]))
    rollback_above: 2
hooks: {}
"#;

    #[test]
    fn a_missed_deadline_is_an_error_on_every_metric_and_never_a_pass() {
        let rule = crate::rules::parse_rule(std::path::Path::new("api.yaml"), RULE)
            .unwrap_or_else(|e| panic!("{e:?}"));
        let rollout = Rollout::new("ro-1".into(), "api".into(), "v2".into(), chrono::Utc::now());
        let t = missed(
            &rule,
            &rollout,
            SystemTime::now(),
            &no_answer(Duration::from_millis(1500)),
        );
        assert_eq!(t.checks.len(), 2);
        for c in &t.checks {
            assert_eq!(c.verdict, Verdict::Error, "{c:?}");
            assert!(c.reason.contains("deadline of 1s 500ms"), "{}", c.reason);
            assert!(
                !c.rolls_back_now(),
                "a slow Prometheus is no evidence: {c:?}"
            );
        }
        assert!(!t.all_healthy());
        assert_ne!(t.score.outcome, ScoreOutcome::Pass);
    }

    #[test]
    fn the_deadline_is_the_smaller_of_interval_and_prometheus_timeout() {
        let s = Duration::from_secs;
        assert_eq!(tick_deadline(s(30), s(10)), s(10));
        assert_eq!(tick_deadline(s(1), s(2)), s(1));
    }
}
