//! The sequential test's edges that `cargo mutants` found no test for (BENCHMARKS.md, "Mutation
//! testing", `src/judge/sequential.rs`). Pure: no servers.

use crate::sequential_support;

use canaryd::judge::sequential::{Counters, EProcess, TickCounts};
use canaryd::verdict::SequentialConfig;
use sequential_support::{SEQUENCE, tick};

/// A grid ratio exactly at 1 + margin is the null itself: its ℓ is 0 at every tick, so mixed in
/// it would only pull E towards 1 (a slower test). It is left out, like every ratio below it.
#[test]
fn a_grid_ratio_exactly_at_the_null_is_left_out_of_the_mixture() {
    let with_null = SequentialConfig {
        margin: 0.5,
        grid: vec![1.25, 1.5, 2.0, 3.0],
        ..SequentialConfig::default()
    };
    let without = SequentialConfig {
        grid: vec![2.0, 3.0],
        ..with_null.clone()
    };
    let (mut a, mut b) = (EProcess::new(&with_null), EProcess::new(&without));
    assert_eq!(a.ratios, vec![2.0, 3.0]);
    for _ in 0..3 {
        let t = tick(500.0, 500.0, 30.0, 5.0);
        assert!(a.update(&t, with_null.margin) && b.update(&t, without.margin));
    }
    assert!(
        a.log_e() > 0.0,
        "three bad ticks are evidence: {}",
        a.log_e()
    );
    assert_eq!(a.log_e(), b.log_e());
}

/// Counts that are not usable numbers carry no evidence: an infinite or negative event count
/// (a broken query) counts as no events, never as "every canary request failed", and an
/// infinite request count skips the tick.
#[test]
fn infinite_or_negative_counts_manufacture_no_evidence() {
    let cfg = SequentialConfig::default();
    for bad in [f64::INFINITY, -3.0, f64::NAN] {
        let mut e = EProcess::new(&cfg);
        assert!(e.update(&tick(100.0, 100.0, bad, 0.0), cfg.margin));
        assert_eq!(e.totals.canary_events, 0.0, "canary events {bad}");
        assert!(e.log_e() <= 0.0, "canary events {bad}: ln E {}", e.log_e());
        let mut e = EProcess::new(&cfg);
        assert!(e.update(&tick(100.0, 100.0, 0.0, bad), cfg.margin));
        assert_eq!(e.totals.baseline_events, 0.0, "baseline events {bad}");
        let mut e = EProcess::new(&cfg);
        assert!(
            !e.update(&tick(bad, 100.0, 5.0, 0.0), cfg.margin),
            "canary requests {bad} skip the tick"
        );
        assert!(
            !e.update(&tick(100.0, bad, 5.0, 0.0), cfg.margin),
            "baseline requests {bad} skip the tick"
        );
        assert_eq!((e.ticks, e.log_e()), (0, 0.0));
    }
}

/// The evidence's rates are each side's events over its requests, summed over the ticks that
/// entered the test (the "canary errors 1.1 % vs 0.5 %" of the explanation).
#[test]
fn the_evidence_rates_are_each_sides_cumulative_events_over_requests() {
    let cfg = SequentialConfig::default();
    let mut e = EProcess::new(&cfg);
    let before = e.evidence(&cfg);
    assert_eq!((before.canary_rate, before.baseline_rate), (None, None));
    assert!(e.update(&tick(100.0, 300.0, 2.0, 3.0), cfg.margin));
    assert!(e.update(&tick(100.0, 100.0, 4.0, 1.0), cfg.margin));
    assert!(!e.update(&tick(0.0, 100.0, 0.0, 50.0), cfg.margin));
    assert_eq!(e.totals, tick(200.0, 400.0, 6.0, 4.0));
    let ev = e.evidence(&cfg);
    assert_eq!((ev.canary_rate, ev.baseline_rate), (Some(0.03), Some(0.01)));
    assert_eq!(ev.ticks, 2);
}

/// A counter value that is not a finite, non-negative number (a broken exporter, a query
/// gone wrong) is left out of the increase, as if the series were absent: it neither adds
/// an infinite or negative increase nor counts as a reset.
#[test]
fn counter_values_that_are_not_finite_and_non_negative_add_nothing() {
    use canaryd::judge::sequential::{CounterSnapshot, counter_increase};
    let snap = |v: &[(&str, f64)]| -> CounterSnapshot {
        v.iter().map(|(k, x)| (k.to_string(), *x)).collect()
    };
    let before = snap(&[("a", 10.0), ("b", 10.0), ("c", 10.0), ("d", 10.0)]);
    for bad in [f64::INFINITY, f64::NEG_INFINITY, f64::NAN, -5.0] {
        let now = snap(&[("a", 12.0), ("b", bad), ("c", 10.0), ("d", 4.0)]);
        // a grew by 2, b is unusable, c did not move, d was reset and counts 4.
        assert_eq!(counter_increase(&before, &now), 6.0, "b = {bad}");
    }
}

fn counters(canary: Option<(f64, f64)>, baseline: Option<(f64, f64)>) -> Counters {
    let one = |v: f64| [("pod-1".to_string(), v)].into_iter().collect();
    let mut c = Counters::default();
    if let Some((events, requests)) = canary {
        c.canary_events = one(events);
        c.canary_requests = one(requests);
    }
    if let Some((events, requests)) = baseline {
        c.baseline_events = one(events);
        c.baseline_requests = one(requests);
    }
    c
}

/// No request series on either side is no data, and the test's memory is kept as it was. One
/// side alone is not: at 100 % the baseline takes no traffic and may have no series at all,
/// and the tick must still record the canary's counters (whether a frozen side is stale is the
/// controller's call, `controller::analysis`), not report "no series".
#[test]
fn only_both_sides_missing_is_no_data_for_the_sequential_test() {
    use canaryd::judge::sequential::judge_counts;
    use canaryd::verdict::Verdict;
    let spec: canaryd::rules::schema::MetricSpec =
        serde_saphyr::from_str("name: errors\ntest: sequential\nevents: e\nrequests: r\n").unwrap();
    let cfg = SequentialConfig::default();
    let (_, primed) = judge_counts(
        &spec,
        &cfg,
        None,
        Ok(counters(Some((1.0, 100.0)), Some((1.0, 100.0)))),
        3,
    );
    let primed = primed.expect("the first look keeps the counters");

    let (check, kept) = judge_counts(&spec, &cfg, Some(&primed), Ok(counters(None, None)), 3);
    assert_eq!(check.verdict, Verdict::Nodata);
    assert_eq!(
        check.reason,
        "no request counter series for canary or baseline"
    );
    assert_eq!(kept.as_ref(), Some(&primed));

    let canary_only = counters(Some((1.0, 200.0)), None);
    let (check, next) = judge_counts(&spec, &cfg, Some(&primed), Ok(canary_only.clone()), 3);
    assert_eq!(check.verdict, Verdict::Pass, "{}", check.reason);
    let next = next.expect("state");
    assert_eq!(next.last, canary_only, "the canary's counters are recorded");
    assert_eq!(next.primed_step, Some(3));
}

/// `canaryd judge` replays recorded increases with `judge_series`: it stops at the tick the
/// test fails and names it (1-based), passes when it never fails, and says no data when no
/// tick had requests on both sides.
#[test]
fn a_replayed_series_names_the_tick_it_failed_at_or_passes_or_has_no_data() {
    use canaryd::judge::sequential::judge_series;
    use canaryd::verdict::Verdict;
    let spec: canaryd::rules::schema::MetricSpec =
        serde_saphyr::from_str("name: errors\ntest: sequential\nevents: e\nrequests: r\n").unwrap();
    let cfg = SequentialConfig::default();
    let ticks: Vec<TickCounts> = SEQUENCE
        .iter()
        .map(|(cr, br, ce, be)| tick(*cr, *br, *ce, *be))
        .collect();

    let (check, failed_at, trajectory) = judge_series(&spec, &cfg, &ticks);
    assert_eq!(failed_at, Some(6));
    assert_eq!(trajectory.len(), 6, "{trajectory:?}");
    assert_eq!(check.verdict, Verdict::Fail);
    assert!(
        check.reason.starts_with("fails at tick 6: "),
        "{}",
        check.reason
    );

    let (check, failed_at, trajectory) = judge_series(&spec, &cfg, &ticks[..5]);
    assert_eq!((failed_at, trajectory.len()), (None, 5));
    assert_eq!(check.verdict, Verdict::Pass, "{}", check.reason);

    let idle = [tick(0.0, 100.0, 0.0, 1.0), tick(100.0, 0.0, 1.0, 0.0)];
    let (check, failed_at, trajectory) = judge_series(&spec, &cfg, &idle);
    assert_eq!((failed_at, trajectory), (None, vec![1.0, 1.0]));
    assert_eq!(
        (check.verdict, check.reason.as_str()),
        (Verdict::Nodata, "no tick had requests on both sides")
    );
}
