//! Kayenta's documented NetflixACAJudge behaviour, as a table of specifications.

use canaryd::judge::classifier::classify;
use canaryd::verdict::{Classification, Direction};
use canaryd::verdict::{ClassifierConfig, EffectMeasure, NanStrategy, OutlierStrategy};

const RISING: [f64; 4] = [10.0, 20.0, 30.0, 40.0];
const LOW_BASE: [f64; 4] = [1.0, 2.0, 3.0, 4.0];

fn cfg() -> ClassifierConfig {
    ClassifierConfig::default()
}

fn at_95() -> ClassifierConfig {
    ClassifierConfig {
        confidence: 0.95,
        ..cfg()
    }
}

/// 30 baseline samples around 100 and a canary shifted by `shift` percent, deterministic.
fn shifted(shift: f64) -> (Vec<f64>, Vec<f64>) {
    shifted_n(30, shift)
}

fn shifted_n(n: usize, shift: f64) -> (Vec<f64>, Vec<f64>) {
    let base: Vec<f64> = (0..n)
        .map(|i| 100.0 + ((i * 37) % 11) as f64 - 5.0)
        .collect();
    let canary = base
        .iter()
        .enumerate()
        .map(|(i, v)| v * (1.0 + shift / 100.0) + ((i * 13) % 5) as f64 * 0.1)
        .collect();
    (canary, base)
}

#[test]
fn kayenta_example_interval_is_6_to_39_with_estimate_22_5_at_95_percent() {
    let r = classify(&RISING, &LOW_BASE, &at_95());
    assert_eq!(r.interval, Some((6.0, 39.0)));
    assert_eq!(r.estimate, Some(22.5));
    assert_eq!(r.classification, Classification::High);
    assert_eq!(r.effect, Some(10.0));
}

#[test]
fn constant_tens_against_constant_ones_is_high() {
    let r = classify(&[10.0; 20], &[1.0; 20], &cfg());
    assert_eq!(r.classification, Classification::High);
    assert_eq!(r.interval, Some((9.0, 9.0)));
    assert_eq!(r.estimate, Some(9.0));
}

#[test]
fn constant_ones_against_constant_tens_is_low_when_decrease_is_bad() {
    let cfg = ClassifierConfig {
        direction: Direction::Decrease,
        ..cfg()
    };
    assert_eq!(
        classify(&[1.0; 5], &[10.0; 5], &cfg).classification,
        Classification::Low
    );
}

#[test]
fn empty_canary_is_nodata() {
    let r = classify(&[], &LOW_BASE, &cfg());
    assert_eq!(r.classification, Classification::Nodata);
    assert!(!r.critical_effect);
}

#[test]
fn empty_baseline_is_nodata() {
    assert_eq!(
        classify(&RISING, &[], &cfg()).classification,
        Classification::Nodata
    );
}

#[test]
fn all_nan_canary_is_nodata_after_nan_removal() {
    let r = classify(&[f64::NAN; 4], &LOW_BASE, &cfg());
    assert_eq!(r.classification, Classification::Nodata);
}

#[test]
fn missing_data_fails_when_the_metric_must_have_data() {
    let cfg = ClassifierConfig {
        must_have_data: true,
        ..cfg()
    };
    assert_eq!(
        classify(&[], &LOW_BASE, &cfg).classification,
        Classification::NodataFail
    );
}

#[test]
fn nan_replaced_by_zero_counts_as_samples() {
    let cfg = ClassifierConfig {
        nan_strategy: NanStrategy::Replace,
        outliers: OutlierStrategy::Keep,
        ..at_95()
    };
    let r = classify(&[f64::NAN, 0.0, 0.0], &[0.0, 0.0, 0.0], &cfg);
    assert_eq!(r.classification, Classification::Pass);
    assert_eq!(r.canary_n, 3);
}

#[test]
fn identical_data_passes_even_in_a_different_order() {
    let r = classify(&[3.0, 1.0, 2.0], &[1.0, 2.0, 3.0], &cfg());
    assert_eq!(r.classification, Classification::Pass);
    assert!(r.reason.contains("identical"));
}

#[test]
fn all_samples_tied_at_one_value_passes() {
    let r = classify(&[5.0; 3], &[5.0; 7], &cfg());
    assert_eq!(r.classification, Classification::Pass);
    assert_eq!(r.p_value, None);
}

#[test]
fn increase_only_metric_ignores_a_drop() {
    let r = classify(&LOW_BASE, &RISING, &at_95());
    assert_eq!(r.classification, Classification::Pass);
}

#[test]
fn decrease_metric_flags_a_drop_as_low() {
    let cfg = ClassifierConfig {
        direction: Direction::Decrease,
        ..at_95()
    };
    assert_eq!(
        classify(&LOW_BASE, &RISING, &cfg).classification,
        Classification::Low
    );
}

#[test]
fn decrease_metric_ignores_a_rise() {
    let cfg = ClassifierConfig {
        direction: Direction::Decrease,
        ..at_95()
    };
    assert_eq!(
        classify(&RISING, &LOW_BASE, &cfg).classification,
        Classification::Pass
    );
}

#[test]
fn either_direction_flags_both_ways() {
    let cfg = ClassifierConfig {
        direction: Direction::Either,
        ..at_95()
    };
    assert_eq!(
        classify(&RISING, &LOW_BASE, &cfg).classification,
        Classification::High
    );
    assert_eq!(
        classify(&LOW_BASE, &RISING, &cfg).classification,
        Classification::Low
    );
}

#[test]
fn significant_ten_percent_rise_is_high_at_default_allowed_increase() {
    let (c, b) = shifted(10.0);
    let r = classify(&c, &b, &cfg());
    assert_eq!(r.classification, Classification::High, "{}", r.reason);
}

#[test]
fn ten_percent_rise_passes_when_allowed_increase_is_one_point_two() {
    let (c, b) = shifted(10.0);
    let cfg = ClassifierConfig {
        allowed_increase: 1.2,
        ..cfg()
    };
    let r = classify(&c, &b, &cfg);
    assert_eq!(r.classification, Classification::Pass, "{}", r.reason);
    assert!(r.effect.is_some_and(|e| e > 1.05 && e < 1.2));
}

#[test]
fn rise_within_tolerance_of_the_estimate_passes() {
    // Interval (6, 39) around estimate 22.5: a tolerance of 0.3 puts the bar at 6.75.
    let cfg = ClassifierConfig {
        tolerance: 0.3,
        ..at_95()
    };
    assert_eq!(
        classify(&RISING, &LOW_BASE, &cfg).classification,
        Classification::Pass
    );
}

#[test]
fn high_is_critical_at_default_critical_increase() {
    let r = classify(&RISING, &LOW_BASE, &at_95());
    assert!(r.critical_effect);
}

#[test]
fn high_below_critical_increase_is_not_critical() {
    let cfg = ClassifierConfig {
        critical_increase: 20.0,
        ..at_95()
    };
    let r = classify(&RISING, &LOW_BASE, &cfg);
    assert_eq!(r.classification, Classification::High);
    assert!(!r.critical_effect);
}

#[test]
fn low_at_or_below_critical_decrease_is_critical() {
    let cfg = ClassifierConfig {
        direction: Direction::Decrease,
        critical_decrease: 0.2,
        ..at_95()
    };
    let r = classify(&LOW_BASE, &RISING, &cfg);
    assert_eq!(r.classification, Classification::Low);
    assert!(r.critical_effect, "effect {:?}", r.effect);
}

#[test]
fn passing_metric_is_never_critical() {
    let (c, b) = shifted(0.0);
    assert!(!classify(&c, &b, &cfg()).critical_effect);
}

#[test]
fn cles_effect_gates_high_by_probability_of_superiority() {
    let cfg = ClassifierConfig {
        effect_size: EffectMeasure::Cles,
        allowed_increase: 0.7,
        ..at_95()
    };
    let r = classify(&RISING, &LOW_BASE, &cfg);
    assert_eq!(r.effect, Some(1.0));
    assert_eq!(r.classification, Classification::High);
    assert_eq!(r.effect_measure, EffectMeasure::Cles);
}

#[test]
fn zero_baseline_mean_leaves_the_mean_ratio_undefined_and_does_not_block_high() {
    let cfg = ClassifierConfig {
        outliers: OutlierStrategy::Keep,
        allowed_increase: 1.1,
        ..at_95()
    };
    let r = classify(&[5.0, 6.0, 7.0, 8.0], &[-1.0, 1.0, -2.0, 2.0], &cfg);
    assert_eq!(r.effect, None);
    assert_eq!(r.classification, Classification::High, "{}", r.reason);
}

#[test]
fn infinite_sample_is_an_error_not_a_verdict() {
    let r = classify(&[1.0, f64::INFINITY], &LOW_BASE, &cfg());
    assert_eq!(r.classification, Classification::Error);
}

#[test]
fn invalid_confidence_is_an_error() {
    let cfg = ClassifierConfig {
        confidence: 1.5,
        ..cfg()
    };
    assert_eq!(
        classify(&RISING, &LOW_BASE, &cfg).classification,
        Classification::Error
    );
}

#[test]
fn gross_spike_in_the_canary_is_trimmed_before_the_test() {
    let (mut c, b) = shifted_n(150, 0.0);
    c.push(1e9);
    let r = classify(&c, &b, &cfg());
    assert_eq!(r.canary_n, 150);
    assert_eq!(r.classification, Classification::Pass, "{}", r.reason);
}

#[test]
fn small_samples_keep_their_extremes_because_the_fence_is_at_least_the_99th_percentile() {
    // Kayenta's reduced sensitivity: below ~99 samples the 99th percentile is the maximum.
    let (mut c, b) = shifted(0.0);
    c.push(1e9);
    let r = classify(&c, &b, &cfg());
    assert_eq!(r.canary_n, 31);
    assert_eq!(r.classification, Classification::Pass, "{}", r.reason);
}

#[test]
fn config_reads_snake_case_rule_keys_with_kayenta_defaults() {
    let cfg: ClassifierConfig = serde_json::from_str(
        r#"{"direction": "either", "allowed_increase": 1.1, "outliers": {"remove": {"factor": 2.0}}}"#,
    )
    .expect("valid config");
    assert_eq!(cfg.direction, Direction::Either);
    assert_eq!(cfg.allowed_increase, 1.1);
    assert_eq!(cfg.outliers, OutlierStrategy::Remove { factor: 2.0 });
    assert_eq!((cfg.tolerance, cfg.confidence), (0.25, 0.98));
    assert!(serde_json::from_str::<ClassifierConfig>(r#"{"tolerence": 0.1}"#).is_err());
}

#[test]
fn reason_states_the_numbers() {
    let r = classify(&RISING, &LOW_BASE, &at_95());
    assert!(r.reason.contains("95%"), "{}", r.reason);
    assert!(r.reason.contains("10.0000"), "{}", r.reason);
}

// ---------------------------------------------------------------------------------------------
// Kayenta's own classifier tests (ClassifierSuite.scala), replayed case by case.
// `scripts/kayenta_classifier_cases.py` turns every Mann-Whitney test of that suite into
// `tests/fixtures/kayenta_classifier_cases.json`: its samples (up to 210 a side), its settings
// with Kayenta's constructor defaults filled in (effect and critical thresholds 1.0 unless the
// test sets them) and what it asserts. Kayenta's classifier trims no outliers (that is a
// separate, optional step of its judge), so the replay keeps every sample.

#[derive(Debug, serde::Deserialize)]
struct KayentaCase {
    name: String,
    canary: Vec<f64>,
    baseline: Vec<f64>,
    direction: String,
    nan_strategy: String,
    critical_metric: bool,
    tolerance: f64,
    confidence: f64,
    effect_size: String,
    effect_thresholds: (f64, f64),
    critical_thresholds: (f64, f64),
    expect: KayentaExpect,
}

#[derive(Debug, serde::Deserialize)]
struct KayentaExpect {
    classification: Option<String>,
    critical: Option<bool>,
    #[serde(default)]
    deviation_nan: bool,
    #[serde(default)]
    reason: bool,
}

fn kayenta_cases() -> Vec<KayentaCase> {
    #[derive(serde::Deserialize)]
    struct Fixture {
        cases: Vec<KayentaCase>,
    }
    let text = include_str!("../fixtures/kayenta_classifier_cases.json");
    serde_json::from_str::<Fixture>(text)
        .expect("fixture is valid JSON")
        .cases
}

fn kayenta_case(name: &str) -> KayentaCase {
    kayenta_cases()
        .into_iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no Kayenta case {name:?}"))
}

/// Kayenta's `MannWhitneyClassifier(...)` arguments as canaryd settings. Kayenta's pairs are
/// (decrease, increase).
fn kayenta_config(c: &KayentaCase) -> ClassifierConfig {
    ClassifierConfig {
        direction: match c.direction.as_str() {
            "Increase" => Direction::Increase,
            "Decrease" => Direction::Decrease,
            _ => Direction::Either,
        },
        nan_strategy: if c.nan_strategy == "replace" {
            NanStrategy::Replace
        } else {
            NanStrategy::Remove
        },
        outliers: OutlierStrategy::Keep,
        tolerance: c.tolerance,
        confidence: c.confidence,
        effect_size: if c.effect_size == "cles" {
            EffectMeasure::Cles
        } else {
            EffectMeasure::MeanRatio
        },
        allowed_decrease: c.effect_thresholds.0,
        allowed_increase: c.effect_thresholds.1,
        critical_decrease: c.critical_thresholds.0,
        critical_increase: c.critical_thresholds.1,
        must_have_data: false,
    }
}

/// Kayenta's `result.critical`: a critical metric that is `high`/`low` beyond its critical
/// effect size, or has no data. canaryd keeps the two apart (`critical` on the metric,
/// `critical_effect` on the verdict); this is their conjunction.
fn kayenta_critical(r: &canaryd::judge::classifier::Classified, critical_metric: bool) -> bool {
    critical_metric
        && match r.classification {
            Classification::High | Classification::Low => r.critical_effect,
            Classification::Nodata | Classification::Error => true,
            Classification::Pass | Classification::NodataFail => false,
        }
}

fn kayenta_word(c: Classification) -> &'static str {
    match c {
        Classification::Pass => "Pass",
        Classification::High => "High",
        Classification::Low => "Low",
        Classification::Nodata => "Nodata",
        Classification::NodataFail => "NodataFailMetric",
        Classification::Error => "Error",
    }
}

/// Where canaryd decides differently from Kayenta on purpose, with the reason.
const DELIBERATE: &[(&str, &str, &str)] = &[(
    "Mann-Whitney Missing Experiment Data with NaN Replacement",
    "Nodata",
    "Kayenta passes an empty canary under NaN replacement; in canaryd no data never passes",
)];

#[test]
fn fixture_holds_every_mann_whitney_case_of_kayentas_classifier_suite() {
    let cases = kayenta_cases();
    assert_eq!(cases.len(), 34);
    let asserting = cases
        .iter()
        .filter(|c| c.expect.classification.is_some())
        .count();
    assert_eq!(asserting, 33, "cases that assert a classification");
    assert!(cases.iter().any(|c| c.canary.len() >= 200));
}

#[test]
fn every_kayenta_classifier_case_agrees_except_the_documented_deviation() {
    let mut differ = Vec::new();
    for case in kayenta_cases() {
        let r = classify(&case.canary, &case.baseline, &kayenta_config(&case));
        let deliberate = DELIBERATE.iter().find(|(n, _, _)| *n == case.name);
        if let Some(want) = &case.expect.classification {
            let want = deliberate.map_or(want.as_str(), |(_, ours, _)| *ours);
            if kayenta_word(r.classification) != want {
                differ.push(format!(
                    "{}: {} (Kayenta {want}): {}",
                    case.name,
                    kayenta_word(r.classification),
                    r.reason
                ));
            }
        }
        if let Some(want) = case.expect.critical {
            let got = kayenta_critical(&r, case.critical_metric);
            if got != want {
                differ.push(format!("{}: critical {got} (Kayenta {want})", case.name));
            }
        }
        // Kayenta's deviation is the mean ratio, NaN when a mean is 0. canaryd leaves it
        // undefined for a zero baseline mean and reports 0 for a zero canary mean (the
        // canary is 100 % lower: a number, not a gap); both count as reaching thresholds.
        if case.expect.deviation_nan {
            let base_mean = case.baseline.iter().sum::<f64>();
            let ok = if base_mean == 0.0 {
                r.effect.is_none()
            } else {
                r.effect == Some(0.0)
            };
            if !ok {
                differ.push(format!("{}: effect {:?}", case.name, r.effect));
            }
        }
        if case.expect.reason && r.reason.is_empty() {
            differ.push(format!("{}: no reason", case.name));
        }
    }
    assert!(
        differ.is_empty(),
        "{} cases differ from Kayenta:\n{}",
        differ.len(),
        differ.join("\n")
    );
}

#[test]
fn zero_heavy_error_rates_rising_significantly_are_high_although_the_interval_sits_on_zero() {
    // Kayenta's "High Metric (Large Input)": 146 of 210 canary and 193 of 210 baseline
    // samples are exactly 0. Most pairwise differences are 0, so the interval of the shift and
    // its estimate are the tie at 0 — but the test at shift 0 rejects with p ~ 3e-9.
    let case = kayenta_case("Mann-Whitney Classifier Test: High Metric (Large Input)");
    let r = classify(&case.canary, &case.baseline, &kayenta_config(&case));
    assert_eq!(r.interval, Some((0.0, 0.0)));
    assert_eq!(r.estimate, Some(0.0));
    assert!(r.p_value.is_some_and(|p| p < 1e-4), "{:?}", r.p_value);
    assert!(
        r.effect.is_some_and(|e| (e - 4.4466).abs() < 1e-3),
        "{:?}",
        r.effect
    );
    assert_eq!(r.classification, Classification::High, "{}", r.reason);
    assert!(r.reason.contains("excludes"), "{}", r.reason);
}

#[test]
fn zero_heavy_rise_is_high_with_canaryds_own_defaults_too() {
    // The same samples as a rule file would judge them: outliers trimmed (the baseline's rare
    // spikes go, so the mean ratio is 5.5), 98 % confidence, allowed increase 1.1.
    let case = kayenta_case("Mann-Whitney Classifier Test: High Metric (Large Input)");
    let cfg = ClassifierConfig {
        allowed_increase: 1.1,
        ..cfg()
    };
    let r = classify(&case.canary, &case.baseline, &cfg);
    assert_eq!(r.classification, Classification::High, "{}", r.reason);
    assert!(r.effect.is_some_and(|e| e > 5.0), "{:?}", r.effect);
}

#[test]
fn zero_heavy_samples_from_one_distribution_are_not_high_at_a_zero_interval() {
    // The same mechanism must not turn ordinary noise into a verdict: with the canary drawn
    // like the baseline, the test at shift 0 must not reject, whatever the interval.
    let case = kayenta_case("Mann-Whitney Classifier Test: High Metric (Large Input)");
    let mut shuffled = case.baseline.clone();
    shuffled.rotate_left(97);
    let r = classify(&shuffled[..150], &case.baseline, &kayenta_config(&case));
    assert_eq!(r.classification, Classification::Pass, "{}", r.reason);
}

#[test]
fn canary_ten_against_a_baseline_of_zero_is_high_not_a_pass_at_ratio_one() {
    // The rule-file default allowed increase is 1.1: a ratio reported as 1.0 blocked the high.
    let cfg = ClassifierConfig {
        allowed_increase: 1.1,
        ..cfg()
    };
    let r = classify(&[10.0; 20], &[0.0; 20], &cfg);
    assert_eq!(r.classification, Classification::High, "{}", r.reason);
    assert_eq!(r.effect, None);
    assert!(r.reason.contains("mean ratio is undefined"), "{}", r.reason);
    assert!(r.reason.contains("counts as reaching"), "{}", r.reason);
}

#[test]
fn an_undefined_ratio_reaches_a_configured_critical_increase_but_not_an_unset_one() {
    let set = ClassifierConfig {
        critical_increase: 1.2,
        ..cfg()
    };
    assert!(classify(&[10.0; 20], &[0.0; 20], &set).critical_effect);
    let unset = ClassifierConfig {
        critical_increase: f64::INFINITY,
        ..cfg()
    };
    let r = classify(&[10.0; 20], &[0.0; 20], &unset);
    assert_eq!(r.classification, Classification::High);
    assert!(!r.critical_effect);
}

#[test]
fn zero_heavy_healthy_canaries_are_high_no_more_often_than_the_one_sided_level() {
    // Error rates at low traffic: per-minute samples that are mostly exact zeros. With canary
    // and baseline drawn alike, the open-bound rule may only fire when the test at shift 0
    // rejects upward: at 98 % confidence, about 1 % of the time.
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let cfg = ClassifierConfig {
        allowed_increase: 1.1,
        ..cfg()
    };
    let mut draw = |n: usize| -> Vec<f64> {
        (0..n)
            .map(|_| {
                if rng.random_bool(0.15) {
                    1.0 / f64::from(rng.random_range(20..60u32))
                } else {
                    0.0
                }
            })
            .collect()
    };
    let trials = 2000;
    let high = (0..trials)
        .filter(|_| {
            let (c, b) = (draw(60), draw(60));
            classify(&c, &b, &cfg).classification == Classification::High
        })
        .count();
    assert!(
        high * 100 <= trials * 2,
        "{high} of {trials} healthy canaries were high"
    );
}

/// Where canaryd parts from R and Kayenta on purpose: with 3 samples a side the 95 % level is
/// out of reach (the most extreme arrangement has p = 0.08), and R then reports the range of
/// pairwise differences as the "interval". Three canary samples all above three baseline ones
/// give [6, 39] there, above 0, and Kayenta would say `high`; canaryd also asks the test to
/// reject and says `pass`, explaining why. With one more sample a side it can reject.
#[test]
fn too_few_samples_for_the_confidence_is_a_pass_not_a_verdict_on_the_range() {
    let r = classify(&RISING[1..], &LOW_BASE[..3], &at_95());
    assert_eq!(r.classification, Classification::Pass, "{}", r.reason);
    assert!(r.p_value.is_some_and(|p| p > 0.05), "{:?}", r.p_value);
    let (lower, _) = r.interval.expect("the range is still reported");
    assert!(lower > 0.0, "the range lies above 0: {:?}", r.interval);
    assert!(
        r.reason.contains("cannot reach 95% confidence"),
        "the reason says why: {}",
        r.reason
    );
    let r = classify(&RISING, &LOW_BASE, &at_95());
    assert_eq!(r.classification, Classification::High, "{}", r.reason);
}
