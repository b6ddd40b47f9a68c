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
    pub metrics: Metrics,
}

/// A tick's fetched metrics by name, in a small sorted vector: every rollout of a slot holds
/// one from its gathering to its judging, all at once, and a `BTreeMap` reserved room for 11
/// entries for a rule's handful (heaptrack at 2,000 rollouts: 2.9 MB of the slot's peak).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics(Vec<(String, Fetched)>);

impl Metrics {
    fn at(&self, name: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.as_str().cmp(name))
    }

    pub fn get(&self, name: &str) -> Option<&Fetched> {
        self.at(name).ok().map(|i| &self.0[i].1)
    }

    /// Sets `name`'s result, replacing an earlier one.
    pub fn insert(&mut self, name: String, fetched: Fetched) {
        match self.at(&name) {
            Ok(i) => self.0[i].1 = fetched,
            Err(i) => self.0.insert(i, (name, fetched)),
        }
    }

    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.0.iter().map(|(k, _)| k)
    }

    pub fn values(&self) -> impl Iterator<Item = &Fetched> {
        self.0.iter().map(|(_, v)| v)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a> IntoIterator for &'a Metrics {
    type Item = (&'a String, &'a Fetched);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (String, Fetched)>,
        fn(&'a (String, Fetched)) -> (&'a String, &'a Fetched),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

/// As a map collects: sorted by name, a later result for a name replacing an earlier one.
impl FromIterator<(String, Fetched)> for Metrics {
    fn from_iter<I: IntoIterator<Item = (String, Fetched)>>(iter: I) -> Metrics {
        let mut m = Metrics::default();
        for (name, fetched) in iter {
            m.insert(name, fetched);
        }
        m.0.shrink_to_fit();
        m
    }
}

impl From<BTreeMap<String, Fetched>> for Metrics {
    fn from(map: BTreeMap<String, Fetched>) -> Metrics {
        Metrics(map.into_iter().collect())
    }
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

#[cfg(test)]
mod tests {
    use super::{Fetched, Metrics};

    fn failed(why: &str) -> Fetched {
        Fetched::Counters(Err(why.into()))
    }

    #[test]
    fn metrics_are_found_by_name_and_a_later_result_replaces_an_earlier() {
        let m: Metrics = [("b", "1"), ("a", "2"), ("c", "3"), ("b", "4")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), failed(v)))
            .collect();
        assert_eq!(m.keys().collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(m.get("b"), Some(&failed("4")));
        assert_eq!(m.get("a"), Some(&failed("2")));
        assert_eq!(m.get("d"), None);
        assert_eq!(m.len(), 3);
    }
}
