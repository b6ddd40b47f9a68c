//! The pure half of a tick (`judge_gathered`): which samples may be judged at the current step.
//! Issue 16: a window that still held healthy points from before the canary died, or from an
//! earlier weight, promoted a dead canary. Here every rule of admission is a table row.

use std::collections::BTreeMap;
use std::path::Path;

use canaryd::controller::analysis::{Fetched, Gathered, judge_gathered};
use canaryd::judge::observation::{Point, Series};
use canaryd::judge::sequential::Counters;
use canaryd::rollout::{Rollout, Tick};
use canaryd::rules::{Rule, parse_rule};
use canaryd::verdict::Verdict;
use chrono::{DateTime, Duration, TimeZone, Utc};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 18, 17, 0, 0).unwrap()
}

fn at(secs: i64) -> DateTime<Utc> {
    t0() + Duration::seconds(secs)
}

/// Warmup 5 s, step 1 s (so max_staleness defaults to 2 s), min_samples 3.
fn rule(extra_analysis: &str) -> Rule {
    let text = format!(
        r#"name: api
selector:
  canary: 'track="canary"'
  baseline: 'track="baseline"'
steps:
  - {{ weight: 5, hold: 30s }}
  - {{ weight: 100 }}
analysis:
  interval: 1s
  step: 1s
  window: 60s
  warmup: 5s
  min_samples: 3
{extra_analysis}metrics:
  - name: error_rate
    query: 'sum(rate(errors{{ {{{{selector}}}} }}[4s]))'
    rollback_above: 0.05
  - name: errors_vs_baseline
    test: sequential
    events: 'errors_total{{ {{{{selector}}}} }}'
    requests: 'requests_total{{ {{{{selector}}}} }}'
"#
    );
    parse_rule(Path::new("api.yaml"), &text).unwrap_or_else(|e| panic!("{e:?}"))
}

/// A rollout whose current weight (5 %) was confirmed at t = 100 s.
fn rollout() -> Rollout {
    let mut r = Rollout::new("ro".into(), "api".into(), "v2".into(), at(0));
    r.phase = canaryd::rollout::Phase::Progressing;
    r.weight = 5;
    r.step_started_at = Some(at(100));
    r
}

fn series(times: impl IntoIterator<Item = i64>, value: f64) -> Series {
    Series::Points {
        points: times
            .into_iter()
            .map(|s| Point {
                at: at(s).timestamp() as f64,
                value,
            })
            .collect(),
    }
}

fn counters(canary: f64, baseline: f64) -> Counters {
    let one = |v: f64| [("pod=a".to_string(), v)].into_iter().collect();
    Counters {
        canary_events: one(0.0),
        canary_requests: one(canary),
        baseline_events: one(0.0),
        baseline_requests: one(baseline),
    }
}

fn gathered(now: i64, window: Series, counts: Counters) -> Gathered {
    let metrics: BTreeMap<String, Fetched> = [
        (
            "error_rate".to_string(),
            Fetched::Window {
                canary: window.clone(),
                baseline: window,
            },
        ),
        (
            "errors_vs_baseline".to_string(),
            Fetched::Counters(Ok(counts)),
        ),
    ]
    .into_iter()
    .collect();
    Gathered {
        at: at(now),
        metrics: metrics.into(),
    }
}

fn check<'a>(t: &'a Tick, metric: &str) -> &'a canaryd::verdict::Check {
    t.checks
        .iter()
        .find(|c| *c.metric == *metric)
        .unwrap_or_else(|| panic!("no {metric} in {t:?}"))
}

#[test]
fn a_window_with_only_points_from_before_this_step_is_nodata() {
    let rule = rule("");
    // Healthy points every second up to 104 s; the weight was confirmed at 100 s, warmup 5 s.
    let t = judge_gathered(
        &rule,
        &rollout(),
        &gathered(106, series(90..=104, 0.001), counters(10.0, 10.0)),
    );
    let c = check(&t, "error_rate");
    assert_eq!(c.verdict, Verdict::Nodata, "{c:?}");
    assert!(
        c.reason.contains("earlier points do not count"),
        "{}",
        c.reason
    );
    assert!(!t.all_healthy());
}

#[test]
fn a_newest_point_older_than_max_staleness_is_nodata_and_names_its_age() {
    let rule = rule("");
    // Points at this step (105–110 s), then the series stopped; the tick looks at 158 s.
    let t = judge_gathered(
        &rule,
        &rollout(),
        &gathered(158, series(105..=110, 0.001), counters(10.0, 10.0)),
    );
    let c = check(&t, "error_rate");
    assert_eq!(c.verdict, Verdict::Nodata, "{c:?}");
    assert!(
        c.reason.contains("canary: newest point is 48 s old"),
        "{}",
        c.reason
    );
    assert!(c.reason.contains("taken at 17:01:50 UTC"), "{}", c.reason);
}

#[test]
fn max_staleness_is_configurable() {
    let rule = rule("  max_staleness: 1m\n");
    let t = judge_gathered(
        &rule,
        &rollout(),
        &gathered(158, series(105..=110, 0.001), counters(10.0, 10.0)),
    );
    assert_eq!(check(&t, "error_rate").verdict, Verdict::Pass);
}

#[test]
fn fresh_points_at_this_step_are_judged_and_earlier_ones_left_out() {
    let rule = rule("");
    // A bad value from the previous weight must not count; the fresh ones are healthy.
    let mut points = match series(90..=104, 0.9) {
        Series::Points { points } => points.to_vec(),
        other => panic!("{other:?}"),
    };
    if let Series::Points { points: fresh } = series(105..=112, 0.001) {
        points.extend(fresh.iter());
    }
    let t = judge_gathered(
        &rule,
        &rollout(),
        &gathered(
            112,
            Series::Points {
                points: points.into(),
            },
            counters(10.0, 10.0),
        ),
    );
    let c = check(&t, "error_rate");
    assert_eq!(c.verdict, Verdict::Pass, "{c:?}");
    assert_eq!(c.canary_samples, 8);
    assert_eq!(t.samples_since, Some(at(105)));
}

#[test]
fn sequential_counters_must_have_moved_at_this_weight_within_max_staleness() {
    let rule = rule("");
    let window = |now: i64| series(105..=now, 0.001);
    let mut r = rollout();
    let look = |r: &mut Rollout, now: i64, c: Counters| {
        let t = judge_gathered(&rule, r, &gathered(now, window(now), c));
        // What the machine keeps of a counted tick.
        r.sequential.extend(t.sequential.clone());
        r.counters_moved.extend(t.counters_moved.clone());
        check(&t, "errors_vs_baseline").clone()
    };
    // The first look at this step primes the counters (nodata by design).
    assert_eq!(
        look(&mut r, 106, counters(100.0, 1000.0)).verdict,
        Verdict::Nodata
    );
    // Counters that never moved at this weight carry no evidence.
    let c = look(&mut r, 107, counters(100.0, 1100.0));
    assert_eq!(c.verdict, Verdict::Nodata, "{c:?}");
    assert!(
        c.reason.contains("canary's request counters did not move"),
        "{}",
        c.reason
    );
    assert!(
        c.reason.contains("have not moved at this weight"),
        "{}",
        c.reason
    );
    // Both sides moved: judged.
    assert_eq!(
        look(&mut r, 108, counters(110.0, 1200.0)).verdict,
        Verdict::Pass
    );
    // One tick without a new scrape, within max_staleness (2 s): still judged.
    assert_eq!(
        look(&mut r, 109, counters(110.0, 1300.0)).verdict,
        Verdict::Pass
    );
    // The canary's counters stood still for 3 s: it stopped serving, or the series is a copy.
    let c = look(&mut r, 111, counters(110.0, 1400.0));
    assert_eq!(c.verdict, Verdict::Nodata, "{c:?}");
    assert!(
        c.reason.contains("last moved 3 s ago, at 17:01:48 UTC"),
        "{}",
        c.reason
    );
    // The baseline stopping is no data too while it should still take traffic.
    assert_eq!(
        look(&mut r, 112, counters(120.0, 1500.0)).verdict,
        Verdict::Pass
    );
    let c = look(&mut r, 115, counters(130.0, 1500.0));
    assert_eq!(c.verdict, Verdict::Nodata, "{c:?}");
    assert!(
        c.reason.contains("baseline's request counters"),
        "{}",
        c.reason
    );
}

#[test]
fn before_any_weight_is_confirmed_nothing_counts() {
    let rule = rule("");
    let mut r = rollout();
    r.step_started_at = None;
    let t = judge_gathered(
        &rule,
        &r,
        &gathered(112, series(100..=112, 0.001), counters(1.0, 1.0)),
    );
    assert_eq!(check(&t, "error_rate").verdict, Verdict::Nodata);
    assert_eq!(t.samples_since, None);
}
