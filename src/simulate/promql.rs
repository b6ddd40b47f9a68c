//! The world answers a rule's queries as Prometheus would: `histogram_quantile` with Prometheus'
//! own interpolation, ratios of summed increases over the query's range, gauges at the instant.
//!
//! canaryd has no PromQL engine, so a query is recognised by the series it names (the world
//! exports `http_requests_total`, `http_request_duration_seconds`, `process_cpu_seconds_total`
//! and `db_pool_connections_*`, the names the shipped rules and the demo use) and by its range.
//! A metric whose query names none of them is reported as not simulated, never guessed.

use std::time::Duration;

use super::world::{BUCKETS, GO_BUCKETS, SlotTotals, World};

/// What a window metric's query measures, in the world's terms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Signal {
    /// 5xx increase / request increase over the range.
    ErrorRatio { range: Duration },
    /// `histogram_quantile(q, sum by (le) (rate(bucket[range])))`.
    Quantile { q: f64, range: Duration },
    /// `avg(rate(process_cpu_seconds_total[range]))`: cores per pod.
    Cpu { range: Duration },
    /// Connections in use / pool size, summed over pods, at the instant.
    PoolUtilization,
    /// `1 - sum(rate(bucket{le="x"}[range])) / sum(rate(_count[range]))`: the share of requests
    /// slower than a bucket edge (how "P95 > 10 s" is read exactly from Go's buckets).
    SlowerShare { le: f64, range: Duration },
}

/// The edge of a `le="x"` matcher in a query, if it names one.
fn le_of(query: &str) -> Option<f64> {
    let at = query.find("le=\"")? + 4;
    let end = at + query[at..].find('"')?;
    query[at..end].trim().parse().ok()
}

/// The first `[duration]` in a query (its range selector); one step when there is none.
fn range_of(query: &str) -> Option<Duration> {
    let open = query.find('[')?;
    let close = open + query[open..].find(']')?;
    humantime::parse_duration(query[open + 1..close].trim()).ok()
}

/// Recognises a rendered window query; None when it names no series the world exports.
pub fn recognise(query: &str) -> Option<Signal> {
    let range = range_of(query);
    if query.contains("http_request_duration_seconds_bucket")
        && query.contains("http_request_duration_seconds_count")
        && !query.contains("histogram_quantile(")
    {
        let le = le_of(query)?;
        return Some(Signal::SlowerShare { le, range: range? });
    }
    if let Some(at) = query.find("histogram_quantile(") {
        if !query.contains("http_request_duration_seconds_bucket") {
            return None;
        }
        let rest = &query[at + "histogram_quantile(".len()..];
        let q = rest.split(',').next()?.trim().parse::<f64>().ok()?;
        return Some(Signal::Quantile { q, range: range? });
    }
    if query.contains("db_pool_connections_in_use") && query.contains("db_pool_connections_max") {
        return Some(Signal::PoolUtilization);
    }
    if query.contains("process_cpu_seconds_total") {
        return Some(Signal::Cpu { range: range? });
    }
    if query.contains("http_requests_total") && query.contains("5..") && query.contains('/') {
        return Some(Signal::ErrorRatio { range: range? });
    }
    None
}

/// Prometheus' `bucketQuantile` (promql/quantile.go) on cumulative bucket counts with upper
/// bounds `edges` and a final +Inf bucket: linear interpolation inside the bucket that holds the
/// rank, the lower bound of the first bucket taken as 0, and the upper bound of the highest
/// finite bucket when the rank falls into +Inf. NaN without observations.
pub fn histogram_quantile(q: f64, edges: &[f64], cumulative: &[f64]) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    if cumulative.len() != edges.len() + 1 || edges.is_empty() {
        return f64::NAN;
    }
    // ensureMonotonic: a bucket never holds fewer than the one below it.
    let mut counts = cumulative.to_vec();
    for i in 1..counts.len() {
        counts[i] = counts[i].max(counts[i - 1]);
    }
    let observations = counts[counts.len() - 1];
    if observations == 0.0 || observations.is_nan() {
        return f64::NAN;
    }
    let mut rank = q * observations;
    let last = counts.len() - 1;
    let b = (0..last).find(|&i| counts[i] >= rank).unwrap_or(last);
    if b == last {
        return edges[edges.len() - 1];
    }
    if b == 0 && edges[0] <= 0.0 {
        return edges[0];
    }
    let (mut start, end, mut count) = (0.0, edges[b], counts[b]);
    if b > 0 {
        start = edges[b - 1];
        count -= counts[b - 1];
        rank -= counts[b - 1];
    }
    start + (end - start) * (rank / count)
}

fn slots_for(world: &World, d: Duration) -> usize {
    ((d.as_secs_f64() / world.slot_seconds).ceil() as usize).max(1)
}

/// The signal's value for one group over the slots that end at `end` (exclusive).
pub fn value(world: &World, signal: Signal, group: usize, end: usize) -> f64 {
    if end == 0 || end > world.history.len() {
        return f64::NAN;
    }
    let over = |range: Duration| -> &[[SlotTotals; 2]] {
        &world.history[end.saturating_sub(slots_for(world, range))..end]
    };
    let sum = |slots: &[[SlotTotals; 2]], f: fn(&SlotTotals) -> f64| -> f64 {
        slots.iter().map(|s| f(&s[group])).sum()
    };
    match signal {
        Signal::ErrorRatio { range } => {
            let s = over(range);
            sum(s, |t| t.errors) / sum(s, |t| t.requests)
        }
        Signal::Quantile { q, range } => {
            let s = over(range);
            let mut buckets = [0.0; BUCKETS];
            for slot in s {
                for (b, v) in buckets.iter_mut().zip(slot[group].buckets) {
                    *b += v;
                }
            }
            histogram_quantile(q, &GO_BUCKETS, &buckets)
        }
        Signal::SlowerShare { le, range } => {
            let s = over(range);
            let Some(i) = GO_BUCKETS
                .iter()
                .position(|e| (e - le).abs() <= 1e-9 * le.max(1.0))
            else {
                return f64::NAN;
            };
            let (fast, all) = s.iter().fold((0.0, 0.0), |(f, a), slot| {
                (
                    f + slot[group].buckets[i],
                    a + slot[group].buckets[BUCKETS - 1],
                )
            });
            (all - fast) / all
        }
        Signal::Cpu { range } => {
            let s = over(range);
            let pods = s.last().map_or(0, |t| t[group].pods).max(1);
            sum(s, |t| t.cpu_seconds) / (s.len() as f64 * world.slot_seconds) / pods as f64
        }
        Signal::PoolUtilization => {
            let t = &world.history[end - 1][group];
            t.pool_in_use / t.pool_max
        }
    }
}

/// A range query's points: `window / step + 1` evaluations ending at slot `end`, as the
/// source's `query_range` returns them (NaN for points before the world began).
pub fn range(
    world: &World,
    signal: Signal,
    group: usize,
    end: usize,
    window: Duration,
    step: Duration,
) -> Vec<f64> {
    range_points(world, signal, group, end, window, step)
        .into_iter()
        .map(|(_, v)| v)
        .collect()
}

/// As [`range`], each value with the slot it was evaluated at (points before the world began
/// are left out, as Prometheus returns no point where a series did not exist yet).
pub fn range_points(
    world: &World,
    signal: Signal,
    group: usize,
    end: usize,
    window: Duration,
    step: Duration,
) -> Vec<(usize, f64)> {
    let per_step = slots_for(world, step);
    let points = (window.as_secs_f64() / step.as_secs_f64().max(1e-9)).floor() as usize + 1;
    (0..points)
        .rev()
        .filter_map(|k| end.checked_sub(k * per_step))
        .map(|at| (at, value(world, signal, group, at)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantile_interpolates_as_prometheus_does() {
        let edges = [0.1, 0.5, 1.0];
        // 50 requests ≤ 0.1 s, 40 more ≤ 0.5 s, 10 more ≤ 1 s, none slower.
        let c = [50.0, 90.0, 100.0, 100.0];
        assert_eq!(histogram_quantile(0.5, &edges, &c), 0.1);
        // Rank 90 lies at the top of the second bucket.
        assert!((histogram_quantile(0.9, &edges, &c) - 0.5).abs() < 1e-12);
        // Rank 95: half-way through the (0.5, 1] bucket.
        assert!((histogram_quantile(0.95, &edges, &c) - 0.75).abs() < 1e-12);
        // Rank 25 in the first bucket: its lower bound is taken as 0.
        assert!((histogram_quantile(0.25, &edges, &c) - 0.05).abs() < 1e-12);
        // A rank in +Inf answers the highest finite edge, never more: with the Go default
        // buckets, "p95 > 10 s" can never be seen through histogram_quantile.
        let slow = [50.0, 90.0, 94.0, 100.0];
        assert_eq!(histogram_quantile(0.95, &edges, &slow), 1.0);
        assert!(histogram_quantile(0.5, &edges, &[0.0; 4]).is_nan());
        assert_eq!(histogram_quantile(1.5, &edges, &c), f64::INFINITY);
        // Non-monotonic input (a scrape between bucket updates) is made monotonic first.
        let bumpy = [50.0, 45.0, 100.0, 100.0];
        assert!((histogram_quantile(0.5, &edges, &bumpy) - 0.1).abs() < 1e-12);
    }

    #[test]
    fn queries_are_recognised_by_series_and_range() {
        assert_eq!(
            recognise(
                "histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket{ a=\"b\" }[1m])))"
            ),
            Some(Signal::Quantile {
                q: 0.95,
                range: Duration::from_secs(60)
            })
        );
        assert_eq!(
            recognise(
                "sum(rate(http_requests_total{ a=\"b\", code=~\"5..\" }[5m])) / sum(rate(http_requests_total{ a=\"b\" }[5m]))"
            ),
            Some(Signal::ErrorRatio {
                range: Duration::from_secs(300)
            })
        );
        assert_eq!(
            recognise("sum(db_pool_connections_in_use{}) / sum(db_pool_connections_max{})"),
            Some(Signal::PoolUtilization)
        );
        assert_eq!(
            recognise(
                "1 - sum(rate(http_request_duration_seconds_bucket{ a=\"b\", le=\"10\" }[1m])) / sum(rate(http_request_duration_seconds_count{ a=\"b\" }[1m]))"
            ),
            Some(Signal::SlowerShare {
                le: 10.0,
                range: Duration::from_secs(60)
            })
        );
        assert_eq!(recognise("sum(rate(queue_depth[1m]))"), None);
    }
}
