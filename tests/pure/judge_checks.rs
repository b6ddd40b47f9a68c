//! The first-cut judge as a table: absolute lines, ratio to the baseline, no-data and errors.
//! Every verdict must carry the numbers that explain it.

use canaryd::judge::{Observation, judge_metric};
use canaryd::rules::schema::{AnalysisSpec, MetricSpec};
use canaryd::verdict::{ThresholdKind, Verdict};

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
        let c = judge_metric(&m, &canary, &baseline, &AnalysisSpec::default());
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
        &AnalysisSpec::default(),
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
        &AnalysisSpec::default(),
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
    let c = judge_metric(
        &m,
        &obs(&[0.001, 0.001, 0.001]),
        &obs(&[0.0, 0.0, 0.0]),
        &AnalysisSpec::default(),
    );
    assert_eq!(c.verdict, Verdict::Pass, "{}", c.reason);
    assert!(c.reason.contains("ratio undefined"));
}

#[test]
fn decrease_direction_fails_when_canary_drops() {
    let mut m: MetricSpec =
        serde_saphyr::from_str("name: throughput\nquery: x\ndirection: decrease\nmax_ratio: 2\n")
            .unwrap();
    let c = judge_metric(
        &m,
        &obs(&[10.0, 10.0, 10.0]),
        &obs(&[50.0, 50.0, 50.0]),
        &AnalysisSpec::default(),
    );
    assert_eq!(c.verdict, Verdict::Fail);
    m.direction = canaryd::verdict::Direction::Increase;
    let c = judge_metric(
        &m,
        &obs(&[10.0, 10.0, 10.0]),
        &obs(&[50.0, 50.0, 50.0]),
        &AnalysisSpec::default(),
    );
    assert_eq!(c.verdict, Verdict::Pass);
}

fn gauge(yaml: &str) -> MetricSpec {
    serde_saphyr::from_str(yaml).unwrap()
}

/// 15 s steps, so `for: 1m` needs the last four samples beyond the line.
fn fifteen_second_steps() -> AnalysisSpec {
    AnalysisSpec {
        step: std::time::Duration::from_secs(15),
        ..AnalysisSpec::default()
    }
}

#[test]
fn gauge_breach_rolls_back_only_after_it_held_for_its_duration() {
    let pool = gauge("name: db_pool\nquery: x\nrollback_above: 0.95\nwarn_above: 0.9\nfor: 1m\n");
    let a = fifteen_second_steps();
    let spike = judge_metric(
        &pool,
        &obs(&[0.5, 0.5, 0.5, 0.97, 0.98]),
        &obs(&[0.5; 5]),
        &a,
    );
    assert_eq!(spike.verdict, Verdict::Warn, "{}", spike.reason);
    assert!(
        spike.reason.contains("2 of the 4 samples"),
        "{}",
        spike.reason
    );
    assert!(!spike.rolls_back_now());
    let held = judge_metric(
        &pool,
        &obs(&[0.5, 0.96, 0.97, 0.98, 0.99]),
        &obs(&[0.5; 5]),
        &a,
    );
    assert_eq!(held.verdict, Verdict::Fail, "{}", held.reason);
    assert!(held.rolls_back_now());
}

#[test]
fn canary_minus_baseline_difference_fails_when_it_persists() {
    let cpu = gauge("name: cpu\nquery: x\nrollback_above: 0.9\nmax_difference: 0.2\nfor: 30s\n");
    let a = fifteen_second_steps();
    let base = obs(&[0.3, 0.3, 0.3, 0.3]);
    let blip = judge_metric(&cpu, &obs(&[0.3, 0.3, 0.3, 0.6]), &base, &a);
    assert_eq!(
        blip.verdict,
        Verdict::Pass,
        "one sample is not a trend: {}",
        blip.reason
    );
    let lasting = judge_metric(&cpu, &obs(&[0.3, 0.3, 0.6, 0.65]), &base, &a);
    assert_eq!(lasting.verdict, Verdict::Fail, "{}", lasting.reason);
    assert_eq!(
        lasting.threshold.map(|t| t.kind),
        Some(ThresholdKind::MaxDifference)
    );
    assert!(
        !lasting.rolls_back_now(),
        "a difference waits for failure_limit unless critical"
    );
}

fn p95(extra: &str) -> MetricSpec {
    serde_saphyr::from_str(&format!(
        "name: p95\nquery: x\ncompare: mann_whitney\nallowed_increase: 1.1\n{extra}"
    ))
    .unwrap()
}

fn around(level: f64) -> Observation {
    obs(&(0..20)
        .map(|i| level * (1.0 + 0.01 * f64::from(i % 5)))
        .collect::<Vec<_>>())
}

#[test]
fn critical_effect_says_the_effect_passed_critical_increase_on_a_metric_not_marked_critical() {
    let analysis = AnalysisSpec::default();
    let m = p95("critical_increase: 1.5\n");
    let doubled = judge_metric(&m, &around(2.0), &around(1.0), &analysis);
    assert_eq!(doubled.verdict, Verdict::Fail, "{}", doubled.reason);
    assert!(doubled.critical_effect && !doubled.critical);
    assert_eq!(
        doubled.threshold.map(|t| t.kind),
        Some(ThresholdKind::CriticalIncrease)
    );
    let slower = judge_metric(&m, &around(1.3), &around(1.0), &analysis);
    assert_eq!(slower.verdict, Verdict::Fail, "{}", slower.reason);
    assert!(!slower.critical_effect && !slower.critical);
}

#[test]
fn critical_effect_is_in_every_serialised_check_and_in_hook_payloads() {
    use canaryd::actions::HookPayload;
    use canaryd::rollout::HookKind;
    let m = p95("critical_increase: 1.5\ncritical: true\n");
    let check = judge_metric(&m, &around(2.0), &around(1.0), &AnalysisSpec::default());
    let json = serde_json::to_value(&check).expect("serialise");
    assert_eq!(json["critical_effect"], true, "{json}");
    assert_eq!(json["critical"], true, "{json}");
    let calm = judge_metric(&m, &around(1.0), &around(1.0), &AnalysisSpec::default());
    assert_eq!(
        serde_json::to_value(&calm).expect("serialise")["critical_effect"],
        false
    );
    let payload = HookPayload {
        event: HookKind::Rollback,
        rollout_id: "r1".into(),
        rule: "checkout".into(),
        version: "v2".into(),
        step: 0,
        weight: 5,
        phase: "rolling_back".into(),
        reason: None,
        checks: vec![check],
        time: chrono::Utc::now(),
    };
    let body = serde_json::to_value(&payload).expect("serialise");
    assert_eq!(body["checks"][0]["critical_effect"], true, "{body}");
    // Checks stored before the field existed still load.
    let mut old = json;
    old.as_object_mut().map(|o| o.remove("critical_effect"));
    let loaded: canaryd::verdict::Check = serde_json::from_value(old).expect("old check loads");
    assert!(!loaded.critical_effect);
}

/// Every live rollout keeps its last tick: a judged tick's texts hold no spare room, on a pass,
/// a failure and no data (`format!` left a failure's reason 56 bytes long in 104).
#[test]
fn a_judged_ticks_texts_are_cut_to_their_length() {
    use canaryd::judge::{MetricInput, judge_tick};
    let specs = [error_rate(), error_rate(), error_rate()];
    let base = obs(&[0.004, 0.005, 0.005, 0.006, 0.005, 0.004]);
    let inputs = [
        MetricInput::Window(
            obs(&[0.004, 0.005, 0.006, 0.005, 0.005, 0.004]),
            base.clone(),
        ),
        MetricInput::Window(obs(&[0.2, 0.3, 0.2, 0.3, 0.2, 0.3]), base.clone()),
        MetricInput::Window(obs(&[]), base),
    ];
    let (checks, score) = judge_tick(&specs, &inputs, &AnalysisSpec::default());
    let mut spare = 0;
    for c in &checks {
        assert!(!c.reason.is_empty());
        spare += c.reason.capacity() - c.reason.len();
    }
    spare += score.reason.capacity() - score.reason.len();
    assert_eq!(spare, 0, "{checks:#?} {score:#?}");
}
