//! Parts of a rule that many rules hold alike, behind an `Arc`: a metric built on a template is
//! the same in every rule that names it, and one service per rule file made each rule carry a
//! full copy of it (3.6 KB a rule, issue 14). `load` shares equal metrics between the rules of
//! one load ([`Interner`]); a rule that overrides a threshold keeps its own metric, whose query
//! text is still the template's (`Text`).
//!
//! Both types read and write exactly as the value they wrap, so a rule's YAML, its API JSON and
//! its stored snapshot are unchanged.

use std::collections::HashMap;
use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_saphyr::{Location, Spanned};

use super::schema::MetricSpec;

/// A value shared between rules; read-only once loaded (`Arc::make_mut` on the rare edit, such
/// as `demo` or `simulate` trimming a rule's metrics, copies only that rule's).
#[derive(Debug, Clone, PartialEq)]
pub struct Shared<T>(Arc<T>);

impl<T> Shared<T> {
    pub fn new(value: T) -> Self {
        Self(Arc::new(value))
    }

    /// Whether both are one allocation (what sharing saves, and what tests check).
    pub fn ptr_eq(a: &Self, b: &Self) -> bool {
        Arc::ptr_eq(&a.0, &b.0)
    }
}

impl<T: Clone> Shared<T> {
    /// The value, copied only if another rule holds it too.
    pub fn into_inner(self) -> T {
        Arc::unwrap_or_clone(self.0)
    }

    pub fn make_mut(&mut self) -> &mut T {
        Arc::make_mut(&mut self.0)
    }
}

impl<T> Deref for Shared<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Shared<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::deserialize(d).map(Self::new)
    }
}

impl<T: Serialize> Serialize for Shared<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

/// Query text (a metric's `query`, `events`, `requests`, `histogram`): copied from a template
/// into every rule that overrides one of its thresholds, so it is a shared `str`.
#[derive(Clone, PartialEq, Eq)]
pub struct Text(Arc<str>);

impl Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Self {
        Self(Arc::from(s))
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|s| Self(Arc::from(s)))
    }
}

impl Serialize for Text {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// Equal metrics of the rules of one load, held once. Lives in the load's `Catalog`, so rules of
/// one reload share and a rollout's snapshot (parsed alone) never reaches another load's metrics.
#[derive(Debug, Default)]
pub(crate) struct Interner {
    /// Buckets by the metric's JSON; equality (`PartialEq`, so a NaN is never shared) decides.
    metrics: Mutex<HashMap<String, Vec<Shared<MetricSpec>>>>,
}

impl Interner {
    /// The one copy of `m` for this load. Its spans must be [`unplaced`] first: a span of the
    /// rule file it came from would be wrong in every other rule sharing it.
    pub(crate) fn metric(&self, m: Shared<MetricSpec>) -> Shared<MetricSpec> {
        // A metric that does not serialize is kept as it is: sharing is a saving, never a need.
        let Ok(key) = serde_json::to_string(&*m) else {
            return m;
        };
        let mut map = match self.metrics.lock() {
            Ok(map) => map,
            Err(poisoned) => poisoned.into_inner(),
        };
        let bucket = map.entry(key).or_default();
        if let Some(same) = bucket.iter().find(|s| **s == m) {
            return same.clone();
        }
        bucket.push(m.clone());
        m
    }
}

/// A metric with no place in any file: what a loaded rule keeps once its findings (and lint
/// warnings) are made, since nothing after loading points into the files.
pub(crate) fn unplaced(m: &mut MetricSpec) {
    fn clear<T>(s: &mut Spanned<T>) {
        s.referenced = Location::UNKNOWN;
        s.defined = Location::UNKNOWN;
    }
    let MetricSpec {
        query,
        events,
        requests,
        histogram,
        template,
        ..
    } = m;
    query.iter_mut().for_each(clear);
    events.iter_mut().for_each(|s| clear(s));
    requests.iter_mut().for_each(|s| clear(s));
    histogram.iter_mut().for_each(|s| clear(s));
    template.iter_mut().for_each(clear);
}
