//! Splitting a batch answer straight from its JSON, without building the whole answer first.
//!
//! A wide answer carries every service Prometheus has: at 10,000 services ~4.5–10 MB of JSON,
//! which as [`Data`](prometheus_http_query::response::Data) (a `HashMap` of labels and a `Vec`
//! of samples per series) took several times that again, up to eight at once. Here the body is
//! read once with a [`DeserializeSeed`] over `data.result`: each series' batch labels go into a
//! reused key, its points into a reused buffer, and only members' points are kept.
//!
//! Only the canonical success answer is read this way (`status` "success", `data` holding
//! exactly `resultType` "matrix" and `result`, every series `metric` and `values`). Anything else
//! — an error answer, malformed or truncated JSON, another result type, a shape the strict reader
//! does not know — gives `None`, and the caller parses the same bytes as before
//! ([`super::prometheus::parse_response`]), so every failure keeps its kind and message and the
//! split its verdicts: this reader can only be faster, never say something else. The unit tests
//! compare both ways on the same bytes.

use std::collections::BTreeMap;

use serde::Deserializer as _;

use super::batch_split::{Extra, Split};
use crate::judge::observation::{Point, Series};

#[path = "answer_split_seeds.rs"]
mod seeds;
use seeds::Envelope;

/// What a batch wants of its answer: the series whose `labels` carry one of `keys`.
#[derive(Debug, Clone, Copy)]
pub struct Wanted<'a> {
    pub labels: &'a [String],
    pub keys: &'a [Vec<String>],
    pub extra: Extra,
}

/// `wanted` split out of a canonical success answer, or `None` for any other body (parse it
/// as before then). `Some(Err)` is the split's own refusal, as [`super::batch_split::split`]
/// gives it.
pub fn split_json(body: &[u8], wanted: Wanted<'_>) -> Option<Split> {
    split_from(serde_json::Deserializer::from_slice(body), wanted)
}

/// [`split_json`] of the JSON `reader` gives, read to its end (a gzip answer's decoder,
/// [`super::answer_body`]): the whole JSON is never held. A read error gives `None`.
pub fn split_reader(reader: impl std::io::Read, wanted: Wanted<'_>) -> Option<Split> {
    split_from(serde_json::Deserializer::from_reader(reader), wanted)
}

fn split_from<'de, R: serde_json::de::Read<'de>>(
    mut de: serde_json::Deserializer<R>,
    wanted: Wanted<'_>,
) -> Option<Split> {
    let mut state = State::new(wanted);
    de.deserialize_map(Envelope(&mut state)).ok()?;
    de.end().ok()?;
    state.finish()
}

/// The split as it goes: members' points by key, the first reason it cannot be split.
struct State<'w> {
    wanted: Wanted<'w>,
    found: BTreeMap<&'w [String], Option<Vec<Point>>>,
    refused: Option<String>,
    /// The series being read: its batch label values (`None` until seen) and points.
    key: Vec<Option<String>>,
    points: Vec<Point>,
    status_success: bool,
    matrix: bool,
    result_read: bool,
}

impl<'w> State<'w> {
    fn new(wanted: Wanted<'w>) -> Self {
        State {
            wanted,
            found: wanted.keys.iter().map(|k| (k.as_slice(), None)).collect(),
            refused: None,
            key: vec![None; wanted.labels.len()],
            points: Vec::new(),
            status_success: false,
            matrix: false,
            result_read: false,
        }
    }

    /// One series read whole: kept if a member asked for it, as `batch_split::split` would.
    fn series_done(&mut self) {
        if self.refused.is_some() {
            return;
        }
        let key: Option<Vec<String>> = self.key.iter_mut().map(Option::take).collect();
        let Some(key) = key else {
            if self.wanted.extra != Extra::Unlabelled {
                self.refused = Some("a batch series lacks a batch label".into());
            }
            return;
        };
        let Some(slot) = self.found.get_mut(key.as_slice()) else {
            return;
        };
        if slot.is_some() {
            self.refused = Some("several batch series for one member".into());
            return;
        }
        *slot = Some(self.points.clone());
    }

    fn finish(mut self) -> Option<Split> {
        if !(self.status_success && self.matrix && self.result_read) {
            return None;
        }
        if let Some(why) = self.refused.take() {
            return Some(Err(why));
        }
        let keys = self.wanted.keys;
        Some(Ok(in_order(keys, &mut self.found)))
    }
}

/// Each of `keys`' points out of `found`, moved, not copied: the answer is the one copy. A key
/// that occurs twice (never in a batch, whose members are distinct) gets the same points twice.
fn in_order(
    keys: &[Vec<String>],
    found: &mut BTreeMap<&[String], Option<Vec<Point>>>,
) -> Vec<Series> {
    let distinct = found.len() == keys.len();
    keys.iter()
        .map(|k| {
            let slot = found
                .get_mut(k.as_slice())
                .and_then(|p| if distinct { p.take() } else { p.clone() });
            Series::Points {
                points: slot.unwrap_or_default().into(),
            }
        })
        .collect()
}

#[cfg(test)]
#[path = "answer_split_tests.rs"]
mod tests;
