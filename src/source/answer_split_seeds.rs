//! The serde visitors that read a batch answer for `answer_split.rs` (its child, for
//! the split's state): one seed per level of the canonical answer, from the envelope down to a
//! `[t, "v"]` sample, each refusing (an error, so the caller parses the old way) any shape the
//! old parser might read differently.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::State;
use crate::judge::observation::Point;

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
pub(super) struct Envelope<'s, 'w>(pub(super) &'s mut State<'w>);

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
