//! The first-cut judge as a table: absolute lines, ratio to the baseline, no-data and errors.
//! Every verdict must carry the numbers that explain it.

use canaryd::judge::{Observation, ThresholdKind, Verdict, judge_metric};
use canaryd::rules::schema::MetricSpec;

fn error_rate() -> MetricSpec {
    serde_saphyr::from_str(
        "name: error_rate\nquery: x\nrollback_above: 0.05\nwarn_above: 0.01\nmax_ratio: 2.0\ncritical: true\n",
    )
    .unwrap()
}

fn obs(v: &[f64]) -> Observation {
    Observation::from_values(v.iter().copied())
}

#[test]
fn verdict_table() {
    let m = error_rate();
    let base = obs(&[0.004, 0.005, 0.005, 0.006]);
    // (canary, baseline, verdict, threshold kind)
    let cases: Vec<(Observation, Observation, Verdict, Option<ThresholdKind>)> = vec![
        (
            obs(&[0.004, 0.005, 0.006, 0.005]),
            base.clone(),
            Verdict::Pass,
            Some(ThresholdKind::RollbackAbove),
        ),
        (
            obs(&[0.005, 0.005, 0.005, 0.2]),
            base.clone(),
            Verdict::Fail,
            Some(ThresholdKind::RollbackAbove),
        ),
        (
            obs(&[0.02, 0.02, 0.02, 0.02]),
            base.clone(),
            Verdict::Fail,
            Some(ThresholdKind::MaxRatio),
        ),
        (
            obs(&[0.005, 0.005, 0.005, 0.012]),
            obs(&[0.008, 0.008, 0.008, 0.008]),
            Verdict::Warn,
            Some(ThresholdKind::WarnAbove),
        ),
        (obs(&[]), base.clone(), Verdict::Nodata, None),
        (
            obs(&[f64::NAN, f64::NAN, f64::NAN]),
            base.clone(),
            Verdict::Nodata,
            None,
        ),
        (obs(&[0.005, 0.005]), base.clone(), Verdict::Nodata, None),
        (obs(&[0.005; 4]), obs(&[]), Verdict::Nodata, None),
        (
            Observation::Ambiguous { series: 3 },
            base.clone(),
            Verdict::Error,
            None,
        ),
        (
            Observation::Failed {
                message: "connection refused".into(),
            },
            base.clone(),
            Verdict::Error,
            None,
        ),
        (
            obs(&[0.005; 4]),
            Observation::Failed {
                message: "timeout".into(),
            },
            Verdict::Error,
            None,
        ),
    ];
    for (i, (canary, baseline, verdict, kind)) in cases.into_iter().enumerate() {
        let c = judge_metric(&m, &canary, &baseline, 3);
        assert_eq!(c.verdict, verdict, "case {i}: {}", c.reason);
        assert_eq!(c.threshold.map(|t| t.kind), kind, "case {i}: {}", c.reason);
        assert!(
            !c.reason.is_empty(),
            "case {i}: a verdict without an explanation"
        );
    }
}

#[test]
fn absolute_breach_reports_value_baseline_and_threshold() {
    let c = judge_metric(
        &error_rate(),
        &obs(&[0.01, 0.01, 0.2]),
        &obs(&[0.005, 0.005, 0.005]),
        3,
    );
    assert_eq!(c.verdict, Verdict::Fail);
    assert_eq!(c.canary, Some(0.2));
    assert_eq!(c.baseline, Some(0.005));
    assert_eq!(c.threshold.map(|t| t.value), Some(0.05));
    assert!(c.rolls_back_now());
    assert!(
        c.reason.contains("0.2") && c.reason.contains("0.05"),
        "{}",
        c.reason
    );
}

#[test]
fn ratio_uses_window_means_and_reports_them() {
    let mut m = error_rate();
    m.critical = false;
    let c = judge_metric(
        &m,
        &obs(&[0.01, 0.03, 0.02]),
        &obs(&[0.005, 0.005, 0.005]),
        3,
    );
    assert_eq!(c.verdict, Verdict::Fail);
    assert_eq!(c.ratio.map(|r| (r * 100.0).round() / 100.0), Some(4.0));
    assert_eq!(c.canary, Some(0.02));
    assert!(
        !c.rolls_back_now(),
        "a ratio failure waits for failure_limit unless critical"
    );
}

#[test]
fn zero_baseline_does_not_fail_on_an_infinite_ratio() {
    let mut m = error_rate();
    m.critical = false;
    let c = judge_metric(&m, &obs(&[0.001, 0.001, 0.001]), &obs(&[0.0, 0.0, 0.0]), 3);
    assert_eq!(c.verdict, Verdict::Pass, "{}", c.reason);
    assert!(c.reason.contains("ratio undefined"));
}

#[test]
fn decrease_direction_fails_when_canary_drops() {
    let mut m: MetricSpec =
        serde_saphyr::from_str("name: throughput\nquery: x\ndirection: decrease\nmax_ratio: 2\n")
            .unwrap();
    let c = judge_metric(&m, &obs(&[10.0, 10.0, 10.0]), &obs(&[50.0, 50.0, 50.0]), 3);
    assert_eq!(c.verdict, Verdict::Fail);
    m.direction = canaryd::judge::Direction::Increase;
    let c = judge_metric(&m, &obs(&[10.0, 10.0, 10.0]), &obs(&[50.0, 50.0, 50.0]), 3);
    assert_eq!(c.verdict, Verdict::Pass);
}
