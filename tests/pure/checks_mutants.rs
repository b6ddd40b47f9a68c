//! The judge's checks past their absolute lines, at the edges `cargo mutants` found no test for
//! (BENCHMARKS.md, "Mutation testing", `src/judge/checks.rs` from line 101): the warn lines,
//! `max_difference` and `max_ratio` in each direction exactly on and a hair past their limits,
//! the classifier's threshold kinds, `nan_strategy`, and the number format every reason uses.
//! Pure: no servers.

use canaryd::judge::checks::fmt;
use canaryd::judge::{Observation, judge_metric};
use canaryd::rules::schema::{AnalysisSpec, MetricSpec};
use canaryd::verdict::{ThresholdKind, Verdict};

fn metric(yaml: &str) -> MetricSpec {
    serde_saphyr::from_str(yaml).unwrap()
}

fn obs(v: &[f64]) -> Observation {
    Observation::from_values(v.iter().copied())
}

/// Judges a canary flat at `c` against a baseline flat at `b` (four samples each: above the
/// default `min_samples`, and `for:` unset, so one sample decides).
fn flat(spec: &MetricSpec, c: f64, b: f64) -> canaryd::verdict::Check {
    judge_metric(spec, &obs(&[c; 4]), &obs(&[b; 4]), &AnalysisSpec::default())
}

/// Runs a table of (canary, baseline, expected verdict) through one metric; a failing row
/// names the value and the reason.
fn table(spec: &MetricSpec, rows: &[(f64, f64, Verdict)], kind: ThresholdKind) {
    for &(c, b, verdict) in rows {
        let check = flat(spec, c, b);
        assert_eq!(
            check.verdict, verdict,
            "{} with canary {c}, baseline {b}: {}",
            spec.name, check.reason
        );
        if verdict != Verdict::Pass {
            assert_eq!(
                check.threshold.map(|t| t.kind),
                Some(kind),
                "{}",
                check.reason
            );
        }
    }
}

/// Warn lines are strict like the rollback lines: exactly on the line is not beyond it, and
/// `warn_below` warns only below.
#[test]
fn warn_lines_are_strict_and_point_their_own_way() {
    use Verdict::*;
    let above = metric("name: err\nquery: x\nwarn_above: 0.5\n");
    table(
        &above,
        &[(0.75, 0.0, Warn), (0.5, 0.0, Pass), (0.25, 0.0, Pass)],
        ThresholdKind::WarnAbove,
    );
    let below = metric("name: up\nquery: x\nwarn_below: 0.5\n");
    table(
        &below,
        &[(0.25, 0.0, Warn), (0.5, 0.0, Pass), (0.75, 0.0, Pass)],
        ThresholdKind::WarnBelow,
    );
    let warned = flat(&below, 0.25, 0.0);
    assert_eq!(
        warned.reason,
        "canary 0.25 is below warn_below 0.5 (baseline 0)"
    );
}

/// `max_difference` in each direction: exactly the limit passes, beyond it in the worse
/// direction fails, and a difference the other way (or inside the limit) never does. The
/// values are exact in binary, so "exactly" is exact.
#[test]
fn max_difference_is_strict_in_each_direction() {
    use Verdict::*;
    let kind = ThresholdKind::MaxDifference;
    let inc = metric("name: cpu\nquery: x\nmax_difference: 0.5\n");
    table(
        &inc,
        &[
            (1.0, 0.25, Fail),
            (0.75, 0.25, Pass),
            (0.5, 0.25, Pass),
            (0.0, 1.0, Pass),
        ],
        kind,
    );
    let dec = metric("name: free\nquery: x\nmax_difference: 0.5\ndirection: decrease\n");
    table(
        &dec,
        &[
            (0.0, 1.0, Fail),
            (0.25, 0.75, Pass),
            (0.5, 0.25, Pass),
            (1.0, 0.25, Pass),
            (0.5, 0.5, Pass),
        ],
        kind,
    );
    let either = metric("name: q\nquery: x\nmax_difference: 0.5\ndirection: either\n");
    table(
        &either,
        &[
            (1.0, 0.25, Fail),
            (0.0, 1.0, Fail),
            (0.75, 0.25, Pass),
            (0.25, 0.75, Pass),
            (0.5, 0.25, Pass),
            (0.5, 0.5, Pass),
        ],
        kind,
    );
    let failed = flat(&dec, 0.0, 1.0);
    assert_eq!(
        failed.reason,
        "canary 0 minus baseline 1 is -1 (max_difference 0.5)"
    );
}

/// `max_ratio` in each direction: a decrease is judged against 1 / max_ratio; exactly on
/// either limit passes; "either" fails beyond both and inside neither.
#[test]
fn max_ratio_is_strict_in_each_direction_and_a_decrease_uses_its_inverse() {
    use Verdict::*;
    let kind = ThresholdKind::MaxRatio;
    let inc = metric("name: p95\nquery: x\nmax_ratio: 2\n");
    table(
        &inc,
        &[
            (3.0, 1.0, Fail),
            (2.0, 1.0, Pass),
            (1.0, 1.0, Pass),
            (0.25, 1.0, Pass),
        ],
        kind,
    );
    let dec = metric("name: rps\nquery: x\nmax_ratio: 2\ndirection: decrease\n");
    table(
        &dec,
        &[
            (0.25, 1.0, Fail),
            (0.5, 1.0, Pass),
            (0.75, 1.0, Pass),
            (1.0, 1.0, Pass),
            (3.0, 1.0, Pass),
        ],
        kind,
    );
    let either = metric("name: q\nquery: x\nmax_ratio: 2\ndirection: either\n");
    table(
        &either,
        &[
            (3.0, 1.0, Fail),
            (2.0, 1.0, Pass),
            (1.0, 1.0, Pass),
            (0.75, 1.0, Pass),
            (0.5, 1.0, Pass),
            (0.25, 1.0, Fail),
        ],
        kind,
    );
    let failed = flat(&dec, 0.25, 1.0);
    assert_eq!(failed.ratio, Some(0.25));
    assert_eq!(
        failed.reason,
        "canary mean 0.25 is 0.25x baseline mean 1 (max_ratio 2)"
    );
}

fn around(level: f64) -> Vec<f64> {
    (0..20)
        .map(|i| level * (1.0 + 0.01 * f64::from(i % 5)))
        .collect()
}

/// A classifier failure names the limit it crossed: the allowed effect, or the critical one
/// only when the effect is past it, on each side.
#[test]
fn a_classifier_failure_names_the_allowed_or_critical_limit_it_crossed() {
    let a = AnalysisSpec::default();
    let either = metric(
        "name: p95\nquery: x\ncompare: mann_whitney\ndirection: either\n\
         allowed_increase: 1.1\ncritical_increase: 1.5\n\
         allowed_decrease: 0.9\ncritical_decrease: 0.6\n",
    );
    // (canary level against a baseline at 1, kind, limit)
    let rows = [
        (2.0, ThresholdKind::CriticalIncrease, 1.5),
        (1.3, ThresholdKind::AllowedIncrease, 1.1),
        (0.4, ThresholdKind::CriticalDecrease, 0.6),
        (0.8, ThresholdKind::AllowedDecrease, 0.9),
    ];
    for (level, kind, value) in rows {
        let c = judge_metric(&either, &obs(&around(level)), &obs(&around(1.0)), &a);
        assert_eq!(c.verdict, Verdict::Fail, "canary at {level}: {}", c.reason);
        let t = c.threshold.expect("a classifier failure names its limit");
        assert_eq!(
            (t.kind, t.value),
            (kind, value),
            "canary at {level}: {}",
            c.reason
        );
        let critical = matches!(
            kind,
            ThresholdKind::CriticalIncrease | ThresholdKind::CriticalDecrease
        );
        assert_eq!(
            c.critical_effect, critical,
            "canary at {level}: {}",
            c.reason
        );
    }
}

/// `nan_strategy: replace` gives the points the source dropped back as zeros (Kayenta's
/// choice for counters where no value means nothing happened); the default leaves them out.
/// A baseline that lost three points in four to NaN is a quarter under `replace`, so the
/// same canary is four times it.
#[test]
fn nan_strategy_replace_counts_dropped_points_as_zeros_and_the_default_ignores_them() {
    let a = AnalysisSpec::default();
    let baseline = Observation::Samples {
        values: around(1.0),
        dropped: 60,
    };
    let canary = obs(&around(1.0));
    let remove = metric("name: errs\nquery: x\ncompare: mann_whitney\n");
    let kept = judge_metric(&remove, &canary, &baseline, &a);
    assert_eq!(kept.verdict, Verdict::Pass, "{}", kept.reason);
    let replace = metric("name: errs\nquery: x\ncompare: mann_whitney\nnan_strategy: replace\n");
    let zeros = judge_metric(&replace, &canary, &baseline, &a);
    assert_eq!(zeros.verdict, Verdict::Fail, "{}", zeros.reason);
    assert_eq!(
        zeros.threshold.map(|t| t.kind),
        Some(ThresholdKind::AllowedIncrease)
    );
}

/// Reasons print plain decimals between 0.001 and a million (exclusive) and zero as "0";
/// anything else in scientific notation, so a reason never shows a 20-digit number.
#[test]
fn numbers_in_reasons_are_plain_inside_a_range_and_scientific_outside() {
    let rows = [
        (0.0, "0"),
        (0.5, "0.5"),
        (0.001, "0.001"),
        (999_999.0, "999999"),
        (-2.5, "-2.5"),
        (1e6, "1.000e6"),
        (1.5e7, "1.500e7"),
        (0.0005, "5.000e-4"),
        (-3e9, "-3.000e9"),
    ];
    for (v, text) in rows {
        assert_eq!(fmt(v), text, "{v}");
    }
}
