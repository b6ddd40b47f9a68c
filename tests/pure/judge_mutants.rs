//! The judge's edges that `cargo mutants` found no test for (BENCHMARKS.md, "Mutation
//! testing"): the score's cutoffs at their exact values and the words that explain a score.
//! Pure: no servers.

use canaryd::judge::{ScoreOutcome, Scored, score};
use canaryd::rules::schema::ScoreSpec;
use canaryd::verdict::{Check, Verdict};

/// (name, verdict, critical, group, weight)
type Metric = (&'static str, Verdict, bool, &'static str, f64);

fn scored(metrics: &[Metric]) -> canaryd::judge::Score {
    let checks: Vec<Check> = metrics
        .iter()
        .map(|(n, v, critical, _, _)| Check {
            critical: *critical,
            ..Check::named(*n, *v, "")
        })
        .collect();
    let scored: Vec<Scored<'_>> = metrics
        .iter()
        .zip(&checks)
        .map(|((_, _, _, g, w), c)| Scored {
            check: c,
            group: g,
            weight: *w,
        })
        .collect();
    score(&scored, &ScoreSpec::default())
}

#[test]
fn a_score_exactly_at_the_pass_cutoff_passes() {
    // 19 of 20 weight healthy: exactly 95, the default `pass`.
    let s = scored(&[
        ("a", Verdict::Pass, false, "a", 19.0),
        ("b", Verdict::Fail, false, "b", 1.0),
    ]);
    assert_eq!(s.value, 95.0);
    assert_eq!(s.outcome, ScoreOutcome::Pass, "{}", s.reason);
    assert_eq!(s.reason, "not healthy: b");
}

#[test]
fn each_forced_zero_says_which_rule_forced_it() {
    use Verdict::*;
    let rows: [(&[Metric], &str, bool); 6] = [
        (
            &[
                ("err", Fail, true, "e", 1.0),
                ("p95", Pass, false, "l", 1.0),
            ],
            "critical metric err is fail",
            false,
        ),
        (
            &[
                ("err", Warn, true, "e", 1.0),
                ("p95", Pass, false, "l", 1.0),
            ],
            "every metric healthy",
            false,
        ),
        (
            &[("a", Nodata, false, "a", 1.0), ("b", Pass, false, "b", 1.0)],
            "no data for 1 of 2 metrics: a",
            true,
        ),
        (
            &[
                ("a", Error, false, "a", 1.0),
                ("b", Nodata, false, "b", 1.0),
                ("c", Pass, false, "c", 1.0),
            ],
            "no data for 2 of 3 metrics: a, b",
            true,
        ),
        (
            &[
                ("a", Nodata, true, "a", 1.0),
                ("b", Pass, false, "b", 1.0),
                ("c", Pass, false, "c", 1.0),
            ],
            "critical metric a has no data",
            true,
        ),
        (&[], "no data for 0 of 0 metrics: ", true),
    ];
    for (metrics, reason, nodata) in rows {
        let s = scored(metrics);
        assert_eq!(s.reason, reason, "{metrics:?}");
        assert_eq!(s.nodata, nodata, "{metrics:?}");
    }
}

/// Weights may be 0 (validate allows any non-negative weight): when every judged metric weighs
/// 0 the score is 0, a number, never 0/0 (NaN has no JSON form and compares false everywhere).
#[test]
fn a_score_whose_metrics_all_weigh_nothing_is_zero_not_nan() {
    let s = scored(&[
        ("a", Verdict::Pass, false, "a", 0.0),
        ("b", Verdict::Pass, false, "b", 0.0),
    ]);
    assert_eq!(s.value, 0.0, "{}", s.reason);
    assert_eq!(s.outcome, ScoreOutcome::Fail);
}

fn metric(yaml: &str) -> canaryd::rules::schema::MetricSpec {
    serde_saphyr::from_str(yaml).unwrap()
}

fn obs(v: &[f64]) -> canaryd::judge::Observation {
    canaryd::judge::Observation::from_values(v.iter().copied())
}

/// Both absolute lines are strict: a canary exactly on the line is not beyond it, a hair past
/// it is; `rollback_below` (availability, `up`) mirrors `rollback_above`.
#[test]
fn absolute_lines_are_strict_on_both_sides() {
    use canaryd::judge::judge_metric;
    use canaryd::rules::schema::AnalysisSpec;
    use canaryd::verdict::ThresholdKind;
    let a = AnalysisSpec::default();
    let base = obs(&[1.0; 4]);
    let below = metric("name: up\nquery: x\nrollback_below: 1\n");
    let above = metric("name: err\nquery: x\nrollback_above: 0.05\n");
    // (spec, latest value, verdict, threshold kind)
    let rows = [
        (&below, 1.0, Verdict::Pass),
        (&below, 0.99, Verdict::Fail),
        (&below, 2.0, Verdict::Pass),
        (&above, 0.05, Verdict::Pass),
        (&above, 0.0501, Verdict::Fail),
        (&above, 0.01, Verdict::Pass),
    ];
    for (spec, latest, verdict) in rows {
        let c = judge_metric(spec, &obs(&[latest; 4]), &base, &a);
        assert_eq!(
            c.verdict, verdict,
            "{} at {latest}: {}",
            spec.name, c.reason
        );
        let kind = if spec.name == "up" {
            ThresholdKind::RollbackBelow
        } else {
            ThresholdKind::RollbackAbove
        };
        assert_eq!(c.threshold.map(|t| t.kind), Some(kind), "{}", c.reason);
        if verdict == Verdict::Fail {
            assert!(c.rolls_back_now(), "{}", c.reason);
        }
    }
}

/// No data says which kind: nothing came back, or points came back and every one was NaN.
#[test]
fn an_empty_canary_says_whether_points_were_dropped() {
    use canaryd::judge::{Observation, judge_metric};
    use canaryd::rules::schema::AnalysisSpec;
    let spec = metric("name: err\nquery: x\nrollback_above: 0.05\n");
    let a = AnalysisSpec::default();
    let base = obs(&[0.01; 4]);
    for (canary, reason) in [
        (
            Observation::Empty { dropped: 0 },
            "canary: query returned no series",
        ),
        (
            Observation::Empty { dropped: 1 },
            "canary: all 1 points were NaN or infinite",
        ),
        (
            Observation::Empty { dropped: 3 },
            "canary: all 3 points were NaN or infinite",
        ),
    ] {
        let c = judge_metric(&spec, &canary, &base, &a);
        assert_eq!((c.verdict, c.reason.as_str()), (Verdict::Nodata, reason));
    }
}
