//! One tick of analysis, in two halves with a seam between them:
//!
//! - [`fetch`] does the I/O: every metric's range queries and counter snapshots, concurrently,
//!   raw (points keep their timestamps, counters their series), into a [`Gathered`];
//! - [`judge_gathered`] is pure: it decides which samples belong to the current step and are
//!   fresh, runs the judge and returns the [`Tick`] the state machine consumes.
//!
//! The live rollout task and `canaryd analyze` both call [`gather`] (= fetch + judge); the
//! simulator hands its own `Gathered` to [`judge_gathered`]. All three decide by the same rules,
//! so a replay or a simulation agrees with the daemon.
//!
//! The rules that make stale data unable to promote (issue 16):
//! - a window metric judges only points taken at or after the current weight was confirmed plus
//!   `warmup`; earlier points are named in the reason but never counted;
//! - the newest finite point of each group must be at most `analysis.max_staleness` old;
//! - a sequential metric is `nodata` at a tick in which its counters did not move at this weight
//!   (a frozen or vanished counter carries no evidence).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use futures_util::StreamExt;

use crate::judge::observation::{Admission, Series};
use crate::judge::sequential::{CounterSnapshot, Counters, judge_counts};
use crate::judge::sequential_hist_tick::{bucket_counters, judge_histogram};
use crate::judge::{MetricInput, Observation, judge_tick};
use crate::rollout::{Rollout, Tick};
use crate::rules::schema::{MetricKind, MetricSpec};
use crate::rules::{Group, QueryContext, Rule};
use crate::source::PrometheusSource;
use crate::source::prometheus::LabeledValue;
use crate::verdict::{Check, Verdict};

/// Metrics fetched at once within one tick. Each metric runs two (window) or four (sequential)
/// queries together, so this bounds a tick to a few dozen requests in flight.
const CONCURRENT_METRICS: usize = 8;

/// What one metric's queries returned, before any judging.
#[derive(Debug, Clone, PartialEq)]
pub enum Fetched {
    /// A window metric's canary and baseline range queries, every point with its time.
    Window { canary: Series, baseline: Series },
    /// A sequential metric's four counters at the tick, per series; `Err` when they could not
    /// be read (the message says why).
    Counters(Result<Counters, String>),
}

/// Everything one tick fetched, raw: the input of [`judge_gathered`].
#[derive(Debug, Clone, PartialEq)]
pub struct Gathered {
    /// When the tick looked: the end of every query, and the time ages are measured from.
    pub at: DateTime<Utc>,
    /// By metric name. A metric of the rule missing here is judged `error`.
    pub metrics: BTreeMap<String, Fetched>,
}

/// Queries and judges one tick ending at `end`; `window` is the range of window metrics.
pub async fn gather(
    source: &PrometheusSource,
    rule: &Rule,
    rollout: &Rollout,
    end: SystemTime,
    window: Duration,
) -> Tick {
    let gathered = fetch(source, rule, rollout, end, window).await;
    judge_gathered(rule, rollout, &gathered)
}

/// Runs every query of one tick, metrics concurrently (at most [`CONCURRENT_METRICS`] at a
/// time), so one slow query costs the tick its own latency, not the sum of all of them.
pub async fn fetch(
    source: &PrometheusSource,
    rule: &Rule,
    rollout: &Rollout,
    end: SystemTime,
    window: Duration,
) -> Gathered {
    let ctx = QueryContext {
        rollout: &rollout.id,
        version: &rollout.version,
    };
    let ctx = &ctx;
    let step = rule.spec.analysis.step;
    // Collected first: a lazy `map` of closures inside the stream trips the compiler's `Send`
    // inference for the spawned rollout task (higher-ranked lifetimes).
    let fetches: Vec<_> = rule
        .metrics()
        .map(|m| async move {
            let fetched = match m.kind() {
                MetricKind::Window(q) => match (
                    rule.render(q, Group::Canary, ctx),
                    rule.render(q, Group::Baseline, ctx),
                ) {
                    (Ok(cq), Ok(bq)) => {
                        let (canary, baseline) = tokio::join!(
                            source.range_series(&cq, end, window, step),
                            source.range_series(&bq, end, window, step)
                        );
                        Fetched::Window { canary, baseline }
                    }
                    (Err(e), _) | (_, Err(e)) => {
                        let failed = Series::Failed {
                            message: e.to_string(),
                        };
                        Fetched::Window {
                            canary: failed.clone(),
                            baseline: failed,
                        }
                    }
                },
                MetricKind::Counts { .. }
                | MetricKind::Slow { .. }
                | MetricKind::Histogram { .. } => {
                    Fetched::Counters(counters(source, rule, m, ctx, end).await)
                }
                MetricKind::Invalid => return None,
            };
            Some((m.name.clone(), fetched))
        })
        .collect();
    let fetched: Vec<Option<(String, Fetched)>> = futures_util::stream::iter(fetches)
        .buffered(CONCURRENT_METRICS)
        .collect()
        .await;
    Gathered {
        at: DateTime::<Utc>::from(end),
        metrics: fetched.into_iter().flatten().collect(),
    }
}

/// Judges one gathered tick for `rollout` at its current step. Pure: the same rule, rollout and
/// data give the same tick, live, in a replay or in a simulation.
///
/// Window metrics see only points taken at or after the step's weight confirmation plus warmup,
/// and only if the newest is at most `max_staleness` old; sequential metrics must have moved
/// at this weight since the last tick. Everything else is `nodata` with a reason naming what is
/// stale and since when, so no tick judged on old or other-weight data can count toward
/// advancing.
pub fn judge_gathered(rule: &Rule, rollout: &Rollout, gathered: &Gathered) -> Tick {
    let a = &rule.spec.analysis;
    let warmup = chrono::Duration::from_std(a.warmup).unwrap_or(chrono::Duration::MAX);
    let since = rollout
        .step_started_at
        .and_then(|s| s.checked_add_signed(warmup));
    let admission = Admission {
        // Before any weight is confirmed nothing counts: every point is "earlier".
        since: since.unwrap_or(gathered.at),
        now: gathered.at,
        max_staleness: a.max_staleness(),
        min_samples: a.min_samples,
    };
    let sequential_metrics = rule.sequential_metrics();
    let mut inputs = Vec::new();
    let mut states = BTreeMap::new();
    let mut moved = BTreeMap::new();
    for m in rule.metrics() {
        let fetched = gathered.metrics.get(&m.name);
        let input = match (m.kind(), fetched) {
            (MetricKind::Invalid, _) => MetricInput::Judged(Box::new(invalid(m))),
            (MetricKind::Window(_), Some(Fetched::Window { canary, baseline })) => {
                MetricInput::Window(canary.admit(&admission), baseline.admit(&admission))
            }
            (
                kind @ (MetricKind::Counts { .. }
                | MetricKind::Slow { .. }
                | MetricKind::Histogram { .. }),
                Some(Fetched::Counters(now)),
            ) => {
                let cfg =
                    m.sequential_config_every(sequential_metrics, rule.spec.analysis.interval);
                let previous = rollout.sequential.get(&m.name);
                let judge = match kind {
                    MetricKind::Histogram { .. } => judge_histogram,
                    _ => judge_counts,
                };
                let (mut check, state) = judge(m, &cfg, previous, now.clone(), rollout.step);
                match not_moved(previous, now, rollout) {
                    None => {
                        if previous.is_some_and(|p| p.primed_step == Some(rollout.step)) {
                            moved.insert(m.name.clone(), gathered.at);
                        }
                    }
                    Some(why) if check.verdict == Verdict::Pass => {
                        let last = rollout.counters_moved.get(&m.name).copied();
                        if let Some(stale) = counters_stale(last, &admission, &why) {
                            check.verdict = Verdict::Nodata;
                            check.reason = format!("{stale} ({})", check.reason);
                        }
                    }
                    Some(_) => {}
                }
                if let Some(state) = state {
                    states.insert(m.name.clone(), state);
                }
                MetricInput::Judged(Box::new(check))
            }
            (_, found) => {
                let message = match found {
                    None => "nothing was fetched for this metric".to_string(),
                    Some(_) => "fetched data does not match the metric's kind".to_string(),
                };
                let failed = Observation::Failed { message };
                MetricInput::Window(failed.clone(), failed)
            }
        };
        inputs.push(input);
    }
    let (checks, score) = judge_tick(rule.metrics(), &inputs, a);
    Tick {
        at: gathered.at,
        step: rollout.step,
        checks,
        score,
        sequential: states,
        samples_since: since,
        counters_moved: moved,
    }
}

/// Counters that did not move at this tick still count while their last movement at this
/// weight is at most `max_staleness` old (a scrape may simply not have landed between two
/// ticks); otherwise the metric is `nodata`, naming since when they stood still.
fn counters_stale(last: Option<DateTime<Utc>>, a: &Admission, why: &str) -> Option<String> {
    let Some(last) = last.filter(|t| *t >= a.since) else {
        return Some(format!("{why}; they have not moved at this weight"));
    };
    let still = (a.now - last).to_std().unwrap_or_default();
    (still > a.max_staleness).then(|| {
        format!(
            "{why}; they last moved {} s ago, at {} (max_staleness {})",
            still.as_secs(),
            last.format("%H:%M:%S UTC"),
            humantime::format_duration(a.max_staleness)
        )
    })
}

/// Why a sequential metric's counters carry no evidence at this tick, if they do not: the
/// canary's requests did not increase since the last look at this step (it stopped serving or
/// its series froze), or the baseline's did not while it still takes traffic.
fn not_moved(
    previous: Option<&crate::judge::sequential::SequentialState>,
    now: &Result<Counters, String>,
    rollout: &Rollout,
) -> Option<String> {
    let (Some(previous), Ok(now)) = (previous, now) else {
        return None;
    };
    if previous.primed_step != Some(rollout.step) {
        return None;
    }
    let moved = now.since(&previous.last);
    if moved.canary_requests <= 0.0 {
        return Some(format!(
            "canary's request counters did not move since the last tick at weight {}%",
            rollout.weight
        ));
    }
    // At 100 % the baseline takes no traffic by design; below it, a frozen baseline leaves
    // nothing to compare with.
    if rollout.weight < 100 && moved.baseline_requests <= 0.0 {
        return Some(format!(
            "baseline's request counters did not move since the last tick at weight {}%",
            rollout.weight
        ));
    }
    None
}

fn invalid(m: &MetricSpec) -> Check {
    let mut c = Check::new(m, Verdict::Error, String::new());
    c.reason = "metric has neither a query nor sequential counters".into();
    c
}

/// Per-series key without the label that varies between the series we pair up.
fn key(labels: &BTreeMap<String, String>, drop: &[&str]) -> String {
    labels
        .iter()
        .filter(|(k, _)| !drop.contains(&k.as_str()))
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn snapshot(series: &[LabeledValue]) -> CounterSnapshot {
    series.iter().map(|(l, v)| (key(l, &[]), *v)).collect()
}

/// A histogram's `_bucket` series (every `le`) and its `_count` for one group at `end`, asked
/// at once: both sequential histogram kinds read the same two queries.
async fn buckets_and_count(
    source: &PrometheusSource,
    rule: &Rule,
    group: Group,
    histogram: &str,
    end: SystemTime,
) -> Result<(Vec<LabeledValue>, Vec<LabeledValue>), String> {
    let sel = match group {
        Group::Canary => &rule.spec.selector.canary,
        Group::Baseline => &rule.spec.selector.baseline,
    };
    let (bq, cq) = (
        format!("{histogram}_bucket{{ {sel} }}"),
        format!("{histogram}_count{{ {sel} }}"),
    );
    let (b, c) = tokio::join!(
        source.instant_series(&bq, end),
        source.instant_series(&cq, end)
    );
    Ok((b?, c?))
}

/// The four counters of a sequential metric at `end`.
pub(super) async fn counters(
    source: &PrometheusSource,
    rule: &Rule,
    m: &MetricSpec,
    ctx: &QueryContext<'_>,
    end: SystemTime,
) -> Result<Counters, String> {
    let mut out = Counters::default();
    for group in [Group::Canary, Group::Baseline] {
        let (events, requests) = match m.kind() {
            MetricKind::Counts { events, requests } => {
                let e = rule.render(events, group, ctx).map_err(|e| e.to_string())?;
                let r = rule
                    .render(requests, group, ctx)
                    .map_err(|e| e.to_string())?;
                let (e, r) = tokio::join!(
                    source.instant_series(&e, end),
                    source.instant_series(&r, end)
                );
                (snapshot(&e?), snapshot(&r?))
            }
            MetricKind::Slow { histogram, le } => {
                let (b, c) = buckets_and_count(source, rule, group, histogram, end).await?;
                slow_counters(histogram, le, &b, &c)?
            }
            MetricKind::Histogram { histogram } => {
                let (b, c) = buckets_and_count(source, rule, group, histogram, end).await?;
                bucket_counters(histogram, &b, &c)?
            }
            _ => return Err("not a sequential metric".into()),
        };
        match group {
            Group::Canary => (out.canary_events, out.canary_requests) = (events, requests),
            Group::Baseline => (out.baseline_events, out.baseline_requests) = (events, requests),
        }
    }
    Ok(out)
}

/// Slow requests per series: `_count` minus the bucket whose edge is `le`. The edge is matched
/// by value, so `0.5`, `0.50` and `5e-01` are the same bucket.
pub fn slow_counters(
    histogram: &str,
    le: f64,
    buckets: &[LabeledValue],
    counts: &[LabeledValue],
) -> Result<(CounterSnapshot, CounterSnapshot), String> {
    let fast: CounterSnapshot = buckets
        .iter()
        .filter(|(l, _)| {
            l.get("le")
                .and_then(|v| v.parse::<f64>().ok())
                .is_some_and(|edge| (edge - le).abs() <= 1e-9 * le.abs().max(1.0))
        })
        .map(|(l, v)| (key(l, &["le", "__name__"]), *v))
        .collect();
    let requests: CounterSnapshot = counts
        .iter()
        .map(|(l, v)| (key(l, &["__name__"]), *v))
        .collect();
    if fast.is_empty() && !requests.is_empty() {
        let mut edges: Vec<String> = buckets
            .iter()
            .filter_map(|(l, _)| l.get("le").cloned())
            .collect();
        edges.sort();
        edges.dedup();
        return Err(format!(
            "{histogram} has no bucket le=\"{le}\"; slower_than must be one of its edges: {}",
            edges.join(", ")
        ));
    }
    let events = requests
        .iter()
        .filter_map(|(k, total)| fast.get(k).map(|f| (k.clone(), (total - f).max(0.0))))
        .collect();
    Ok((events, requests))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(pairs: &[(&str, &str)], v: f64) -> LabeledValue {
        (
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            v,
        )
    }

    #[test]
    fn slow_requests_are_count_minus_the_bucket_matched_by_value() {
        let buckets = [
            series(&[("pod", "a"), ("le", "0.25")], 80.0),
            series(&[("pod", "a"), ("le", "0.50")], 90.0),
        ];
        let counts = [series(&[("pod", "a")], 100.0)];
        let (events, requests) = slow_counters("h", 0.5, &buckets, &counts).unwrap();
        assert_eq!(events.values().copied().collect::<Vec<_>>(), vec![10.0]);
        assert_eq!(requests.values().copied().collect::<Vec<_>>(), vec![100.0]);
    }

    #[test]
    fn a_missing_bucket_edge_is_named_with_the_edges_that_exist() {
        let buckets = [
            series(&[("le", "0.25")], 80.0),
            series(&[("le", "1")], 95.0),
        ];
        let counts = [series(&[], 100.0)];
        let err = slow_counters("http_seconds", 0.5, &buckets, &counts).unwrap_err();
        assert!(
            err.contains("le=\"0.5\"") && err.contains("0.25, 1"),
            "{err}"
        );
    }
}
