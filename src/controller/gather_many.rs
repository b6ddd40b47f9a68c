//! The fetch half of many rollouts' ticks at once, so their window queries can be batched.
//!
//! [`fetch_many`] gives, for every `(rule, rollout)`, the [`Gathered`] that
//! [`analysis::fetch`] would give it: the same queries rendered the same way, answered by
//! [`source::batch`](crate::source::batch) with batching on (one Prometheus query per group of
//! alike queries, each result split back and checked) or one by one with batching off.
//! Batched, each rollout's queries come from its memo ([`super::gather_memo`]) as shapes, and a
//! text is rendered only for a query the batch sends alone or logs ([`fetch_known`]).
//! Sequential metrics (counter snapshots) are still read per rollout through
//! [`analysis::fetch`]: their instant queries keep every series for the sequential test.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use futures_util::StreamExt;

use super::analysis::{self, Fetched, Gathered, Metrics, TickQuery};
use super::gather_memo::{Known, KnownMetric, QueryMemo, window_queries};
use crate::judge::observation::Series;
use crate::rollout::Rollout;
use crate::rules::schema::MetricKind;
use crate::rules::{Group, QueryContext, Rule};
use crate::source::PrometheusSource;
use crate::source::batch::{self, Limits, Parsed, Request};
use crate::source::tick_deadline::{TickDeadline, within};

/// Rollouts fetched at once when batching is off, and for their counters.
const CONCURRENT_ROLLOUTS: usize = 8;

/// A rollout of a slot with its queries' memo ([`super::gather_memo`]).
pub(crate) type Item<'a> = (&'a Rule, &'a Rollout, &'a QueryMemo);

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
///
/// The rollouts come without their memos, so theirs are built for this call ([`fetch_known`]
/// is what a live slot calls).
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
        let windows: usize = rollouts
            .iter()
            .map(|(r, _)| window_queries(r).count() * 2)
            .sum();
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
    let memos: Vec<QueryMemo> = rollouts.iter().map(|_| QueryMemo::default()).collect();
    let items: Vec<Item<'_>> = rollouts
        .iter()
        .zip(&memos)
        .map(|(&(rule, rollout), memo)| (rule, rollout, memo))
        .collect();
    fetch_known(source, &items, end, window, limits, by).await
}

/// [`fetch_many_by`] batched, each rollout's window queries taken from its memo (built when
/// absent): their shapes plan the batches, and a query's text is rendered only if it is sent
/// alone or logged.
pub(crate) async fn fetch_known(
    source: &PrometheusSource,
    items: &[Item<'_>],
    end: SystemTime,
    window: Duration,
    limits: &Limits,
    by: Option<TickDeadline>,
) -> Vec<Gathered> {
    let known: Vec<Arc<Known>> = items
        .iter()
        .map(|(rule, rollout, memo)| memo.known(rule, rollout))
        .collect();
    let range = (end, window);
    let requests = requests(items, &known, &range);
    let counters: Vec<_> = items
        .iter()
        .map(|(rule, rollout, _)| sequential_only(source, rule, rollout, end, by))
        .collect();
    let counters = futures_util::stream::iter(counters)
        .buffered(CONCURRENT_ROLLOUTS)
        .collect::<Vec<_>>();
    let (answers, counters) = tokio::join!(
        batch::range_many_by(source, &requests, limits, by),
        counters
    );
    drop(requests);
    let mut metrics: Vec<Metrics> = counters;
    // Moved, not copied: the slot's points are held once, by the rollouts they belong to.
    let mut answers = answers.into_iter();
    let mut next = || {
        answers.next().unwrap_or_else(|| Series::Failed {
            message: "not asked (batching bug)".into(),
        })
    };
    // In the order `requests` asked them: each rendered metric's canary, then its baseline.
    for ((item, known), metrics) in items.iter().zip(&known).zip(&mut metrics) {
        for ((m, _), k) in window_queries(item.0).zip(known.metrics.iter()) {
            let fetched = match k {
                KnownMetric::Rendered { .. } => Fetched::Window {
                    canary: next(),
                    baseline: next(),
                },
                KnownMetric::Failed(message) => {
                    let failed = Series::Failed {
                        message: message.clone(),
                    };
                    Fetched::Window {
                        canary: failed.clone(),
                        baseline: failed,
                    }
                }
            };
            metrics.insert(m.name.clone(), fetched);
        }
    }
    metrics
        .into_iter()
        .map(|metrics| Gathered {
            at: DateTime::<Utc>::from(end),
            metrics,
        })
        .collect()
}

/// One window query of one rollout: its shape from the memo, its text rendered only when asked
/// ([`Request::text`]).
pub(super) struct WindowRequest<'a> {
    rule: &'a Rule,
    rollout: &'a Rollout,
    template: &'a str,
    group: Group,
    shape: &'a Parsed,
    /// The slot's end and window, shared by every request.
    range: &'a (SystemTime, Duration),
}

impl Request for WindowRequest<'_> {
    /// Rendered as the memo rendered it (same rule, rollout and template), so the text sent
    /// alone is the one [`analysis::fetch`] sends.
    fn text(&self) -> Result<Cow<'_, str>, String> {
        let ctx = QueryContext {
            rollout: &self.rollout.id,
            version: &self.rollout.version,
        };
        self.rule
            .render(self.template, self.group, &ctx)
            .map(Cow::Owned)
            .map_err(|e| e.to_string())
    }

    fn known_shape(&self) -> Option<&Parsed> {
        Some(self.shape)
    }

    fn end(&self) -> SystemTime {
        self.range.0
    }

    fn window(&self) -> Duration {
        self.range.1
    }

    fn step(&self) -> Duration {
        self.rule.spec.analysis.step
    }
}

/// Every rendered window metric's canary and baseline request, in the items' order.
pub(super) fn requests<'a>(
    items: &[Item<'a>],
    known: &'a [Arc<Known>],
    range: &'a (SystemTime, Duration),
) -> Vec<WindowRequest<'a>> {
    let n = known
        .iter()
        .flat_map(|k| k.metrics.iter())
        .filter(|k| matches!(k, KnownMetric::Rendered { .. }))
        .count();
    let mut requests = Vec::with_capacity(n * 2);
    for (&(rule, rollout, _), known) in items.iter().zip(known) {
        for ((_, template), k) in window_queries(rule).zip(known.metrics.iter()) {
            let KnownMetric::Rendered { canary, baseline } = k else {
                continue;
            };
            for (group, shape) in [(Group::Canary, canary), (Group::Baseline, baseline)] {
                requests.push(WindowRequest {
                    rule,
                    rollout,
                    template,
                    group,
                    shape,
                    range,
                });
            }
        }
    }
    requests
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
