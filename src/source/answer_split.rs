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
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::batch_split::{Extra, Split};
use crate::judge::observation::{Point, Series};

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
                points: slot.unwrap_or_default(),
            }
        })
        .collect()
}

/// Which of `names` an object's key is (`None`: another key), read without keeping it.
fn field(names: &'static [&'static str]) -> Key<impl FnOnce(&str) -> Option<usize>> {
    Key(move |k: &str| names.iter().position(|n| *n == k))
}

fn refuse<E: de::Error>(what: &str) -> E {
    E::custom(format!("not a canonical matrix answer: {what}"))
}

/// Reads an object's key as text without keeping it.
struct Key<F>(F);

impl<'de, T, F: FnOnce(&str) -> T> DeserializeSeed<'de> for Key<F> {
    type Value = T;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        d.deserialize_str(self)
    }
}

impl<T, F: FnOnce(&str) -> T> Visitor<'_> for Key<F> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        Ok((self.0)(v))
    }
}

/// `{"status": "success", "data": {...}, ...}`; other keys are skipped, as `Envelope` does.
struct Envelope<'s, 'w>(&'s mut State<'w>);

impl<'de> Visitor<'de> for Envelope<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a Prometheus API answer")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let (mut status, mut data) = (false, false);
        while let Some(key) = map.next_key_seed(field(&["status", "data"]))? {
            match key {
                Some(0) if !status => {
                    status = true;
                    self.0.status_success = map.next_value_seed(Key(|s: &str| s == "success"))?;
                }
                Some(1) if !data => {
                    data = true;
                    map.next_value_seed(DataSeed(&mut *self.0))?;
                }
                Some(_) => return Err(refuse("a duplicate key")),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if status && data {
            Ok(())
        } else {
            Err(refuse("no status or no data"))
        }
    }
}

/// `{"resultType": "matrix", "result": [...]}`, nothing else.
struct DataSeed<'s, 'w>(&'s mut State<'w>);

impl<'de> DeserializeSeed<'de> for DataSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for DataSeed<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a result object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut kind = false;
        while let Some(key) = map.next_key_seed(field(&["resultType", "result"]))? {
            match key {
                Some(0) if !kind => {
                    kind = true;
                    self.0.matrix = map.next_value_seed(Key(|s: &str| s == "matrix"))?;
                }
                Some(1) if !self.0.result_read => {
                    map.next_value_seed(ResultSeed(&mut *self.0))?;
                    self.0.result_read = true;
                }
                _ => return Err(refuse("an unexpected or repeated key in data")),
            }
        }
        Ok(())
    }
}

/// `[series, ...]`.
struct ResultSeed<'s, 'w>(&'s mut State<'w>);

impl<'de> DeserializeSeed<'de> for ResultSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ResultSeed<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of series")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(SeriesSeed(&mut *self.0))?.is_some() {
            self.0.series_done();
        }
        Ok(())
    }
}

/// `{"metric": {...}, "values": [[t, "v"], ...]}`; other keys skipped, as `RangeVector` does.
struct SeriesSeed<'s, 'w>(&'s mut State<'w>);

impl<'de> DeserializeSeed<'de> for SeriesSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for SeriesSeed<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a series")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let (mut metric, mut values) = (false, false);
        for k in &mut self.0.key {
            *k = None;
        }
        self.0.points.clear();
        while let Some(key) = map.next_key_seed(field(&["metric", "values", "samples"]))? {
            match key {
                Some(0) if !metric => {
                    metric = true;
                    map.next_value_seed(LabelsSeed(&mut *self.0))?;
                }
                Some(1) if !values => {
                    values = true;
                    map.next_value_seed(PointsSeed(&mut self.0.points))?;
                }
                // `samples` is the field `values` aliases: both, or a repeat, is the old
                // parser's error to give.
                Some(_) => return Err(refuse("a repeated key")),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if metric && values {
            Ok(())
        } else {
            Err(refuse("a series without metric or values"))
        }
    }
}

/// `{"label": "value", ...}`: the batch labels' values go into the current key (the last
/// of a repeated label, as a `HashMap` keeps it); every value must be a string.
struct LabelsSeed<'s, 'w>(&'s mut State<'w>);

impl<'de> DeserializeSeed<'de> for LabelsSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for LabelsSeed<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("labels")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let labels = self.0.wanted.labels;
        while let Some(name) = map.next_key_seed(Key(|n: &str| {
            labels
                .iter()
                .enumerate()
                .filter(|(_, l)| l.as_str() == n)
                .map(|(i, _)| i)
                .collect::<Vec<usize>>()
        }))? {
            let value: Option<String> =
                map.next_value_seed(Key(|v: &str| (!name.is_empty()).then(|| v.to_owned())))?;
            if let Some(v) = value {
                for i in name {
                    self.0.key[i] = Some(v.clone());
                }
            }
        }
        Ok(())
    }
}

/// `[[t, "v"], ...]` into a reused buffer; the value parsed as `prometheus_http_query` does
/// (`f64::from_str`: "NaN", "+Inf" and "-Inf" included).
struct PointsSeed<'p>(&'p mut Vec<Point>);

impl<'de> DeserializeSeed<'de> for PointsSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for PointsSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of samples")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(p) = seq.next_element_seed(SampleSeed)? {
            self.0.push(p);
        }
        Ok(())
    }
}

/// `[t, "v"]`: exactly two elements (serde_json refuses a longer array after the visitor).
struct SampleSeed;

impl<'de> DeserializeSeed<'de> for SampleSeed {
    type Value = Point;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Point, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for SampleSeed {
    type Value = Point;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a [time, \"value\"] sample")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Point, A::Error> {
        let at: f64 = seq
            .next_element()?
            .ok_or_else(|| de::Error::invalid_length(0, &self))?;
        let value = seq
            .next_element_seed(Key(|v: &str| v.parse::<f64>().ok()))?
            .ok_or_else(|| de::Error::invalid_length(1, &self))?
            .ok_or_else(|| refuse("a sample value that is not a number"))?;
        Ok(Point { at, value })
    }
}

#[cfg(test)]
#[path = "answer_split_tests.rs"]
mod tests;
