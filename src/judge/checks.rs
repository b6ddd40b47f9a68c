//! One metric at one tick: absolute thresholds, ratio to the baseline, and (when configured) the
//! statistical comparison, folded into one [`Check`] that carries every number behind it.

use crate::verdict::{Check, Stats, Threshold, ThresholdKind, Verdict};

use super::Observation;
use super::classifier::classify;
use super::persistence::{differences, run_length, samples_for};
use crate::rules::schema::{AnalysisSpec, Compare, MetricSpec};
use crate::verdict::NanStrategy;
use crate::verdict::{Classification, Direction};

/// Built here, not in [`crate::verdict`]: the vocabulary knows no rule schema.
impl Check {
    pub(crate) fn new(spec: &MetricSpec, verdict: Verdict, reason: String) -> Check {
        Check {
            critical: spec.critical,
            muted: spec.muted,
            ..Check::named(spec.shared_name(), verdict, reason)
        }
    }
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

fn unusable(obs: &Observation, min_samples: usize) -> Option<(Verdict, String)> {
    match obs {
        Observation::Failed { message } => Some((Verdict::Error, message.clone())),
        Observation::Ambiguous { series } => Some((
            Verdict::Error,
            format!("query returned {series} series; aggregate it to one (e.g. sum(...))"),
        )),
        Observation::Empty { dropped } => Some((
            Verdict::Nodata,
            if *dropped > 0 {
                format!("all {dropped} points were NaN or infinite")
            } else {
                "query returned no series".to_string()
            },
        )),
        Observation::Samples { values, .. } if values.len() < min_samples => Some((
            Verdict::Nodata,
            format!(
                "{} samples, fewer than min_samples {min_samples}",
                values.len()
            ),
        )),
        Observation::Samples { .. } => None,
        Observation::Stale { reason } => Some((Verdict::Nodata, reason.clone())),
    }
}

/// Judges one metric. Pure: same inputs, same check.
pub fn judge_metric(
    spec: &MetricSpec,
    canary: &Observation,
    baseline: &Observation,
    analysis: &AnalysisSpec,
) -> Check {
    let min_samples = analysis.min_samples;
    if let Some((verdict, why)) = unusable(canary, min_samples) {
        let mut c = Check::new(spec, verdict, format!("canary: {why}"));
        c.canary_samples = canary.values().len();
        return c;
    }
    let cv = canary.values();
    let latest = cv[cv.len() - 1];
    let base_latest = baseline.latest();
    let mut check = Check::new(spec, Verdict::Pass, String::new());
    check.canary = Some(latest);
    check.baseline = base_latest;
    check.canary_samples = cv.len();
    check.baseline_samples = baseline.values().len();

    let needed = samples_for(spec.hold_for, analysis.step);
    for (line, kind, side) in [
        (spec.rollback_above, ThresholdKind::RollbackAbove, "above"),
        (spec.rollback_below, ThresholdKind::RollbackBelow, "below"),
    ] {
        let Some(t) = line else { continue };
        let beyond = |v: f64| if side == "above" { v > t } else { v < t };
        if !beyond(latest) {
            continue;
        }
        let held = run_length(cv, needed, beyond);
        if held >= needed {
            return breach(check, kind, t, side, Verdict::Fail);
        }
        // A gauge's breach must persist for `for:` before it rolls back; until then, a warning.
        let mut pending = breach(check, kind, t, side, Verdict::Warn);
        pending.reason = format!(
            "{} for {held} of the {needed} samples `for` needs",
            pending.reason
        );
        return pending;
    }

    let compares =
        spec.max_ratio.is_some() || spec.max_difference.is_some() || spec.compare != Compare::None;
    if compares {
        if let Some((verdict, why)) = unusable(baseline, min_samples) {
            check.verdict = verdict;
            check.reason = format!("baseline: {why}; cannot compare");
            return check;
        }
        if let Some(failed) = ratio_check(spec, &mut check, cv, baseline.values()) {
            return failed;
        }
        if let Some(failed) = difference_check(spec, &check, cv, baseline.values(), needed) {
            return failed;
        }
        if spec.compare == Compare::MannWhitney
            && let Some(decided) = statistical(spec, &mut check, canary, baseline)
        {
            return decided;
        }
    }

    if let Some(t) = spec.warn_above.filter(|t| latest > *t) {
        return breach(check, ThresholdKind::WarnAbove, t, "above", Verdict::Warn);
    }
    if let Some(t) = spec.warn_below.filter(|t| latest < *t) {
        return breach(check, ThresholdKind::WarnBelow, t, "below", Verdict::Warn);
    }
    if check.reason.is_empty() {
        check.reason = format!(
            "canary {} within every line{}",
            fmt(latest),
            base_latest
                .map(|b| format!(" (baseline {})", fmt(b)))
                .unwrap_or_default()
        );
    }
    if check.threshold.is_none() {
        check.threshold = spec
            .rollback_above
            .map(|v| Threshold {
                kind: ThresholdKind::RollbackAbove,
                value: v,
            })
            .or(spec.rollback_below.map(|v| Threshold {
                kind: ThresholdKind::RollbackBelow,
                value: v,
            }));
    }
    check
}

fn breach(mut c: Check, kind: ThresholdKind, t: f64, side: &str, verdict: Verdict) -> Check {
    let latest = c.canary.unwrap_or(f64::NAN);
    c.verdict = verdict;
    c.threshold = Some(Threshold { kind, value: t });
    c.reason = format!(
        "canary {} is {side} {} {}{}",
        fmt(latest),
        serde_json::to_value(kind)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default(),
        fmt(t),
        c.baseline
            .map(|b| format!(" (baseline {})", fmt(b)))
            .unwrap_or_default()
    );
    c
}

/// canary − baseline beyond `max_difference` in the worse direction, held for `for:`.
fn difference_check(
    spec: &MetricSpec,
    check: &Check,
    cv: &[f64],
    bv: &[f64],
    needed: usize,
) -> Option<Check> {
    let max = spec.max_difference?;
    let diffs = differences(cv, bv);
    let worse = |d: f64| match spec.direction {
        Direction::Increase => d > max,
        Direction::Decrease => d < -max,
        Direction::Either => d.abs() > max,
    };
    let latest = *diffs.last()?;
    if !worse(latest) || run_length(&diffs, needed, worse) < needed {
        return None;
    }
    let mut c = check.clone();
    c.verdict = Verdict::Fail;
    c.threshold = Some(Threshold {
        kind: ThresholdKind::MaxDifference,
        value: max,
    });
    c.reason = format!(
        "canary {} minus baseline {} is {} (max_difference {}){}",
        fmt(c.canary.unwrap_or(f64::NAN)),
        fmt(c.baseline.unwrap_or(f64::NAN)),
        fmt(latest),
        fmt(max),
        if needed > 1 {
            format!(", held for the last {needed} samples")
        } else {
            String::new()
        }
    );
    Some(c)
}

/// Window means, not single points: one scrape's jitter must not look like a 2x regression.
fn ratio_check(spec: &MetricSpec, check: &mut Check, cv: &[f64], bv: &[f64]) -> Option<Check> {
    let max = spec.max_ratio?;
    let (cm, bm) = (mean(cv)?, mean(bv)?);
    if bm == 0.0 {
        check.reason = format!(
            "baseline mean is 0, ratio undefined; canary mean {} judged by absolute lines only",
            fmt(cm)
        );
        return None;
    }
    let ratio = cm / bm;
    check.ratio = Some(ratio);
    let worse = match spec.direction {
        Direction::Increase => ratio > max,
        Direction::Decrease => ratio < 1.0 / max,
        Direction::Either => ratio > max || ratio < 1.0 / max,
    };
    if worse {
        let mut c = check.clone();
        c.verdict = Verdict::Fail;
        c.canary = Some(cm);
        c.baseline = Some(bm);
        c.threshold = Some(Threshold {
            kind: ThresholdKind::MaxRatio,
            value: max,
        });
        c.reason = format!(
            "canary mean {} is {:.2}x baseline mean {} (max_ratio {})",
            fmt(cm),
            ratio,
            fmt(bm),
            fmt(max)
        );
        return Some(c);
    }
    None
}

/// Kayenta's classifier on the window's samples. Returns a finished check when the comparison
/// decides (fail, nodata, error); on `pass` it records its numbers and lets the warn lines run.
fn statistical(
    spec: &MetricSpec,
    check: &mut Check,
    canary: &Observation,
    baseline: &Observation,
) -> Option<Check> {
    let cfg = spec.classifier_config();
    // The source already dropped NaN; `nan_strategy: replace` gives those points back as 0.0.
    let with_nan = |o: &Observation| -> Vec<f64> {
        let mut v = o.values().to_vec();
        if cfg.nan_strategy == NanStrategy::Replace
            && let Observation::Samples { dropped, .. } | Observation::Empty { dropped } = o
        {
            v.extend(std::iter::repeat_n(0.0, *dropped));
        }
        v
    };
    let c = classify(&with_nan(canary), &with_nan(baseline), &cfg);
    check.classification = Some(c.classification);
    check.set_stats(Stats {
        p_value: c.p_value,
        interval: c.interval,
        estimate: c.estimate,
        effect: c.effect,
    });
    check.critical_effect = c.critical_effect;
    let stat_reason = c.reason.clone();
    let (verdict, kind, value) = match c.classification {
        Classification::Pass => {
            check.reason = stat_reason;
            return None;
        }
        Classification::High if c.critical_effect => (
            Verdict::Fail,
            ThresholdKind::CriticalIncrease,
            cfg.critical_increase,
        ),
        Classification::Low if c.critical_effect => (
            Verdict::Fail,
            ThresholdKind::CriticalDecrease,
            cfg.critical_decrease,
        ),
        Classification::High => (
            Verdict::Fail,
            ThresholdKind::AllowedIncrease,
            cfg.allowed_increase,
        ),
        Classification::Low => (
            Verdict::Fail,
            ThresholdKind::AllowedDecrease,
            cfg.allowed_decrease,
        ),
        Classification::NodataFail => (
            Verdict::Fail,
            ThresholdKind::AllowedIncrease,
            cfg.allowed_increase,
        ),
        Classification::Nodata => (
            Verdict::Nodata,
            ThresholdKind::AllowedIncrease,
            cfg.allowed_increase,
        ),
        Classification::Error => (
            Verdict::Error,
            ThresholdKind::AllowedIncrease,
            cfg.allowed_increase,
        ),
    };
    let mut out = check.clone();
    out.verdict = verdict;
    if matches!(c.classification, Classification::High | Classification::Low) {
        out.threshold = Some(Threshold { kind, value });
        out.canary = mean(canary.values());
        out.baseline = mean(baseline.values());
    }
    out.reason = stat_reason;
    Some(out)
}

/// Short, stable number formatting for messages.
pub fn fmt(v: f64) -> String {
    if v == 0.0 || (v.abs() >= 0.001 && v.abs() < 1e6) {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        format!("{v:.3e}")
    }
}
