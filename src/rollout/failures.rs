//! Consecutive failing ticks per metric (and the score's, under [`super::machine::SCORE_KEY`]):
//! a few entries every live rollout keeps. A sorted vector whose names are the checks' own
//! shared names, not a `BTreeMap<String, u32>`: the map's first node alone was 320 bytes and
//! each key a copied name (heaptrack at 5,000 rollouts: 2 MB for the maps). Its JSON is the
//! map's (an object in key order), so stored rollouts read and write the same bytes.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Sorted by name, each name once.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Failures(Vec<(Arc<str>, u32)>);

impl Failures {
    pub fn get(&self, name: &str) -> Option<&u32> {
        self.find(name).ok().map(|i| &self.0[i].1)
    }

    pub fn clear(&mut self) {
        self.0 = Vec::new();
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Counts one more failing tick for `name`, or resets it to 0 when the tick passed.
    pub fn count(&mut self, name: &Arc<str>, failing: bool) {
        let i = match self.find(name) {
            Ok(i) => i,
            Err(i) => {
                // Exactly one more: a rollout adds each metric once and keeps it.
                self.0.reserve_exact(1);
                self.0.insert(i, (name.clone(), 0));
                i
            }
        };
        let n = &mut self.0[i].1;
        *n = if failing { n.saturating_add(1) } else { 0 };
    }

    /// In name order, as the map was.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u32)> {
        self.0.iter().map(|(k, n)| (&**k, *n))
    }

    fn find(&self, name: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| (**k).cmp(name))
    }
}

/// The score's key, one allocation for every rollout.
pub(super) fn score_key() -> &'static Arc<str> {
    static KEY: OnceLock<Arc<str>> = OnceLock::new();
    KEY.get_or_init(|| Arc::from(super::machine::SCORE_KEY))
}

impl Serialize for Failures {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, n)| (&**k, n)))
    }
}

impl<'de> Deserialize<'de> for Failures {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<String, u32>::deserialize(d)?;
        Ok(Failures(
            map.into_iter().map(|(k, n)| (Arc::from(k), n)).collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::Failures;

    #[test]
    fn counts_reset_and_read_back_as_the_map_did() {
        let mut f = Failures::default();
        let (b, a) = (Arc::from("b_metric"), Arc::from("a_metric"));
        f.count(&b, true);
        f.count(&a, true);
        f.count(&b, true);
        f.count(&a, false);
        assert_eq!(f.get("b_metric"), Some(&2));
        assert_eq!(f.get("a_metric"), Some(&0));
        assert_eq!(f.get("c_metric"), None);
        let map: BTreeMap<String, u32> = [("a_metric".into(), 0), ("b_metric".into(), 2)].into();
        let json = serde_json::to_string(&f).expect("json");
        assert_eq!(json, serde_json::to_string(&map).expect("json"));
        assert_eq!(serde_json::from_str::<Failures>(&json).expect("read"), f);
        assert_eq!(
            f.iter().collect::<Vec<_>>(),
            vec![("a_metric", 0), ("b_metric", 2)]
        );
        f.clear();
        assert!(f.is_empty());
    }
}
