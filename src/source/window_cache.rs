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

use super::batch_split::{Extra, Members, Split};
use super::prometheus::QueryFailure;
use super::window_cache_fill::{Claim, FillGuard, Fills, ended};

#[path = "window_cache_entry.rs"]
mod entry;
pub(super) use entry::plan_for;
use entry::{Entry, Kept, remember, share};

/// How a batch's window will be asked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Ask {
    /// The whole window, as without this cache.
    Full,
    /// Only `window` back from the end (first point at `from`); earlier points come from the
    /// last answer.
    From { from: i64, window: Duration },
}

/// How long a query through the cache may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// The Prometheus timeout, as any query of a tick.
    Tick,
    /// `prometheus.fill_timeout`: a whole window that fills the cache
    /// ([`super::window_cache_fill`]).
    Fill,
}

/// One query the cache asks its source to send: over `window` back from the end, by `bound`.
#[derive(Debug, Clone)]
pub struct Fetch {
    pub window: Duration,
    pub bound: Bound,
    pub members: Members,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    query: String,
    window_s: i64,
    step_s: i64,
    labels: Arc<[String]>,
    wide: bool,
}

/// What a tick will ask, decided before its query's task starts.
struct Planned {
    key: Key,
    end_s: i64,
    ask: Ask,
    /// The last answer and what of it is reused, for [`Ask::From`].
    kept: Option<Kept>,
    /// Held while this tick fills the whole window.
    fill: Option<FillGuard<Key>>,
}

/// The settled points of recent batch answers, shared by every tick of the daemon.
#[derive(Debug)]
pub struct WindowCache {
    settled_after: i64,
    entries: Mutex<HashMap<Key, Arc<Entry>>>,
    fills: Fills<Key>,
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
            fills: Fills::new(),
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

    /// Whole windows being filled now (at most one per batch).
    pub fn fills_in_flight(&self) -> usize {
        self.fills.in_flight()
    }

    /// Asks `fetch` (a range query ending at `end` over the window it is given) for what is not
    /// settled, and returns every member's series over the whole `window`.
    ///
    /// The query runs in its own task: a tick that gives up at its deadline drops only its wait,
    /// and the answer still fills the cache when it comes. A whole window is asked with
    /// [`Bound::Fill`] by one tick at a time per batch; a tick that finds that fill in flight
    /// waits for it (this wait ends with the tick) and then asks only the rest.
    pub async fn range_split<F, Fut>(
        self: &Arc<Self>,
        query: &str,
        end: SystemTime,
        window: Duration,
        step: Duration,
        members: Members,
        fetch: F,
    ) -> Result<Split, QueryFailure>
    where
        F: FnOnce(Fetch) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Split, QueryFailure>> + Send + 'static,
    {
        let planned = match (key(query, window, step, &members), whole_secs_since(end)) {
            (Some(key), Some(end_s)) => Some(self.plan(key, end_s, &members.keys).await),
            _ => None,
        };
        let cache = Arc::clone(self);
        let task = tokio::spawn(async move {
            match planned {
                Some(planned) => cache.fill(planned, window, members, fetch).await,
                None => {
                    let bound = Bound::Tick;
                    fetch(Fetch {
                        window,
                        bound,
                        members,
                    })
                    .await
                }
            }
        });
        task.await.unwrap_or_else(|e| {
            Err(QueryFailure::NoAnswer(format!(
                "the batch query's task ended without an answer: {e}"
            )))
        })
    }

    /// Decides what to ask: the rest of a remembered window, or the whole window (claimed as
    /// this batch's one fill, unless too many are in flight); waits for a fill in flight first.
    async fn plan(&self, key: Key, end_s: i64, keys: &[Vec<String>]) -> Planned {
        loop {
            let claim = {
                let entries = self.lock();
                let entry = entries.get(&key);
                let index = entry.and_then(|e| e.index_of(keys));
                let ask = plan_for(
                    entry.map(|e| e.end_s),
                    index.is_some(),
                    end_s,
                    key.window_s,
                    key.step_s,
                    self.settled_after,
                );
                // The entry is shared, not copied, under the lock: a tick that fails meanwhile
                // (and drops it from the map) cannot take its points from under this one.
                if let (Ask::From { from, .. }, Some(entry), Some(index)) = (ask, entry, index) {
                    let kept = Kept {
                        entry: Arc::clone(entry),
                        index,
                        start: end_s.saturating_sub(key.window_s),
                        from,
                    };
                    return Planned {
                        key,
                        end_s,
                        ask,
                        kept: Some(kept),
                        fill: None,
                    };
                }
                self.fills.claim(&key)
            };
            let fill = match claim {
                Claim::Fill(guard) => Some(guard),
                Claim::Busy => None,
                Claim::Wait(rx) => {
                    ended(rx).await;
                    continue;
                }
            };
            return Planned {
                key,
                end_s,
                ask: Ask::Full,
                kept: None,
                fill,
            };
        }
    }

    async fn fill<F, Fut>(
        &self,
        planned: Planned,
        window: Duration,
        members: Members,
        fetch: F,
    ) -> Result<Split, QueryFailure>
    where
        F: FnOnce(Fetch) -> Fut,
        Fut: Future<Output = Result<Split, QueryFailure>>,
    {
        let Planned {
            key,
            end_s,
            ask,
            kept,
            fill,
        } = planned;
        let (window, bound) = match (ask, &kept) {
            (Ask::From { window: w, .. }, Some(_)) => {
                self.partial.fetch_add(1, Ordering::Relaxed);
                count("partial");
                (w, Bound::Tick)
            }
            _ => {
                self.full.fetch_add(1, Ordering::Relaxed);
                count("full");
                let bound = if fill.is_some() {
                    Bound::Fill
                } else {
                    Bound::Tick
                };
                (window, bound)
            }
        };
        let answer = fetch(Fetch {
            window,
            bound,
            members: members.clone(),
        })
        .await;
        let series = match answer {
            Ok(Ok(series)) => series,
            other => {
                self.lock().remove(&key);
                return other;
            }
        };
        // Built outside the lock: the answer's members are views of the entry's grid. The entry
        // this tick reused is let go once replaced (and the last view of it is judged).
        let (answer, entry) = share(&key, end_s, &members.keys, kept.as_ref(), series);
        drop(kept);
        remember(&mut self.lock(), key, end_s, entry);
        // Remembered first, then the claim ends: a waiter that wakes finds the answer.
        drop(fill);
        Ok(Ok(answer))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Arc<Entry>>> {
        // A panic while holding it cannot leave an entry half-written (entries are replaced
        // whole), so a poisoned lock is still sound to use.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A batch answer asked whole without the cache (`prometheus.incremental_windows` off), its
/// members' points shared as the cache shares them ([`entry::shared`]): one grid, a view each,
/// rather than a vector of 16-byte points each. Left as it is when the window or step is not
/// whole seconds (no grid to share) or the query failed.
pub fn share_whole(
    answer: Result<Split, QueryFailure>,
    end: SystemTime,
    window: Duration,
    step: Duration,
) -> Result<Split, QueryFailure> {
    let Ok(Ok(series)) = answer else {
        return answer;
    };
    let grid = match (whole_secs_since(end), i64::try_from(window.as_secs())) {
        (Some(end_s), Ok(window_s))
            if window.subsec_nanos() == 0 && step.subsec_nanos() == 0 && !step.is_zero() =>
        {
            i64::try_from(step.as_secs())
                .ok()
                .map(|step_s| (end_s.saturating_sub(window_s), step_s))
        }
        _ => None,
    };
    match grid {
        Some((origin, step_s)) => Ok(Ok(entry::shared(origin, step_s, None, series).0)),
        None => Ok(Ok(series)),
    }
}

/// Counts a batch window asked, by how: `full` or `partial` (settled points reused).
fn count(how: &'static str) {
    metrics::counter!("canaryd_prometheus_windows_total", "how" => how).increment(1);
}

fn key(query: &str, window: Duration, step: Duration, members: &Members) -> Option<Key> {
    if window.subsec_nanos() != 0 || step.subsec_nanos() != 0 || step.is_zero() {
        return None;
    }
    Some(Key {
        query: query.to_string(),
        window_s: i64::try_from(window.as_secs()).ok()?,
        step_s: i64::try_from(step.as_secs()).ok()?,
        labels: Arc::clone(&members.labels),
        wide: members.extra == Extra::Unlabelled,
    })
}

/// The end as Prometheus is asked it (`prometheus::range_bounds` truncates to whole seconds).
fn whole_secs_since(end: SystemTime) -> Option<i64> {
    i64::try_from(end.duration_since(UNIX_EPOCH).ok()?.as_secs()).ok()
}

#[cfg(test)]
#[path = "window_cache_tests.rs"]
mod tests;
