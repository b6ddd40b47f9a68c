//! The pure half of the window cache: a remembered batch answer ([`Entry`]), what a new window
//! can reuse of it ([`plan_for`], [`Kept`]), and how the rest is joined on and shared with the
//! tick's answers ([`share`], [`remember`]). A child of `window_cache.rs`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::{Ask, Key};
use crate::judge::observation::{Grid, Point, Points, Series};

#[path = "window_cache_keys.rs"]
mod keys;
use keys::Keys;

/// Batches remembered at once: one per metric shape (wide) or per regex batch. Bounded so a
/// churn of regex batches cannot grow it; the oldest answer is dropped first.
const MAX_ENTRIES: usize = 1024;

/// The last answer of a batch: the members' keys (in one allocation, [`Keys`]) and each
/// member's points, in the same order, on the answer's step grid ([`Grid`]:
/// 8 bytes a point where they lie on it). The grid is the very one the tick's answers are views
/// of ([`share`]): the points are stored once for the cache and every rollout. Held in the map
/// as an `Arc`: a tick that reuses it takes the `Arc` under the lock, so a tick that fails
/// meanwhile (and drops the entry from the map) cannot take the points from under it, and
/// nothing is copied to keep them.
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) end_s: i64,
    keys: Keys,
    pub(super) points: Arc<Grid>,
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
            .map(|i| self.points.member(i).len())
            .sum()
    }

    /// Where each of `keys` is in this entry, or `None` when one is new.
    pub(super) fn index_of(&self, keys: &[Vec<String>]) -> Option<Index> {
        self.keys.index_of(keys)
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

/// The tick's answer and the entry to remember of it, sharing one grid ([`shared`]). The
/// entry is `None` when a member cannot be continued (not plain points, or missing), so the
/// next tick asks in full. Built outside the lock.
pub(super) fn share(
    key: &Key,
    end_s: i64,
    keys: &[Vec<String>],
    kept: Option<&Kept>,
    fresh: Vec<Series>,
) -> (Vec<Series>, Option<Entry>) {
    let origin = end_s.saturating_sub(key.window_s);
    let continued = fresh.len() >= keys.len()
        && fresh[..keys.len()]
            .iter()
            .all(|s| matches!(s, Series::Points { .. }));
    let (answer, grid) = shared(origin, key.step_s, kept, fresh);
    let entry = (continued && grid.len() >= keys.len())
        .then(|| Keys::new(keys))
        .flatten()
        .map(|keys| Entry {
            end_s,
            keys,
            points: grid,
        });
    (answer, entry)
}

/// A batch answer whose members' points are views of one grid `origin + k * step` ([`Grid`]):
/// each member whose answer is plain points gets its points over the whole window (the kept
/// points in `[start, from)` followed by the new answer's at or after `from`, or the new answer
/// whole when nothing is kept); a member whose answer is not plain points keeps that outcome.
///
/// The grid holds the whole window (13 points a member at a 2 m window and 10 s steps, of which
/// a later window reuses up to 9): one copy for the cache and the answers together, where the
/// answers were a second copy at twice the size. Pure.
pub(in crate::source) fn shared(
    origin: i64,
    step: i64,
    kept: Option<&Kept>,
    fresh: Vec<Series>,
) -> (Vec<Series>, Arc<Grid>) {
    let members = match kept {
        None => fresh.len(),
        Some(Kept {
            index: Index::Same,
            entry,
            ..
        }) => fresh.len().min(entry.keys.len()),
        Some(Kept {
            index: Index::At(at),
            ..
        }) => fresh.len().min(at.len()),
    };
    let total = fresh[..members]
        .iter()
        .enumerate()
        .filter_map(|(i, s)| whole(kept, i, s).map(Iterator::count))
        .fold(0usize, usize::saturating_add);
    let mut grid = Grid::with_capacity(origin, step, members, total);
    for (i, series) in fresh[..members].iter().enumerate() {
        match whole(kept, i, series) {
            Some(points) => grid.push(points),
            None => grid.push(std::iter::empty()),
        }
    }
    let grid = Arc::new(grid);
    let answer = fresh
        .into_iter()
        .take(members)
        .enumerate()
        .map(|(i, series)| match series {
            Series::Points { .. } => Series::Points {
                points: Points::view(&grid, i).unwrap_or_default(),
            },
            other => other,
        })
        .collect();
    (answer, grid)
}

/// [`window`] of member `i`'s answer, when it is plain points.
fn whole<'a>(
    kept: Option<&'a Kept>,
    i: usize,
    series: &'a Series,
) -> Option<impl Iterator<Item = Point> + Clone + 'a> {
    match series {
        Series::Points { points } => Some(window(kept, i, points)),
        _ => None,
    }
}

/// Member `i`'s points over the whole window: the kept points in `[start, from)` of the entry
/// it reuses, then `fresh`'s at or after `from`; `fresh` alone when nothing is kept.
fn window<'a>(
    kept: Option<&'a Kept>,
    i: usize,
    fresh: &'a Points,
) -> impl Iterator<Item = Point> + Clone + 'a {
    let (old, from) = match kept {
        Some(kept) => {
            let at = match &kept.index {
                Index::Same => i,
                Index::At(at) => at[i],
            };
            let (start, from) = (kept.start as f64, kept.from as f64);
            let old = kept
                .entry
                .points
                .member(at)
                .filter(move |p| p.at >= start && p.at < from);
            (Some(old), Some(from))
        }
        None => (None, None),
    };
    old.into_iter().flatten().chain(
        fresh
            .iter()
            .filter(move |p| from.is_none_or(|from| p.at >= from)),
    )
}

/// Remembers `entry` (from [`share`]) as `key`'s last answer; `None` forgets it.
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
