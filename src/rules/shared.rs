//! Parts of a rule that many rules hold alike, behind an `Arc`: a metric built on a template is
//! the same in every rule that names it, and one service per rule file made each rule carry a
//! full copy of it (3.6 KB a rule, issue 14). `load` shares equal metrics, lists of metrics and
//! step plans between the rules of one load ([`Interner`]); a rule that overrides a threshold
//! keeps its own metric, whose query text is still the template's (`Text`).
//!
//! Both types read and write exactly as the value they wrap, so a rule's YAML, its API JSON and
//! its stored snapshot are unchanged.

use std::collections::HashMap;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_saphyr::{Location, Spanned};

use super::schema::{AlertsSpec, AnalysisSpec, HookSpec, MetricSpec, RuleSpec, StepSpec};

/// A value shared between rules; read-only once loaded (an edit through `DerefMut`, such as
/// `demo` or `simulate` trimming a rule's metrics, copies only that rule's).
#[derive(Debug, PartialEq)]
pub struct Shared<T>(Arc<T>);

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

/// `for m in std::mem::take(&mut spec.metrics.value)`: the items, copied only if shared.
impl<T: Clone> IntoIterator for Shared<Vec<T>> {
    type Item = T;
    type IntoIter = std::vec::IntoIter<T>;
    fn into_iter(self) -> Self::IntoIter {
        self.into_inner().into_iter()
    }
}

/// `for m in &spec.metrics.value`, as over the `Vec` it was.
impl<'a, T> IntoIterator for &'a Shared<Vec<T>> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

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
}

impl<T> Deref for Shared<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// Copy on write: an edit (a test, `demo` trimming a rule) never reaches the other rules.
impl<T: Clone> DerefMut for Shared<T> {
    fn deref_mut(&mut self) -> &mut T {
        Arc::make_mut(&mut self.0)
    }
}

impl<T: Default> Default for Shared<T> {
    fn default() -> Self {
        Self::new(T::default())
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

/// Equal parts of the rules of one load, held once: each metric, each rule's list of them, each
/// plan of steps, each call hook, and each rule's analysis timing and alert matchers. Lives in the load's `Catalog`, so rules of one reload share and a
/// rollout's snapshot (parsed alone) never reaches another load's parts.
#[derive(Debug, Default)]
pub(crate) struct Interner {
    metrics: Pool<MetricSpec>,
    metric_lists: Pool<Vec<Spanned<Shared<MetricSpec>>>>,
    steps: Pool<Vec<Spanned<StepSpec>>>,
    /// JSON writes a hook's URL redacted: two URLs differing in a secret share a bucket, and
    /// equality keeps them apart.
    hooks: Pool<Spanned<HookSpec>>,
    analysis: Pool<AnalysisSpec>,
    alerts: Pool<AlertsSpec>,
}

/// Buckets by the value's JSON; equality (`PartialEq`, so a NaN is never shared) decides.
#[derive(Debug)]
struct Pool<T>(Mutex<HashMap<String, Vec<Shared<T>>>>);

impl<T> Default for Pool<T> {
    fn default() -> Self {
        Self(Mutex::default())
    }
}

impl<T: Serialize + PartialEq> Pool<T> {
    fn get(&self, v: Shared<T>) -> Shared<T> {
        // A value that does not serialize is kept as it is: sharing is a saving, never a need.
        let Ok(key) = serde_json::to_string(&*v) else {
            return v;
        };
        let mut map = match self.0.lock() {
            Ok(map) => map,
            Err(poisoned) => poisoned.into_inner(),
        };
        let bucket = map.entry(key).or_default();
        if let Some(same) = bucket.iter().find(|s| **s == v) {
            return same.clone();
        }
        bucket.push(v.clone());
        v
    }
}

impl Interner {
    /// Replaces `spec`'s metrics, steps, hooks, analysis and alerts by this load's one copy of
    /// each. Their places in the
    /// file are cleared first ([`unplaced`]): a place in one rule file would be wrong in every
    /// other rule sharing it, and nothing after loading points into the files.
    pub(crate) fn share(&self, spec: &mut RuleSpec) {
        let metrics = &mut spec.metrics.value;
        for m in metrics.iter_mut() {
            unplace(m);
            unplaced(&mut m.value);
            m.value = self.metrics.get(m.value.clone());
        }
        *metrics = self.metric_lists.get(metrics.clone());
        let steps = &mut spec.steps.value;
        steps.iter_mut().for_each(unplace);
        *steps = self.steps.get(steps.clone());
        let h = &mut spec.hooks;
        let hooks = [
            &mut h.set_weight,
            &mut h.promote,
            &mut h.rollback,
            &mut h.revert,
            &mut h.pre_rollout,
            &mut h.migrate_down,
        ];
        for hook in hooks.into_iter().flatten() {
            unplace(hook);
            *hook = self.hooks.get(hook.clone());
        }
        spec.analysis = self.analysis.get(spec.analysis.clone());
        spec.alerts = self.alerts.get(spec.alerts.clone());
    }
}

fn unplace<T>(s: &mut Spanned<T>) {
    s.referenced = Location::UNKNOWN;
    s.defined = Location::UNKNOWN;
}

/// A metric with no place in any file.
fn unplaced(m: &mut MetricSpec) {
    let MetricSpec {
        query,
        events,
        requests,
        histogram,
        template,
        ..
    } = m;
    query.iter_mut().for_each(unplace);
    events.iter_mut().for_each(|s| unplace(s));
    requests.iter_mut().for_each(|s| unplace(s));
    histogram.iter_mut().for_each(|s| unplace(s));
    template.iter_mut().for_each(unplace);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steps(yaml: &str) -> Shared<Vec<Spanned<StepSpec>>> {
        serde_saphyr::from_str(yaml).expect("steps")
    }

    /// The JSON only buckets: two values that write alike but differ (here only in their
    /// places, which JSON leaves out) are never made one.
    #[test]
    fn a_pool_shares_equal_values_only() {
        let pool = Pool::default();
        let a = pool.get(steps("- { weight: 5 }\n- { weight: 100 }\n"));
        let same = pool.get(steps("- { weight: 5 }\n- { weight: 100 }\n"));
        let moved = pool.get(steps("\n- { weight: 5 }\n- { weight: 100 }\n"));
        assert!(Shared::ptr_eq(&a, &same));
        assert!(!Shared::ptr_eq(&a, &moved), "same JSON, other places");
        assert_eq!(
            serde_json::to_string(&*a).ok(),
            serde_json::to_string(&*moved).ok()
        );
    }
}
