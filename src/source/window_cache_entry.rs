//! The pure half of the window cache: a remembered batch answer ([`Entry`]), what a new window
//! can reuse of it ([`plan_for`], [`kept`]), and how the rest is joined on ([`merge`],
//! [`remember`]). A child of `window_cache.rs`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::{Ask, Key};
use crate::judge::observation::{Point, Series};

/// Batches remembered at once: one per metric shape (wide) or per regex batch. Bounded so a
/// churn of regex batches cannot grow it; the oldest answer is dropped first.
const MAX_ENTRIES: usize = 1024;

/// The last answer of a batch: the members' keys (shared with the query that asked them, not
/// copied) and each member's points, in the same order.
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) end_s: i64,
    keys: Arc<[Vec<String>]>,
    points: Vec<Vec<Point>>,
}

impl Entry {
    /// Where each of `keys` is in this entry, or `None` when one is new. The members of a
    /// steady batch are the same, in the same order, tick after tick: compared without a map.
    pub(super) fn index_of(&self, keys: &[Vec<String>]) -> Option<Vec<usize>> {
        if *self.keys == *keys {
            return Some((0..keys.len()).collect());
        }
        let at: HashMap<&[String], usize> = self
            .keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.as_slice(), i))
            .collect();
        keys.iter().map(|k| at.get(k.as_slice()).copied()).collect()
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

/// Each member's points from the last answer that this window still holds and will not ask
/// again: those in `[start, from)`.
pub(super) fn kept(entry: &Entry, index: &[usize], start: i64, from: i64) -> Vec<Vec<Point>> {
    let (start, from) = (start as f64, from as f64);
    index
        .iter()
        .map(|&i| {
            entry.points.get(i).map_or_else(Vec::new, |old| {
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
pub(super) fn merge(kept: Vec<Vec<Point>>, fresh: Vec<Series>, from: i64) -> Vec<Series> {
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

pub(super) fn remember(
    entries: &mut HashMap<Key, Entry>,
    key: Key,
    end_s: i64,
    keys: &Arc<[Vec<String>]>,
    series: &[Series],
) {
    if entries.get(&key).is_some_and(|e| e.end_s > end_s) {
        return; // a later tick already answered
    }
    let mut points = Vec::with_capacity(keys.len());
    for s in series.iter().take(keys.len()) {
        let Series::Points { points: p } = s else {
            // Not plain points: this member cannot be continued, so the next tick asks in full.
            entries.remove(&key);
            return;
        };
        points.push(p.clone());
    }
    if points.len() != keys.len() {
        entries.remove(&key);
        return;
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
    let keys = Arc::clone(keys);
    entries.insert(
        key,
        Entry {
            end_s,
            keys,
            points,
        },
    );
}
