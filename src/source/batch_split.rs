//! Splitting one batch answer back into each member's series ([`super::batch`]). Pure.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use prometheus_http_query::response::Data;

use super::answer_split::Wanted;
use crate::judge::observation::{Point, Series};

/// The members of one batch query, owned and shared: a query through the window cache runs in
/// a task of its own that may outlive the tick, so it cannot borrow them, and at 10,000 members
/// a copy per hand-over (the source, the cache's task, the remembered answer) was 10,000 small
/// vectors each time. One `Arc` is handed along instead.
#[derive(Debug, Clone)]
pub struct Members {
    pub labels: Arc<[String]>,
    pub keys: Arc<[Vec<String>]>,
    pub extra: Extra,
}

impl Members {
    /// A borrowed view, for the readers that split an answer.
    pub fn wanted(&self) -> Wanted<'_> {
        Wanted {
            labels: &self.labels,
            keys: &self.keys,
            extra: self.extra,
        }
    }
}

/// Which series of an answer may be left out because no member asked for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extra {
    /// A regex batch: only series of value combinations nobody asked for (the regexes' cross
    /// product); a series without a batch label means the query is not what it seemed.
    Combinations,
    /// A wide batch ([`super::batch_rewrite::rewrite_wide`]) reads every value, so series of
    /// services not under rollout and series without a batch label (which no member's own
    /// query reads: members never match the empty value) are expected and left out too.
    Unlabelled,
}

/// Each member's series in order, or why the answer cannot be split faithfully.
pub type Split = Result<Vec<Series>, String>;

/// Splits a batch answer back: member `i` gets the series whose batch labels carry `keys[i]`
/// (no series: its empty result; one: its points). `Err` says why the answer cannot be split
/// faithfully (a series without a batch label in a regex batch, several series for one member,
/// not a matrix), and the group is then asked again.
pub fn split(data: &Data, labels: &[String], keys: &[Vec<String>], extra: Extra) -> Split {
    let Data::Matrix(result) = data else {
        return Err("the batch answer is not a range vector".into());
    };
    let mut found: BTreeMap<&[String], Vec<Point>> = BTreeMap::new();
    let wanted: BTreeSet<&[String]> = keys.iter().map(Vec::as_slice).collect();
    for s in result {
        let key: Option<Vec<String>> = labels.iter().map(|l| s.metric().get(l).cloned()).collect();
        let Some(key) = key else {
            if extra == Extra::Unlabelled {
                continue;
            }
            return Err("a batch series lacks a batch label".into());
        };
        // Series of value combinations no member asked for.
        let Some(key) = wanted.get(key.as_slice()) else {
            continue;
        };
        let points = s
            .samples()
            .iter()
            .map(|p| Point {
                at: p.timestamp(),
                value: p.value(),
            })
            .collect();
        if found.insert(key, points).is_some() {
            return Err("several batch series for one member".into());
        }
    }
    // Moved out, not copied, unless a key occurs twice (never in a batch: members are distinct).
    let distinct = wanted.len() == keys.len();
    Ok(keys
        .iter()
        .map(|k| Series::Points {
            points: if distinct {
                found.remove(k.as_slice())
            } else {
                found.get(k.as_slice()).cloned()
            }
            .unwrap_or_default()
            .into(),
        })
        .collect())
}
