//! The pure half of the window cache: a remembered batch answer ([`Entry`]), what a new window
//! can reuse of it ([`plan_for`], [`Kept`]), and how the rest is joined on ([`merge`],
//! [`entry_of`], [`remember`]). A child of `window_cache.rs`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::{Ask, Key};
use crate::judge::observation::Series;

#[path = "window_cache_grid.rs"]
mod grid;

/// Batches remembered at once: one per metric shape (wide) or per regex batch. Bounded so a
/// churn of regex batches cannot grow it; the oldest answer is dropped first.
const MAX_ENTRIES: usize = 1024;

/// The last answer of a batch: the members' keys (shared with the query that asked them, not
/// copied) and each member's points, in the same order, on the answer's step grid
/// ([`grid::Points`]: 8 bytes a point where they lie on it). Held in the map as an `Arc`: a tick
/// that reuses it takes the `Arc` under the lock, so a tick that fails meanwhile (and drops the
/// entry from the map) cannot take the points from under it, and nothing is copied to keep them.
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) end_s: i64,
    keys: Arc<[Vec<String>]>,
    points: grid::Points,
}

/// Where each member of a tick is in the entry it reuses.
#[derive(Debug, PartialEq)]
pub(super) enum Index {
    /// The same members in the same order: a steady batch, tick after tick.
    Same,
    /// Member `i` is the entry's `at[i]`.
    At(Vec<usize>),
}

impl Entry {
    /// Points held, all members together.
    #[cfg(test)]
    pub(super) fn points_held(&self) -> usize {
        (0..self.keys.len())
            .map(|i| self.points.member(i).count())
            .sum()
    }

    /// Where each of `keys` is in this entry, or `None` when one is new. The members of a
    /// steady batch are the same, in the same order, tick after tick: compared without a map.
    pub(super) fn index_of(&self, keys: &[Vec<String>]) -> Option<Index> {
        if *self.keys == *keys {
            return Some(Index::Same);
        }
        let at: HashMap<&[String], usize> = self
            .keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.as_slice(), i))
            .collect();
        keys.iter()
            .map(|k| at.get(k.as_slice()).copied())
            .collect::<Option<Vec<usize>>>()
            .map(Index::At)
    }
}

/// Whether the last answer can serve the start of this window, and from where to ask. Pure.
pub(in crate::source) fn plan_for(
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

/// What a tick reuses of the last answer: the points of `entry` this window still holds and will
/// not ask again, those in `[start, from)`.
#[derive(Debug)]
pub(super) struct Kept {
    pub(super) entry: Arc<Entry>,
    pub(super) index: Index,
    pub(super) start: i64,
    pub(super) from: i64,
}

/// The kept points followed by the new answer's (all at or after `from`), each member's series
/// allocated once at its exact size: these series are the tick's answer, held until judged. A
/// member whose new series is not plain points keeps that outcome.
pub(super) fn merge(kept: &Kept, fresh: Vec<Series>) -> Vec<Series> {
    let (start, from) = (kept.start as f64, kept.from as f64);
    let members = match &kept.index {
        Index::Same => kept.entry.keys.len(),
        Index::At(at) => at.len(),
    };
    (0..members)
        .zip(fresh)
        .map(|(i, series)| match series {
            Series::Points { points } => {
                let at = match &kept.index {
                    Index::Same => i,
                    Index::At(at) => at[i],
                };
                let old = kept
                    .entry
                    .points
                    .member(at)
                    .filter(|p| p.at >= start && p.at < from);
                let new = || points.iter().filter(|p| p.at >= from);
                let mut all = Vec::with_capacity(old.clone().count() + new().count());
                all.extend(old);
                all.extend(new());
                Series::Points { points: all }
            }
            other => other,
        })
        .collect()
}

/// The entry to remember of an answer ending at `end_s`, each member's points stored on `key`'s
/// step grid; `None` when a member cannot be continued (not plain points, or missing), so the
/// next tick asks in full. Built outside the lock.
///
/// Only the points a later window can reuse are stored ([`reusable`]): 9 of 13 at a 2 m window,
/// 10 s steps and `settled_after` 30 s.
pub(super) fn entry_of(
    key: &Key,
    end_s: i64,
    settled_after: i64,
    keys: &Arc<[Vec<String>]>,
    series: &[Series],
) -> Option<Entry> {
    if series.len() < keys.len() {
        return None;
    }
    let series = &series[..keys.len()];
    let keep = reusable(end_s, key.window_s, key.step_s, settled_after);
    let mut total = 0usize;
    for s in series {
        let Series::Points { points } = s else {
            return None;
        };
        total = total.saturating_add(grid::kept(points, keep).count());
    }
    let members = series.iter().map(|s| match s {
        Series::Points { points } => points.as_slice(),
        _ => &[],
    });
    let origin = end_s.saturating_sub(key.window_s);
    Some(Entry {
        end_s,
        keys: Arc::clone(keys),
        points: grid::Points::new(origin, key.step_s, keep, total, members),
    })
}

/// The times, `[from, to)`, of the points of an answer ending at `end_s` that a later window
/// can reuse; `None` (keep all) when they cannot be computed without overflow.
///
/// A later window is reused only when it ends a whole number of steps later ([`plan_for`]), so
/// it starts at least one step after this one and never holds this window's first point; and
/// it reuses only points before the first grid point after `end_s - settled_after` (younger
/// ones were not settled and are asked again). The grids agree, so that point is the same
/// whichever later window asks. Pure.
pub(in crate::source) fn reusable(
    end_s: i64,
    window_s: i64,
    step_s: i64,
    settled_after: i64,
) -> Option<(f64, f64)> {
    if step_s <= 0 || window_s < 0 {
        return None;
    }
    let origin = end_s.checked_sub(window_s)?;
    let from = origin.checked_add(step_s)?;
    let cutoff = end_s.checked_sub(settled_after)?;
    if cutoff < from {
        // Nothing a later window reuses: it asks whole.
        return Some((from as f64, from as f64));
    }
    let steps = (cutoff - origin) / step_s + 1;
    let to = origin.checked_add(steps.checked_mul(step_s)?)?;
    Some((from as f64, to as f64))
}

/// Remembers `entry` (from [`entry_of`]) as `key`'s last answer; `None` forgets it.
pub(super) fn remember(
    entries: &mut HashMap<Key, Arc<Entry>>,
    key: Key,
    end_s: i64,
    entry: Option<Entry>,
) {
    if entries.get(&key).is_some_and(|e| e.end_s > end_s) {
        return; // a later tick already answered
    }
    let Some(entry) = entry else {
        entries.remove(&key);
        return;
    };
    if entries.len() >= MAX_ENTRIES && !entries.contains_key(&key) {
        let oldest = entries
            .iter()
            .min_by_key(|(_, e)| e.end_s)
            .map(|(k, _)| k.clone());
        if let Some(oldest) = oldest {
            entries.remove(&oldest);
        }
    }
    entries.insert(key, Arc::new(entry));
}
