//! Asking Prometheus only for the points of a batch's window it has not settled yet.
//!
//! Why: a rollout's window (`analysis.window`, e.g. 2 m at 10 s steps: 13 points) slides by one
//! interval per tick, so a full range query recomputes every older point each tick. At 10,000
//! services one wide query cost Prometheus 7–13 s on this project's machine (BENCHMARKS, Scale),
//! most of it spent on points it had already answered. A point at time `t` no longer changes
//! once every sample up to `t` is ingested: a scrape's samples carry its start time and arrive
//! within a scrape timeout, so a point more than `settled_after` older than the query that
//! fetched it is what any later query would return too. Those points are kept per member; the
//! next tick asks only from the first unsettled point on and appends.
//!
//! Equal to a full query, or not used: the cached points must lie on the same step grid as the
//! new window (ends a whole number of steps apart), windows and steps must be whole seconds,
//! and every member asked for must have been a member last time (a newcomer has no earlier
//! points here). Anything else asks the full window. A failed, refused or unsplittable partial
//! answer is returned as the failure it is, exactly as a full query's would be, and the entry
//! is dropped so the next tick asks in full.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::answer_split::Wanted;
use super::batch_split::{Extra, Split};
use super::prometheus::QueryFailure;
use crate::judge::observation::{Point, Series};

/// Batches remembered at once: one per metric shape (wide) or per regex batch. Bounded so a
/// churn of regex batches cannot grow it; the oldest answer is dropped first.
const MAX_ENTRIES: usize = 1024;

/// How a batch's window will be asked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Ask {
    /// The whole window, as without this cache.
    Full,
    /// Only `window` back from the end (first point at `from`); earlier points come from the
    /// last answer.
    From { from: i64, window: Duration },
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    query: String,
    window_s: i64,
    step_s: i64,
    labels: Vec<String>,
    wide: bool,
}

#[derive(Debug)]
struct Entry {
    end_s: i64,
    members: HashMap<Vec<String>, Vec<Point>>,
}

/// The settled points of recent batch answers, shared by every tick of the daemon.
#[derive(Debug)]
pub struct WindowCache {
    settled_after: i64,
    entries: Mutex<HashMap<Key, Entry>>,
    /// Windows asked whole and in part since start: what `/metrics` counts, for tests too.
    full: AtomicU64,
    partial: AtomicU64,
}

impl WindowCache {
    /// Points at least `settled_after` older than the query that fetched them are reused. It
    /// must exceed the scrape interval plus the scrape timeout of what the queries read.
    pub fn new(settled_after: Duration) -> WindowCache {
        WindowCache {
            settled_after: i64::try_from(settled_after.as_secs()).unwrap_or(i64::MAX),
            entries: Mutex::new(HashMap::new()),
            full: AtomicU64::new(0),
            partial: AtomicU64::new(0),
        }
    }

    /// Batch windows asked so far: `(whole, in part)`.
    pub fn asked(&self) -> (u64, u64) {
        (
            self.full.load(Ordering::Relaxed),
            self.partial.load(Ordering::Relaxed),
        )
    }

    /// Asks `fetch` (a range query ending at `end` over the window it is given) for what is not
    /// settled, and returns every member's series over the whole `window`.
    ///
    /// The query runs in its own task: a tick that gives up at its deadline drops only its wait,
    /// and the answer still fills the cache when it comes (within the Prometheus timeout). At
    /// 10,000 services the first whole wide window took longer than a 10 s tick; cancelled with
    /// the tick it never filled the cache, so every tick asked it whole again.
    pub async fn range_split<F, Fut>(
        self: &Arc<Self>,
        query: &str,
        end: SystemTime,
        window: Duration,
        step: Duration,
        wanted: Wanted<'_>,
        fetch: F,
    ) -> Result<Split, QueryFailure>
    where
        F: FnOnce(Duration) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Split, QueryFailure>> + Send + 'static,
    {
        let cache = Arc::clone(self);
        let query = query.to_string();
        let (labels, keys, extra) = (wanted.labels.to_vec(), wanted.keys.to_vec(), wanted.extra);
        let task = tokio::spawn(async move {
            let wanted = Wanted {
                labels: &labels,
                keys: &keys,
                extra,
            };
            cache.fill(&query, end, window, step, wanted, fetch).await
        });
        task.await.unwrap_or_else(|e| {
            Err(QueryFailure::NoAnswer(format!(
                "the batch query's task ended without an answer: {e}"
            )))
        })
    }

    async fn fill<F, Fut>(
        &self,
        query: &str,
        end: SystemTime,
        window: Duration,
        step: Duration,
        wanted: Wanted<'_>,
        fetch: F,
    ) -> Result<Split, QueryFailure>
    where
        F: FnOnce(Duration) -> Fut,
        Fut: Future<Output = Result<Split, QueryFailure>>,
    {
        let (Some(key), Some(end_s)) = (key(query, window, step, &wanted), whole_secs_since(end))
        else {
            return fetch(window).await;
        };
        // The kept points are copied out under the lock, so a tick that fails meanwhile (and
        // drops the entry) cannot take them from under this one.
        let (ask, kept) = {
            let entries = self.lock();
            let entry = entries.get(&key);
            let ask = plan(
                entry,
                wanted.keys,
                end_s,
                key.window_s,
                key.step_s,
                self.settled_after,
            );
            let kept = match (ask, entry) {
                (Ask::From { from, .. }, Some(entry)) => {
                    Some(kept(entry, wanted.keys, end_s - key.window_s, from))
                }
                _ => None,
            };
            (ask, kept)
        };
        let answer = match (ask, &kept) {
            (Ask::From { window: w, .. }, Some(_)) => {
                self.partial.fetch_add(1, Ordering::Relaxed);
                count("partial");
                fetch(w).await
            }
            _ => {
                self.full.fetch_add(1, Ordering::Relaxed);
                count("full");
                fetch(window).await
            }
        };
        let series = match answer {
            Ok(Ok(series)) => series,
            other => {
                self.lock().remove(&key);
                return other;
            }
        };
        let merged = match (ask, kept) {
            (Ask::From { from, .. }, Some(kept)) => merge(kept, series, from),
            _ => series,
        };
        remember(&mut self.lock(), key, end_s, wanted.keys, &merged);
        Ok(Ok(merged))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        // A panic while holding it cannot leave an entry half-written (entries are replaced
        // whole), so a poisoned lock is still sound to use.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Counts a batch window asked, by how: `full` or `partial` (settled points reused).
fn count(how: &'static str) {
    metrics::counter!("canaryd_prometheus_windows_total", "how" => how).increment(1);
}

fn key(query: &str, window: Duration, step: Duration, wanted: &Wanted<'_>) -> Option<Key> {
    if window.subsec_nanos() != 0 || step.subsec_nanos() != 0 || step.is_zero() {
        return None;
    }
    Some(Key {
        query: query.to_string(),
        window_s: i64::try_from(window.as_secs()).ok()?,
        step_s: i64::try_from(step.as_secs()).ok()?,
        labels: wanted.labels.to_vec(),
        wide: wanted.extra == Extra::Unlabelled,
    })
}

/// The end as Prometheus is asked it (`prometheus::range_bounds` truncates to whole seconds).
fn whole_secs_since(end: SystemTime) -> Option<i64> {
    i64::try_from(end.duration_since(UNIX_EPOCH).ok()?.as_secs()).ok()
}

/// Whether the last answer can serve the start of this window, and from where to ask. Pure.
pub(super) fn plan_for(
    last_end_s: Option<i64>,
    all_known: bool,
    end_s: i64,
    window_s: i64,
    step_s: i64,
    settled_after: i64,
) -> Ask {
    let Some(last_end_s) = last_end_s else {
        return Ask::Full;
    };
    let ahead = end_s.saturating_sub(last_end_s);
    if !all_known || step_s <= 0 || ahead <= 0 || ahead % step_s != 0 {
        return Ask::Full;
    }
    let start = end_s.saturating_sub(window_s);
    // Points at or before `cutoff` were settled when last asked.
    let cutoff = last_end_s.saturating_sub(settled_after);
    if cutoff < start {
        return Ask::Full;
    }
    // The first grid point after the cutoff: the grid is `start + k * step`.
    let from = start.saturating_add(((cutoff - start) / step_s + 1).saturating_mul(step_s));
    if from > end_s {
        return Ask::Full;
    }
    Ask::From {
        from,
        window: Duration::from_secs(u64::try_from(end_s - from).unwrap_or(0)),
    }
}

fn plan(
    entry: Option<&Entry>,
    keys: &[Vec<String>],
    end_s: i64,
    window_s: i64,
    step_s: i64,
    settled_after: i64,
) -> Ask {
    let all_known = entry.is_some_and(|e| keys.iter().all(|k| e.members.contains_key(k)));
    plan_for(
        entry.map(|e| e.end_s),
        all_known,
        end_s,
        window_s,
        step_s,
        settled_after,
    )
}

/// Each member's points from the last answer that this window still holds and will not ask
/// again: those in `[start, from)`.
fn kept(entry: &Entry, keys: &[Vec<String>], start: i64, from: i64) -> Vec<Vec<Point>> {
    let (start, from) = (start as f64, from as f64);
    keys.iter()
        .map(|k| {
            entry.members.get(k).map_or_else(Vec::new, |old| {
                old.iter()
                    .filter(|p| p.at >= start && p.at < from)
                    .copied()
                    .collect()
            })
        })
        .collect()
}

/// The kept points followed by the new answer's (all at or after `from`). A member whose new
/// series is not plain points keeps that outcome.
fn merge(kept: Vec<Vec<Point>>, fresh: Vec<Series>, from: i64) -> Vec<Series> {
    let from = from as f64;
    kept.into_iter()
        .zip(fresh)
        .map(|(mut all, series)| match series {
            Series::Points { points } => {
                all.extend(points.into_iter().filter(|p| p.at >= from));
                Series::Points { points: all }
            }
            other => other,
        })
        .collect()
}

fn remember(
    entries: &mut HashMap<Key, Entry>,
    key: Key,
    end_s: i64,
    keys: &[Vec<String>],
    series: &[Series],
) {
    if entries.get(&key).is_some_and(|e| e.end_s > end_s) {
        return; // a later tick already answered
    }
    let mut members = HashMap::with_capacity(keys.len());
    for (k, s) in keys.iter().zip(series) {
        let Series::Points { points } = s else {
            // Not plain points: this member cannot be continued, so the next tick asks in full.
            entries.remove(&key);
            return;
        };
        members.insert(k.clone(), points.clone());
    }
    if entries.len() >= MAX_ENTRIES && !entries.contains_key(&key) {
        let oldest = entries
            .iter()
            .min_by_key(|(_, e)| e.end_s)
            .map(|(k, _)| k.clone());
        if let Some(oldest) = oldest {
            entries.remove(&oldest);
        }
    }
    entries.insert(key, Entry { end_s, members });
}

#[cfg(test)]
#[path = "window_cache_tests.rs"]
mod tests;
