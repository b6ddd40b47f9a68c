//! Gathering one tick from Prometheus: range queries for window metrics, counter snapshots for
//! sequential ones, then the pure judge. Shared by the rollout task and `canaryd analyze`, so
//! a replay decides exactly as a live rollout would.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};

use super::{Rollout, Tick};
use crate::judge::sequential::{CounterSnapshot, Counters, judge_counts};
use crate::judge::{Check, MetricInput, Observation, Verdict, judge_tick};
use crate::rules::schema::{MetricKind, MetricSpec};
use crate::rules::{Group, QueryContext, Rule};
use crate::source::PrometheusSource;
use crate::source::prometheus::LabeledValue;

/// Queries and judges one tick ending at `end`; `window` is the range of window metrics.
pub async fn gather(
    source: &PrometheusSource,
    rule: &Rule,
    rollout: &Rollout,
    end: SystemTime,
    window: Duration,
) -> Tick {
    let a = &rule.spec.analysis;
    let ctx = QueryContext {
        rollout: &rollout.id,
        version: &rollout.version,
    };
    let sequential_metrics = rule.sequential_metrics();
    let mut inputs = Vec::new();
    let mut states = BTreeMap::new();
    for m in rule.metrics() {
        let input = match m.kind() {
            MetricKind::Window(q) => match (
                rule.render(q, Group::Canary, &ctx),
                rule.render(q, Group::Baseline, &ctx),
            ) {
                (Ok(cq), Ok(bq)) => {
                    let (c, b) = tokio::join!(
                        source.range(&cq, end, window, a.step),
                        source.range(&bq, end, window, a.step)
                    );
                    MetricInput::Window(c, b)
                }
                (Err(e), _) | (_, Err(e)) => {
                    let failed = Observation::Failed {
                        message: e.to_string(),
                    };
                    MetricInput::Window(failed.clone(), failed)
                }
            },
            MetricKind::Counts { .. } | MetricKind::Slow { .. } => {
                let counters = counters(source, rule, m, &ctx, end).await;
                let cfg = m.sequential_config(sequential_metrics);
                let (check, state) = judge_counts(
                    m,
                    &cfg,
                    rollout.sequential.get(&m.name),
                    counters,
                    rollout.step,
                );
                if let Some(state) = state {
                    states.insert(m.name.clone(), state);
                }
                MetricInput::Judged(Box::new(check))
            }
            MetricKind::Invalid => MetricInput::Judged(Box::new(invalid(m))),
        };
        inputs.push(input);
    }
    let (checks, score) = judge_tick(rule.metrics(), &inputs, a);
    Tick {
        at: DateTime::<Utc>::from(end),
        step: rollout.step,
        checks,
        score,
        sequential: states,
    }
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

/// The four counters of a sequential metric at `end`.
async fn counters(
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
                slow_counters(histogram, le, &b?, &c?)?
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
