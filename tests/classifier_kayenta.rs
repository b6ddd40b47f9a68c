//! Kayenta's documented NetflixACAJudge behaviour, as a table of specifications.

use canaryd::judge::classifier::{
    ClassifierConfig, EffectMeasure, NanStrategy, OutlierStrategy, classify,
};
use canaryd::judge::{Classification, Direction};

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
    assert!(!r.critical);
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
    assert!(r.critical);
}

#[test]
fn high_below_critical_increase_is_not_critical() {
    let cfg = ClassifierConfig {
        critical_increase: 20.0,
        ..at_95()
    };
    let r = classify(&RISING, &LOW_BASE, &cfg);
    assert_eq!(r.classification, Classification::High);
    assert!(!r.critical);
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
    assert!(r.critical, "effect {:?}", r.effect);
}

#[test]
fn passing_metric_is_never_critical() {
    let (c, b) = shifted(0.0);
    assert!(!classify(&c, &b, &cfg()).critical);
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
fn zero_baseline_mean_gives_a_neutral_mean_ratio() {
    let cfg = ClassifierConfig {
        outliers: OutlierStrategy::Keep,
        ..at_95()
    };
    let r = classify(&[5.0, 6.0, 7.0, 8.0], &[-1.0, 1.0, -2.0, 2.0], &cfg);
    assert_eq!(r.effect, Some(1.0));
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
