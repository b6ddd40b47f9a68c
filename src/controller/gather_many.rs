//! The fetch half of many rollouts' ticks at once, so their window queries can be batched.
//!
//! [`fetch_many`] gives, for every `(rule, rollout)`, the [`Gathered`] that
//! [`analysis::fetch`] would give it: the same queries rendered the same way, answered by
//! [`source::batch`](crate::source::batch) with batching on (one Prometheus query per group of
//! alike queries, each result split back and checked) or one by one with batching off.
//! Sequential metrics (counter snapshots) are still read per rollout through
//! [`analysis::fetch`]: their instant queries keep every series for the sequential test.

use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use futures_util::StreamExt;

use super::analysis::{self, Fetched, Gathered, Metrics, TickQuery};
use crate::judge::observation::Series;
use crate::rollout::Rollout;
use crate::rules::schema::MetricKind;
use crate::rules::{Group, QueryContext, Rule};
use crate::source::PrometheusSource;
use crate::source::batch::{self, Limits, RangeRequest};
use crate::source::tick_deadline::{TickDeadline, within};

/// Rollouts fetched at once when batching is off, and for their counters.
const CONCURRENT_ROLLOUTS: usize = 8;

/// One window metric's two requests, in the order of the batched request list.
struct Slot {
    rollout: usize,
    metric: String,
    /// `Ok` when its canary and baseline requests are the next two in the list, else why the
    /// queries could not be rendered.
    requests: Result<(), String>,
}

/// The tick of every `(rule, rollout)` ending at `end`; result `i` belongs to `rollouts[i]`.
/// `batched: false` asks every query alone (what the scale bench compares against).
pub async fn fetch_many(
    source: &PrometheusSource,
    rollouts: &[(&Rule, &Rollout)],
    end: SystemTime,
    window: Duration,
    batched: bool,
) -> Vec<Gathered> {
    fetch_many_by(
        source,
        rollouts,
        end,
        window,
        batched,
        &Limits::default(),
        None,
    )
    .await
}

/// [`fetch_many`] with explicit batch limits, giving up at `by` (when set) every query still
/// running: a batch job's members,
/// a rollout's counters or (unbatched) a rollout's metric then fail with the deadline's message
/// and are judged `error`; whatever answered in time is judged as usual.
pub async fn fetch_many_by(
    source: &PrometheusSource,
    rollouts: &[(&Rule, &Rollout)],
    end: SystemTime,
    window: Duration,
    batched: bool,
    limits: &Limits,
    by: Option<TickDeadline>,
) -> Vec<Gathered> {
    if !batched {
        let windows: usize = rollouts.iter().map(|(r, _)| window_metrics(r) * 2).sum();
        batch::count_queries("single", windows);
        // Futures collected first: a lazy `map` inside the stream trips the compiler's `Send`
        // inference for the spawning task (higher-ranked lifetimes), as in `analysis::fetch`.
        let fetches: Vec<_> = rollouts
            .iter()
            .map(|(rule, rollout)| {
                analysis::fetch(source, rule, rollout, TickQuery { end, window, by })
            })
            .collect();
        return futures_util::stream::iter(fetches)
            .buffered(CONCURRENT_ROLLOUTS)
            .collect()
            .await;
    }
    let (requests, slots) = requests(rollouts, end, window);
    let counters: Vec<_> = rollouts
        .iter()
        .map(|(rule, rollout)| sequential_only(source, rule, rollout, end, by))
        .collect();
    let counters = futures_util::stream::iter(counters)
        .buffered(CONCURRENT_ROLLOUTS)
        .collect::<Vec<_>>();
    let (answers, counters) = tokio::join!(
        batch::range_many_by(source, &requests, limits, by),
        counters
    );
    let mut metrics: Vec<Metrics> = counters;
    // Moved, not copied: the slot's points are held once, by the rollouts they belong to.
    let mut answers = answers.into_iter();
    let mut next = || {
        answers.next().unwrap_or_else(|| Series::Failed {
            message: "not asked (batching bug)".into(),
        })
    };
    for slot in slots {
        let fetched = match slot.requests {
            Ok(()) => Fetched::Window {
                canary: next(),
                baseline: next(),
            },
            Err(message) => {
                let failed = Series::Failed { message };
                Fetched::Window {
                    canary: failed.clone(),
                    baseline: failed,
                }
            }
        };
        metrics[slot.rollout].insert(slot.metric, fetched);
    }
    metrics
        .into_iter()
        .map(|metrics| Gathered {
            at: DateTime::<Utc>::from(end),
            metrics,
        })
        .collect()
}

fn window_metrics(rule: &Rule) -> usize {
    rule.metrics()
        .filter(|m| matches!(m.kind(), MetricKind::Window(_)))
        .count()
}

/// Every window metric's canary and baseline request, rendered as [`analysis::fetch`] does.
fn requests(
    rollouts: &[(&Rule, &Rollout)],
    end: SystemTime,
    window: Duration,
) -> (Vec<RangeRequest>, Vec<Slot>) {
    let mut requests = Vec::new();
    let mut slots = Vec::new();
    for (index, (rule, rollout)) in rollouts.iter().enumerate() {
        let ctx = QueryContext {
            rollout: &rollout.id,
            version: &rollout.version,
        };
        let step = rule.spec.analysis.step;
        for m in rule.metrics() {
            let MetricKind::Window(q) = m.kind() else {
                continue;
            };
            let rendered = match (
                rule.render(q, Group::Canary, &ctx),
                rule.render(q, Group::Baseline, &ctx),
            ) {
                (Ok(cq), Ok(bq)) => {
                    for query in [cq, bq] {
                        requests.push(RangeRequest {
                            query,
                            end,
                            window,
                            step,
                        });
                    }
                    Ok(())
                }
                (Err(e), _) | (_, Err(e)) => Err(e.to_string()),
            };
            slots.push(Slot {
                rollout: index,
                metric: m.name.clone(),
                requests: rendered,
            });
        }
    }
    (requests, slots)
}

/// The rollout's sequential metrics (their counters are per series, not batched), read as
/// [`analysis::fetch`] reads them; the window metrics go through the batch.
async fn sequential_only(
    source: &PrometheusSource,
    rule: &Rule,
    rollout: &Rollout,
    end: SystemTime,
    by: Option<TickDeadline>,
) -> Metrics {
    let ctx = QueryContext {
        rollout: &rollout.id,
        version: &rollout.version,
    };
    let ctx = &ctx;
    // Collected first, as in `analysis::fetch` (`Send` inference of the spawning task).
    let reads: Vec<_> = rule
        .metrics()
        .filter(|m| {
            matches!(
                m.kind(),
                MetricKind::Counts { .. } | MetricKind::Slow { .. } | MetricKind::Histogram { .. }
            )
        })
        .map(|m| async move {
            let read = analysis::counters(source, rule, m, ctx, end);
            let counters = within(by, 1, read).await.and_then(|c| c);
            (m.name.clone(), Fetched::Counters(counters))
        })
        .collect();
    futures_util::future::join_all(reads)
        .await
        .into_iter()
        .collect()
}

/// The scheduler runs `fetch_many` inside spawned tasks: it must stay `Send`.
#[cfg(test)]
#[allow(dead_code)]
fn fetch_many_is_send<'a>(
    source: &'a PrometheusSource,
    rollouts: &'a [(&'a Rule, &'a Rollout)],
) -> impl std::future::Future<Output = Vec<Gathered>> + Send + 'a {
    fetch_many(
        source,
        rollouts,
        SystemTime::UNIX_EPOCH,
        Duration::ZERO,
        true,
    )
}
