//! A sequential metric's four counters (canary and baseline events and requests) read at the
//! end of a tick, one snapshot per series: the event and request queries of `test: sequential`,
//! or a histogram's `_bucket` and `_count` for the slow-request and per-bucket tests.

use std::collections::BTreeMap;
use std::time::SystemTime;

use crate::judge::sequential::{CounterSnapshot, Counters};
use crate::judge::sequential_hist_tick::bucket_counters;
use crate::rules::schema::{MetricKind, MetricSpec};
use crate::rules::{Group, QueryContext, Rule};
use crate::source::PrometheusSource;
use crate::source::prometheus::LabeledValue;

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
