//! Invariances the classifier must have whatever the data: it judges a shift, so it cannot
//! depend on which side is called canary beyond the sign, on the origin of the scale, or on
//! the unit; and no input may crash the judge.

use canaryd::judge::classifier::classify;
use canaryd::judge::stats::{rank_sum, shift_interval};
use canaryd::verdict::Classification;
use canaryd::verdict::Direction;
use canaryd::verdict::{ClassifierConfig, OutlierStrategy};
use proptest::prelude::*;

/// Samples on a grid of quarter units, so shifts and scalings by the constants below are
/// exact in floating point and the invariances can be asserted with `==`.
fn grid_sample() -> impl Strategy<Value = Vec<f64>> {
    prop::collection::vec((-400i32..400).prop_map(|v| f64::from(v) / 4.0), 1..40)
}

fn either() -> ClassifierConfig {
    ClassifierConfig {
        direction: Direction::Either,
        outliers: OutlierStrategy::Keep,
        confidence: 0.95,
        ..ClassifierConfig::default()
    }
}

fn mirrored(c: Classification) -> Classification {
    match c {
        Classification::High => Classification::Low,
        Classification::Low => Classification::High,
        other => other,
    }
}

proptest! {
    #[test]
    fn swapping_sides_mirrors_high_and_low_and_negates_the_interval(
        a in grid_sample(), b in grid_sample()
    ) {
        // The mean ratio is not antisymmetric (nor monotone for negative means), so compare on
        // the interval alone by opening both effect gates. The widest *finite* gates: an
        // infinite one means "not configured", which an undefined ratio (a side whose mean is
        // exactly 0, so on one side only) never reaches.
        let cfg = ClassifierConfig {
            allowed_increase: f64::MIN,
            allowed_decrease: f64::MAX,
            ..either()
        };
        let ab = classify(&a, &b, &cfg);
        let ba = classify(&b, &a, &cfg);
        prop_assert_eq!(mirrored(ab.classification), ba.classification);
        if let (Some(x), Some(y)) = (shift_interval(&a, &b, 0.95), shift_interval(&b, &a, 0.95)) {
            prop_assert_eq!((x.lower, x.upper, x.estimate), (-y.upper, -y.lower, -y.estimate));
        }
        if let (Some(x), Some(y)) = (rank_sum(&a, &b), rank_sum(&b, &a)) {
            prop_assert!((x.p_value - y.p_value).abs() <= 1e-12);
        }
    }

    #[test]
    fn adding_a_constant_to_both_sides_changes_nothing(
        a in grid_sample(), b in grid_sample(), k in (-100i32..100).prop_map(f64::from)
    ) {
        let shift = |v: &[f64]| v.iter().map(|x| x + k).collect::<Vec<_>>();
        let (x, y) = (shift_interval(&a, &b, 0.95), shift_interval(&shift(&a), &shift(&b), 0.95));
        prop_assert_eq!(x, y);
        let (p, q) = (rank_sum(&a, &b), rank_sum(&shift(&a), &shift(&b)));
        prop_assert_eq!(p, q);
        let cfg = ClassifierConfig { effect_size: canaryd::verdict::EffectMeasure::Cles,
            allowed_increase: 0.5, allowed_decrease: 0.5, ..either() };
        prop_assert_eq!(
            classify(&a, &b, &cfg).classification,
            classify(&shift(&a), &shift(&b), &cfg).classification
        );
    }

    #[test]
    fn scaling_both_sides_scales_the_interval(
        a in grid_sample(), b in grid_sample(), k in prop::sample::select(vec![0.25, 2.0, 8.0, 1024.0])
    ) {
        let scale = |v: &[f64]| v.iter().map(|x| x * k).collect::<Vec<_>>();
        let x = shift_interval(&a, &b, 0.95);
        let y = shift_interval(&scale(&a), &scale(&b), 0.95);
        prop_assert_eq!(x.map(|i| (i.lower * k, i.upper * k, i.estimate * k)),
                        y.map(|i| (i.lower, i.upper, i.estimate)));
        let cfg = either();
        prop_assert_eq!(
            classify(&a, &b, &cfg).classification,
            classify(&scale(&a), &scale(&b), &cfg).classification
        );
    }

    #[test]
    fn no_input_panics(
        a in prop::collection::vec(any_float(), 0..60),
        b in prop::collection::vec(any_float(), 0..60),
        confidence in prop::num::f64::ANY,
    ) {
        let cfg = ClassifierConfig { confidence, ..ClassifierConfig::default() };
        let r = classify(&a, &b, &cfg);
        prop_assert!(!r.reason.is_empty());
        let _ = classify(&a, &b, &ClassifierConfig::default());
        let _ = rank_sum(&a, &b);
        let _ = shift_interval(&a, &b, 0.98);
    }
}

/// NaN, ±∞, huge and tiny magnitudes, zero, and ordinary values, mixed.
fn any_float() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(f64::MAX),
        Just(-f64::MAX),
        Just(f64::MIN_POSITIVE),
        Just(0.0),
        -1e300f64..1e300,
        -10.0f64..10.0,
        prop::num::f64::ANY,
    ]
}

#[test]
fn huge_samples_of_extreme_magnitude_do_not_panic() {
    let a: Vec<f64> = (0..3000)
        .map(|i| if i % 2 == 0 { f64::MAX } else { -f64::MAX })
        .collect();
    let b: Vec<f64> = (0..2000).map(|i| f64::from(i) * 1e300).collect();
    let r = classify(&a, &b, &ClassifierConfig::default());
    assert!(!r.reason.is_empty());
}

/// The kind of case proptest found (in a mutation run's baseline): the baseline's mean is
/// exactly 0, so the mean ratio is undefined one way round and 0 the other. With the widest
/// finite gates the classification must still mirror; with infinite ones ("not configured")
/// the undefined side passed while the other said `low`.
#[test]
fn a_mean_ratio_undefined_on_one_side_only_still_mirrors() {
    let a: Vec<f64> = (100..108).map(f64::from).collect();
    let b: Vec<f64> = (-3..=3).map(f64::from).collect();
    let cfg = ClassifierConfig {
        allowed_increase: f64::MIN,
        allowed_decrease: f64::MAX,
        ..either()
    };
    let (ab, ba) = (classify(&a, &b, &cfg), classify(&b, &a, &cfg));
    assert_eq!(ab.effect, None, "baseline mean 0: no ratio");
    assert_eq!(ba.effect, Some(0.0), "canary mean 0: ratio 0");
    assert_eq!(ab.classification, Classification::High, "{}", ab.reason);
    assert_eq!(
        mirrored(ab.classification),
        ba.classification,
        "{} / {}",
        ab.reason,
        ba.reason
    );
}
