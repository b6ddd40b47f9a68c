//! One tick of analysis, in two halves with a seam between them:
//!
//! - [`fetch`] does the I/O: every metric's range queries and counter snapshots, concurrently,
//!   raw (points keep their timestamps, counters their series), into a [`Gathered`];
//! - [`judge_gathered`] is pure: it decides which samples belong to the current step and are
//!   fresh, runs the judge and returns the [`Tick`] the state machine consumes.
//!
//! `canaryd analyze` calls [`gather`] (= fetch + judge); a live rollout's slot fetches
//! ([`super::gather`]) and its actor judges with [`judge_gathered`]; the simulator hands its own
//! `Gathered` to [`judge_gathered`]. All three decide by the same rules,
//! so a replay or a simulation agrees with the daemon.
//!
//! The rules that make stale data unable to promote (issue 16):
//! - a window metric judges only points taken at or after the current weight was confirmed plus
//!   `warmup`; earlier points are named in the reason but never counted;
//! - the newest finite point of each group must be at most `analysis.max_staleness` old;
//! - a sequential metric is `nodata` at a tick in which its counters did not move at this weight
//!   (a frozen or vanished counter carries no evidence).
//!
//! This file holds the I/O half and the types; the pure half is `analysis_judge.rs`, and the
//! sequential metrics' counters (read, and shaped into per-series snapshots) `analysis_counters.rs`.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use futures_util::StreamExt;

use crate::judge::observation::Series;
use crate::judge::sequential::Counters;
use crate::rollout::{Rollout, Tick};
use crate::rules::schema::MetricKind;
use crate::rules::{Group, QueryContext, Rule};
use crate::source::PrometheusSource;
use crate::source::tick_deadline::{TickDeadline, within};

pub(super) use super::analysis_counters::counters;
pub use super::analysis_counters::slow_counters;
pub use super::analysis_judge::judge_gathered;

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

/// Which tick [`fetch`] asks for.
#[derive(Debug, Clone, Copy)]
pub struct TickQuery {
    /// The end of every query: the tick's time.
    pub end: SystemTime,
    /// The range of window metrics.
    pub window: Duration,
    /// When set, each metric whose queries have not answered by then is failed (judged
    /// `error`) and the metrics that answered keep their data.
    pub by: Option<TickDeadline>,
}

/// Queries and judges one tick ending at `end`; `window` is the range of window metrics.
pub async fn gather(
    source: &PrometheusSource,
    rule: &Rule,
    rollout: &Rollout,
    end: SystemTime,
    window: Duration,
) -> Tick {
    let query = TickQuery {
        end,
        window,
        by: None,
    };
    let gathered = fetch(source, rule, rollout, query).await;
    judge_gathered(rule, rollout, &gathered)
}

/// Runs every query of one tick, metrics concurrently (at most [`CONCURRENT_METRICS`] at a
/// time), so one slow query costs the tick its own latency, not the sum of all of them.
pub async fn fetch(
    source: &PrometheusSource,
    rule: &Rule,
    rollout: &Rollout,
    query: TickQuery,
) -> Gathered {
    let TickQuery { end, window, by } = query;
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
                        let both = async {
                            tokio::join!(
                                source.range_series(&cq, end, window, step),
                                source.range_series(&bq, end, window, step)
                            )
                        };
                        let (canary, baseline) = within(by, 1, both).await.unwrap_or_else(|m| {
                            let failed = Series::Failed { message: m };
                            (failed.clone(), failed)
                        });
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
                    let read = counters(source, rule, m, ctx, end);
                    Fetched::Counters(within(by, 1, read).await.and_then(|c| c))
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
