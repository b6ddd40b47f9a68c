//! One tick of `test: sequential_histogram`: a histogram's bucket counters in, a check and the
//! next state out. The statistics are in [`super::sequential_hist`]; this file turns what
//! Prometheus returns for `<histogram>_bucket` and `<histogram>_count` into per-edge increases.
//!
//! The counters ride in the same [`Counters`] the count test keeps (so persistence, the
//! "counters did not move" rule and restarts work unchanged): `*_requests` holds each series'
//! `_count`, `*_events` each series' bucket at each edge, keyed `"<edge>|<series>"`.

use std::collections::BTreeMap;

use super::sequential::{CounterSnapshot, Counters, SequentialState, counter_increase};
use super::sequential_hist::{Buckets, HistogramEProcess, HistogramTick, MIN_ABOVE, edge_margins};
use super::sequential_hist_scale::ScaleNull;
use super::sequential_tick::{begin_tick, evidence_check, tick_verdict};
use crate::rules::schema::MetricSpec;
use crate::verdict::{Check, Verdict};
use crate::verdict::{Evidence, SequentialConfig};

/// Edges one histogram may have. The Go client's default has 11; a histogram with hundreds of
/// edges would make every tick's work and the persisted state grow with it.
pub const MAX_EDGES: usize = 64;

/// Labels and value of one series, as an instant query returns it.
pub type Labeled = (BTreeMap<String, String>, f64);

fn series_key(labels: &BTreeMap<String, String>) -> String {
    let mut key = String::new();
    for (k, v) in labels {
        if matches!(k.as_str(), "le" | "__name__") {
            continue;
        }
        if !key.is_empty() {
            key.push(',');
        }
        key.push_str(k);
        key.push('=');
        key.push_str(v);
    }
    key
}

/// Bucket and count snapshots of one group. Edges are matched by value (`0.5`, `0.50` and
/// `5e-01` are one edge); `+Inf` is the count and is left out.
pub fn bucket_counters(
    histogram: &str,
    buckets: &[Labeled],
    counts: &[Labeled],
) -> Result<(CounterSnapshot, CounterSnapshot), String> {
    let mut events = CounterSnapshot::new();
    // Each distinct `le` text parsed and written out once: a histogram has a dozen edges and
    // many series, and this runs every tick.
    let mut edges: Vec<(&str, f64, String)> = Vec::new();
    for (labels, v) in buckets {
        let Some(le) = labels.get("le").map(|v| v.trim()) else {
            continue;
        };
        let prefix = match edges.iter().find(|(text, _, _)| *text == le) {
            Some((_, _, prefix)) => prefix,
            None => {
                let Some(edge) = le.parse::<f64>().ok().filter(|e| e.is_finite()) else {
                    continue;
                };
                edges.push((le, edge, format!("{edge}|")));
                &edges[edges.len() - 1].2
            }
        };
        events.insert(format!("{prefix}{}", series_key(labels)), *v);
    }
    let requests: CounterSnapshot = counts.iter().map(|(l, v)| (series_key(l), *v)).collect();
    if events.is_empty() && !requests.is_empty() {
        return Err(format!(
            "{histogram}_bucket has no series with a finite `le`: is {histogram} a histogram?"
        ));
    }
    let mut distinct: Vec<f64> = edges.iter().map(|(_, e, _)| *e).collect();
    distinct.sort_by(f64::total_cmp);
    distinct.dedup();
    if distinct.len() > MAX_EDGES {
        return Err(format!(
            "{histogram} has {} bucket edges; at most {MAX_EDGES} are tested",
            distinct.len()
        ));
    }
    Ok((events, requests))
}

/// The edges present in a bucket snapshot, ascending.
fn edges_of(events: &CounterSnapshot) -> Vec<f64> {
    let mut edges: Vec<f64> = events
        .keys()
        .filter_map(|k| k.split_once('|')?.0.parse::<f64>().ok())
        .collect();
    edges.sort_by(f64::total_cmp);
    edges.dedup();
    edges
}

/// The series of one edge.
fn at_edge(events: &CounterSnapshot, edge: f64) -> CounterSnapshot {
    let prefix = format!("{edge}|");
    events
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(&prefix)?.to_string(), *v)))
        .collect()
}

/// One side's increases since `last`, series by series (resets and new series as the count
/// test handles them, [`counter_increase`]). An edge with no series now gets NaN, which carries
/// no evidence, instead of 0 requests at or below it, which would make every request slow.
fn side(
    edges: &[f64],
    last: (&CounterSnapshot, &CounterSnapshot),
    now: (&CounterSnapshot, &CounterSnapshot),
) -> Buckets {
    // One pass over the series (this runs every tick): each key is "<edge>|<series>", and a
    // series' previous value is under the same key.
    let prefixes: Vec<String> = edges.iter().map(|e| format!("{e}|")).collect();
    let mut le = vec![f64::NAN; edges.len()];
    for (key, v) in now.0 {
        let Some(i) = prefixes.iter().position(|p| key.starts_with(p.as_str())) else {
            continue;
        };
        let sum = if le[i].is_nan() { 0.0 } else { le[i] };
        le[i] = sum + series_increase(last.0.get(key).copied(), *v);
    }
    Buckets {
        le,
        count: counter_increase(last.1, now.1),
    }
}

/// One series' share of [`counter_increase`]: the same rule, for one key.
fn series_increase(previous: Option<f64>, v: f64) -> f64 {
    if !(v.is_finite() && v >= 0.0) {
        return 0.0;
    }
    match previous {
        Some(p) if v >= p => v - p,
        Some(_) => v,
        None => 0.0,
    }
}

/// Both sides' increases since `last`.
pub fn tick_between(edges: &[f64], last: &Counters, now: &Counters) -> HistogramTick {
    HistogramTick {
        canary: side(
            edges,
            (&last.canary_events, &last.canary_requests),
            (&now.canary_events, &now.canary_requests),
        ),
        baseline: side(
            edges,
            (&last.baseline_events, &last.baseline_requests),
            (&now.baseline_events, &now.baseline_requests),
        ),
    }
}

/// The histogram test's evidence in the count test's shape, so checks, reports and the API show
/// both alike; the edge with the most evidence is named in the reason.
fn evidence(p: &HistogramEProcess, cfg: &SequentialConfig) -> (Evidence, String) {
    let h = p.evidence();
    let what = match h.edge {
        Some(edge) => format!("requests slower than {edge} s"),
        None => "slow requests".to_string(),
    };
    let e = Evidence {
        e_value: h.e_value,
        max_e: p.log_max_e.min(f64::MAX.ln()).exp(),
        p_value: h.p_value,
        threshold: cfg.threshold(),
        canary_rate: h.canary_slower,
        baseline_rate: h.baseline_slower,
        best_ratio: None,
        ticks: h.ticks,
    };
    (e, what)
}

/// One tick of a histogram metric. Pure, like [`super::sequential::judge_counts`], whose rules
/// it follows: increases are taken within a step only, the first look at a step only records.
pub fn judge_histogram(
    spec: &MetricSpec,
    cfg: &SequentialConfig,
    previous: Option<&SequentialState>,
    now: Result<Counters, String>,
    step: usize,
) -> (Check, Option<SequentialState>) {
    // The state is cloned once, on the way taken (this runs every tick).
    let kept = || previous.cloned();
    let (now, mut state) = match begin_tick(spec, cfg, previous, now, "histogram") {
        Ok(begun) => begun,
        Err(check) => return (*check, kept()),
    };
    let mut process = match state.histogram.take() {
        Some(p) => p,
        None => {
            let mut edges = edges_of(&now.canary_events);
            edges.extend(edges_of(&now.baseline_events));
            edges.sort_by(f64::total_cmp);
            edges.dedup();
            edges.truncate(MAX_EDGES);
            // `margin` is a latency scale here; each edge's tail margin comes from the
            // baseline's histogram as it stands now, before any tick of evidence.
            let total: f64 = now
                .baseline_requests
                .values()
                .filter(|v| v.is_finite())
                .sum();
            let above: Vec<f64> = edges
                .iter()
                .map(|e| {
                    let fast: f64 = at_edge(&now.baseline_events, *e)
                        .values()
                        .filter(|v| v.is_finite())
                        .sum();
                    total - fast
                })
                .collect();
            let made = match cfg.settled_margin {
                Some(settled) => HistogramEProcess::with_scale(ScaleNull {
                    grid: cfg.grid.clone(),
                    margin: cfg.margin,
                    settled,
                    settle_ticks: cfg.settle_ticks,
                    edges: edges.clone(),
                    above,
                    total,
                }),
                None => {
                    let margins = edge_margins(&edges, &above, total, cfg.margin);
                    HistogramEProcess::with_margins(&edges, &margins, cfg)
                }
            };
            match made {
                Some(p) => p,
                None => {
                    let why = format!(
                        "the baseline has served too few requests above its bucket edges to \
                         set their margins (at least {MIN_ABOVE} above an edge, {total} requests \
                         so far); the test starts once it has"
                    );
                    return (Check::new(spec, Verdict::Nodata, why), kept());
                }
            }
        }
    };
    let primed = state.primed_step == Some(step);
    if primed {
        if let Some(scale) = &process.scale {
            let tick = tick_between(&scale.edges, &state.last, &now);
            process.update_scaled(&tick, cfg.log_tick_cap());
        } else {
            let tick = tick_between(&process.edges, &state.last, &now);
            process.update_capped(&tick, cfg.margin, cfg.log_tick_cap());
        }
    }
    let rejects = process.rejects(cfg);
    let (ev, what) = evidence(&process, cfg);
    state.last = now;
    state.primed_step = Some(step);
    state.histogram = Some(process);
    let (verdict, reason) = tick_verdict(primed, rejects, "buckets", ev.sentence(&what));
    (evidence_check(spec, verdict, reason, ev), Some(state))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(pairs: &[(&str, &str)], v: f64) -> Labeled {
        let l = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        (l.collect(), v)
    }

    #[test]
    fn edges_are_matched_by_value_and_inf_is_the_count() {
        let b = [
            s(&[("pod", "a"), ("le", "0.50")], 9.0),
            s(&[("pod", "b"), ("le", "5e-01")], 4.0),
            s(&[("pod", "a"), ("le", "+Inf")], 10.0),
        ];
        let c = [s(&[("pod", "a")], 10.0), s(&[("pod", "b")], 5.0)];
        let (events, requests) = bucket_counters("h", &b, &c).unwrap();
        assert_eq!(edges_of(&events), vec![0.5]);
        assert_eq!(at_edge(&events, 0.5).len(), 2);
        assert_eq!(requests.len(), 2);
    }

    #[test]
    fn a_missing_edge_carries_no_slow_requests() {
        let before = Counters::default();
        let mut now = Counters::default();
        now.canary_requests.insert("pod=a".into(), 10.0);
        let t = side(
            &[0.5],
            (&before.canary_events, &before.canary_requests),
            (&now.canary_events, &now.canary_requests),
        );
        assert!(t.le[0].is_nan());
    }

    /// One group's cumulative histogram of one pod: `slow` of `total` requests above 0.5 s,
    /// `slower` above 1 s.
    fn group(total: f64, slow: f64, slower: f64) -> (CounterSnapshot, CounterSnapshot) {
        let b = [
            s(&[("pod", "a"), ("le", "0.5")], total - slow),
            s(&[("pod", "a"), ("le", "1")], total - slower),
            s(&[("pod", "a"), ("le", "+Inf")], total),
        ];
        bucket_counters("h", &b, &[s(&[("pod", "a")], total)]).unwrap()
    }

    fn counters(canary: (f64, f64, f64), baseline: (f64, f64, f64)) -> Counters {
        let (ce, cr) = group(canary.0, canary.1, canary.2);
        let (be, br) = group(baseline.0, baseline.1, baseline.2);
        Counters {
            canary_events: ce,
            canary_requests: cr,
            baseline_events: be,
            baseline_requests: br,
        }
    }

    fn spec() -> MetricSpec {
        serde_saphyr::from_str(
            "{name: latency_vs_baseline, test: sequential_histogram, histogram: h}",
        )
        .unwrap()
    }

    #[test]
    fn a_heavier_tail_fails_after_the_first_look_records() {
        let cfg = SequentialConfig {
            alpha: 0.01,
            ..SequentialConfig::default()
        };
        let m = spec();
        // No baseline history yet: nothing to set the edges' margins from.
        let empty = counters((0.0, 0.0, 0.0), (0.0, 0.0, 0.0));
        let (check, state) = judge_histogram(&m, &cfg, None, Ok(empty), 0);
        assert_eq!(check.verdict, Verdict::Nodata, "{}", check.reason);
        assert!(state.is_none());
        // The first look with history records the buckets.
        let first = counters((1000.0, 300.0, 100.0), (1000.0, 150.0, 40.0));
        let (check, mut state) = judge_histogram(&m, &cfg, None, Ok(first), 0);
        assert_eq!(check.verdict, Verdict::Nodata, "{}", check.reason);
        let mut failed_at = None;
        for k in 2..=20 {
            let k = k as f64;
            // 1,000 requests a tick each; the canary's share above 0.5 s is 30 % vs 15 %.
            let now = counters(
                (1000.0 * k, 300.0 * k, 100.0 * k),
                (1000.0 * k, 150.0 * k, 40.0 * k),
            );
            let (check, next) = judge_histogram(&m, &cfg, state.as_ref(), Ok(now), 0);
            state = next;
            if check.verdict == Verdict::Fail {
                assert!(check.reason.contains("slower than"), "{}", check.reason);
                failed_at = Some(k);
                break;
            }
            assert_eq!(check.verdict, Verdict::Pass, "{}", check.reason);
        }
        assert!(failed_at.is_some_and(|k| k <= 4.0), "{failed_at:?}");
        let p = state
            .and_then(|s| s.histogram)
            .expect("histogram state kept");
        assert_eq!(p.edges, vec![0.5, 1.0]);
    }

    #[test]
    fn identical_tails_pass_and_a_reset_makes_no_evidence() {
        let cfg = SequentialConfig::default();
        let m = spec();
        let mut state = None;
        let mut last = Verdict::Nodata;
        for k in 0..30 {
            // Both restart (counters drop) at tick 15.
            let k = if k >= 15 { (k - 15) as f64 } else { k as f64 };
            let now = counters(
                (1000.0 * k, 150.0 * k, 40.0 * k),
                (1000.0 * k, 150.0 * k, 40.0 * k),
            );
            let (check, next) = judge_histogram(&m, &cfg, state.as_ref(), Ok(now), 0);
            state = next;
            last = check.verdict;
            assert_ne!(last, Verdict::Fail, "{}", check.reason);
        }
        assert_eq!(last, Verdict::Pass);
        let e = state.and_then(|s| s.histogram).map(|p| p.e_value());
        assert!(e.is_some_and(|e| e < 1.0), "{e:?}");
    }

    #[test]
    fn too_many_edges_are_refused() {
        let b: Vec<Labeled> = (0..=MAX_EDGES)
            .map(|i| s(&[("le", &format!("{}", i + 1))], 1.0))
            .collect();
        let err = bucket_counters("h", &b, &[s(&[], 1.0)]).unwrap_err();
        assert!(err.contains("bucket edges"), "{err}");
    }
}

#[cfg(test)]
mod increase_tests {
    use super::*;

    /// `side` sums per-series increases in one pass; each must be what the count test's
    /// [`counter_increase`] makes of the same series (growth, reset, new series, junk).
    #[test]
    fn one_series_increase_is_the_count_tests() {
        for (prev, now) in [
            (Some(5.0), 9.0),
            (Some(9.0), 4.0),
            (None, 7.0),
            (Some(1.0), f64::NAN),
            (Some(1.0), -3.0),
        ] {
            let before: CounterSnapshot = prev.map(|p| ("s".to_string(), p)).into_iter().collect();
            let after: CounterSnapshot = [("s".to_string(), now)].into();
            assert_eq!(
                series_increase(prev, now),
                counter_increase(&before, &after),
                "{prev:?} -> {now}"
            );
        }
    }
}
