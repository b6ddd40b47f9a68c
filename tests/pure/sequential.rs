//! The anytime-valid e-process: the formula vectors, then its properties.

use crate::sequential_support;

use canaryd::judge::{
    sequential::CounterSnapshot, sequential::EProcess, sequential::counter_increase,
};
use canaryd::verdict::SequentialConfig;
use proptest::prelude::*;
use sequential_support::{SEQUENCE, tick};

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * b.abs().max(1e-12)
}

#[test]
fn one_tick_half_split_ten_canary_errors_gives_e_107_443420() {
    let cfg = SequentialConfig::default();
    let mut e = EProcess::new(&cfg);
    assert!(e.update(&tick(1000.0, 1000.0, 10.0, 0.0), cfg.margin));
    assert!(close(e.e_value(), 107.443420, 1e-8), "E = {}", e.e_value());
    assert!(close(e.p_value(), 0.009307, 1e-3), "p = {}", e.p_value());
}

#[test]
fn eight_tick_sequence_matches_the_vectors_and_fails_at_tick_6() {
    let cfg = SequentialConfig::default();
    let expected = [
        0.9633, 2.3000, 1.4829, 2.9150, 15.3307, 104.9451, 891.7881, 4913.5604,
    ];
    let mut e = EProcess::new(&cfg);
    let mut failed_at = None;
    for (k, (cr, br, ce, be)) in SEQUENCE.iter().enumerate() {
        e.update(&tick(*cr, *br, *ce, *be), cfg.margin);
        assert!(
            close(e.e_value(), expected[k], 5e-5),
            "tick {}: E = {} want {}",
            k + 1,
            e.e_value(),
            expected[k]
        );
        if failed_at.is_none() && e.rejects(&cfg) {
            failed_at = Some(k + 1);
        }
    }
    assert_eq!(
        failed_at,
        Some(6),
        "threshold M/alpha = {}",
        cfg.threshold()
    );
}

#[test]
fn margin_0_2_vectors_at_ticks_6_7_8() {
    let cfg = SequentialConfig {
        margin: 0.2,
        ..SequentialConfig::default()
    };
    let mut e = EProcess::new(&cfg);
    let mut got = Vec::new();
    for (cr, br, ce, be) in SEQUENCE {
        e.update(&tick(cr, br, ce, be), cfg.margin);
        got.push(e.e_value());
    }
    for (k, want) in [(5, 8.3608), (6, 27.1721), (7, 68.0967)] {
        assert!(
            close(got[k], want, 5e-5),
            "tick {}: E = {} want {want}",
            k + 1,
            got[k]
        );
    }
}

#[test]
fn bonferroni_raises_the_threshold_with_more_metrics() {
    let cfg = SequentialConfig {
        metrics: 3,
        ..SequentialConfig::default()
    };
    assert_eq!(cfg.threshold(), 60.0);
}

#[test]
fn evidence_reads_as_a_sentence_with_rates() {
    let cfg = SequentialConfig::default();
    let mut e = EProcess::new(&cfg);
    for (cr, br, ce, be) in SEQUENCE {
        e.update(&tick(cr, br, ce, be), cfg.margin);
    }
    let ev = e.evidence(&cfg);
    assert_eq!(ev.threshold, 20.0);
    assert_eq!(ev.ticks, 8);
    assert!(ev.canary_rate.unwrap_or(0.0) > ev.baseline_rate.unwrap_or(1.0));
    let s = ev.sentence("errors");
    assert!(s.starts_with("evidence 4913.6 : 1 (threshold 20)"), "{s}");
}

#[test]
fn counter_resets_count_from_zero_and_new_series_count_nothing_yet() {
    let before: CounterSnapshot = [("a".to_string(), 100.0), ("b".to_string(), 50.0)].into();
    // a grew by 10, b was reset and is at 3 now, c appeared.
    let now: CounterSnapshot = [
        ("a".to_string(), 110.0),
        ("b".to_string(), 3.0),
        ("c".to_string(), 999.0),
    ]
    .into();
    assert_eq!(counter_increase(&before, &now), 13.0);
}

proptest! {
    #[test]
    fn e_is_never_nan_or_infinite(ticks in proptest::collection::vec((0.0f64..1e9, 0.0f64..1e9, 0.0f64..1e9, 0.0f64..1e9), 0..50),
                                   margin in 0.0f64..3.0) {
        let cfg = SequentialConfig { margin, ..SequentialConfig::default() };
        let mut e = EProcess::new(&cfg);
        for (cr, br, ce, be) in ticks {
            e.update(&tick(cr, br, ce, be), cfg.margin);
            prop_assert!(e.e_value().is_finite() && e.e_value() >= 0.0);
            prop_assert!(e.p_value().is_finite() && e.p_value() >= 0.0 && e.p_value() <= 1.0);
        }
    }

    #[test]
    fn hostile_numbers_never_break_it(ce in prop::num::f64::ANY, cr in prop::num::f64::ANY, be in prop::num::f64::ANY, br in prop::num::f64::ANY) {
        let cfg = SequentialConfig::default();
        let mut e = EProcess::new(&cfg);
        e.update(&tick(cr, br, ce, be), cfg.margin);
        prop_assert!(e.e_value().is_finite());
    }

    #[test]
    fn zero_traffic_ticks_change_nothing(seq in proptest::collection::vec((1.0f64..1e4, 1.0f64..1e4, 0.0f64..100.0, 0.0f64..100.0), 1..20),
                                          gaps in proptest::collection::vec(0usize..20, 0..10)) {
        let cfg = SequentialConfig::default();
        let (mut a, mut b) = (EProcess::new(&cfg), EProcess::new(&cfg));
        for (i, (cr, br, ce, be)) in seq.iter().enumerate() {
            let t = tick(*cr, *br, ce.min(*cr), be.min(*br));
            a.update(&t, 0.0);
            if gaps.contains(&i) {
                prop_assert!(!b.update(&tick(0.0, *br, 0.0, *be), 0.0));
                prop_assert!(!b.update(&tick(*cr, 0.0, *ce, 0.0), 0.0));
            }
            b.update(&t, 0.0);
        }
        prop_assert!((a.log_e() - b.log_e()).abs() < 1e-9);
    }

    #[test]
    fn a_canary_no_worse_than_the_baseline_in_every_tick_is_never_rejected(seq in proptest::collection::vec((1.0f64..1e4, 1.0f64..1e4, 0.0f64..0.1, 0.0f64..1.0), 1..40)) {
        // Canary error probability p_c <= baseline's in every tick (counts rounded in the
        // baseline's disfavour): the e-process must never reject such a canary.
        let cfg = SequentialConfig::default();
        let mut e = EProcess::new(&cfg);
        for (cr, br, pc, extra) in seq {
            let pb = (pc + extra * (1.0 - pc)).min(1.0); // baseline at least as bad
            // Expected counts: canary strictly no worse than baseline in every tick.
            e.update(&tick(cr, br, (cr * pc).floor(), (br * pb).ceil()), 0.0);
        }
        prop_assert!(!e.rejects(&cfg), "E = {}", e.e_value());
    }
}
