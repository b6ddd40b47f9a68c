//! A metric's threshold lines in a deployment record (`rollback_above: 0.05`, ...).
//!
//! Written to JSON and rendered exactly as the map it was (keys in order), but held as a short
//! list under names that are not allocated: a `BTreeMap<String, f64>` per metric and live
//! rollout took a 370-byte tree node plus a string per line, about 1.5 KB a rollout of four
//! metrics (heaptrack at 2,000 rollouts, BENCHMARKS.md "Scale").

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The threshold kinds a rule may set on a metric, as the record names them.
const KINDS: [&str; 7] = [
    "allowed_decrease",
    "allowed_increase",
    "max_ratio",
    "rollback_above",
    "rollback_below",
    "warn_above",
    "warn_below",
];

/// Threshold lines by name, sorted by name.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Thresholds(Vec<(Cow<'static, str>, f64)>);

impl Thresholds {
    /// From `(name, value)` pairs in any order; a later duplicate name wins, as in a map.
    pub fn new<I, K>(lines: I) -> Thresholds
    where
        I: IntoIterator<Item = (K, f64)>,
        K: Into<Cow<'static, str>>,
    {
        let mut map = BTreeMap::new();
        for (k, v) in lines {
            map.insert(known(k.into()), v);
        }
        Thresholds(map.into_iter().collect())
    }

    pub fn get(&self, name: &str) -> Option<f64> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
    }
}

/// A known kind's name points at the constant instead of holding its own copy.
fn known(name: Cow<'static, str>) -> Cow<'static, str> {
    match KINDS.iter().find(|k| **k == name) {
        Some(k) => Cow::Borrowed(k),
        None => name,
    }
}

impl Serialize for Thresholds {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k.as_ref(), v)))
    }
}

impl<'de> Deserialize<'de> for Thresholds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Thresholds, D::Error> {
        let map = BTreeMap::<String, f64>::deserialize(d)?;
        Ok(Thresholds::new(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_as_the_sorted_map_it_was_and_read_back() {
        let t = Thresholds::new([("warn_above", 0.01), ("rollback_above", 0.05)]);
        let as_map: BTreeMap<String, f64> =
            [("warn_above".into(), 0.01), ("rollback_above".into(), 0.05)].into();
        let json = serde_json::to_string(&t).unwrap_or_default();
        assert_eq!(json, serde_json::to_string(&as_map).unwrap_or_default());
        assert_eq!(json, r#"{"rollback_above":0.05,"warn_above":0.01}"#);
        let back: Thresholds = serde_json::from_str(&json).unwrap_or_default();
        assert_eq!(back, t);
        assert_eq!(back.get("rollback_above"), Some(0.05));
        assert_eq!(back.get("max_ratio"), None);
        // A name this version does not know still round-trips.
        let other: Thresholds = serde_json::from_str(r#"{"z_new":1.5}"#).unwrap_or_default();
        assert_eq!(other.get("z_new"), Some(1.5));
    }
}
