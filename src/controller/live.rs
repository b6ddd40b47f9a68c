//! The controller's index of its live rollouts: by id (the task a command goes to) and by rule
//! (the conflict check at start, the rollouts an alert stops).
//!
//! Why in memory: a leading controller has a task for every live rollout (recovery spawns them
//! all under this index's lock before a start can take it, and a task leaves the index only once
//! its rollout is no longer live), so the index answers "which rollouts of this rule are live"
//! without reading the store. Reading every rollout from the store on each start made starting
//! N rollouts cost O(N²) (39 s for 3,000; BENCHMARKS.md, "Scale"). The store stays the truth the
//! index is rebuilt from at recovery.

use std::collections::HashMap;
use std::sync::Arc;

/// Live entries by id, with each entry's rule, kept consistent by construction: every change goes
/// through [`LiveSet::insert`], [`LiveSet::remove`] or [`LiveSet::drain`].
///
/// Each id and rule name is one shared `Arc<str>`, and a rule's ids a sorted `Vec`: with a rule
/// per service (issue 14) nearly every rule has one live rollout, and a `BTreeSet` allocates a
/// whole node for it (heaptrack: 1.1 MB at 2,000 rollouts, with each id and rule held twice).
pub(super) struct LiveSet<T> {
    by_id: HashMap<Arc<str>, (Arc<str>, T)>,
    /// Ids in id order, never empty.
    by_rule: HashMap<Arc<str>, Vec<Arc<str>>>,
}

impl<T> Default for LiveSet<T> {
    fn default() -> Self {
        LiveSet {
            by_id: HashMap::new(),
            by_rule: HashMap::new(),
        }
    }
}

impl<T> LiveSet<T> {
    /// Adds (or replaces) the entry of `id`, running under `rule`.
    pub(super) fn insert(&mut self, id: String, rule: String, value: T) {
        self.remove(&id);
        let id: Arc<str> = id.into();
        let rule: Arc<str> = match self.by_rule.get_key_value(rule.as_str()) {
            Some((kept, _)) => kept.clone(),
            None => rule.into(),
        };
        // Nearly every rule has one live rollout: room for one id, not the four a first push
        // reserves (48 bytes a rule).
        let ids = self
            .by_rule
            .entry(rule.clone())
            .or_insert_with(|| Vec::with_capacity(1));
        if let Err(at) = ids.binary_search(&id) {
            ids.insert(at, id.clone());
        }
        self.by_id.insert(id, (rule, value));
    }

    pub(super) fn remove(&mut self, id: &str) -> Option<T> {
        let (rule, value) = self.by_id.remove(id)?;
        if let Some(ids) = self.by_rule.get_mut(&rule) {
            if let Ok(at) = ids.binary_search_by(|i| (**i).cmp(id)) {
                ids.remove(at);
            }
            if ids.is_empty() {
                self.by_rule.remove(&rule);
            }
        }
        Some(value)
    }

    pub(super) fn get(&self, id: &str) -> Option<&T> {
        self.by_id.get(id).map(|(_, v)| v)
    }

    pub(super) fn contains_key(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    /// The ids live under `rule`, in id order.
    pub(super) fn of_rule(&self, rule: &str) -> Vec<String> {
        self.by_rule
            .get(rule)
            .map(|ids| ids.iter().map(|i| i.to_string()).collect())
            .unwrap_or_default()
    }

    /// Empties the index, handing back every entry.
    pub(super) fn drain(&mut self) -> Vec<(String, T)> {
        self.by_rule.clear();
        self.by_id
            .drain()
            .map(|(id, (_, v))| (id.to_string(), v))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::LiveSet;

    #[test]
    fn the_rule_index_follows_inserts_removes_and_drains() {
        let mut set = LiveSet::default();
        set.insert("a".into(), "checkout".into(), 1);
        set.insert("b".into(), "checkout".into(), 2);
        set.insert("c".into(), "search".into(), 3);
        assert_eq!(set.of_rule("checkout"), vec!["a", "b"]);
        assert_eq!(set.of_rule("search"), vec!["c"]);
        assert_eq!(set.of_rule("nothing"), Vec::<String>::new());

        assert_eq!(set.remove("a"), Some(1));
        assert_eq!(set.remove("a"), None);
        assert_eq!(set.of_rule("checkout"), vec!["b"]);
        assert_eq!(set.get("b"), Some(&2));
        assert!(!set.contains_key("a"));

        // Re-inserting an id under another rule moves it: no stale entry under the old rule.
        set.insert("b".into(), "search".into(), 4);
        assert_eq!(set.of_rule("checkout"), Vec::<String>::new());
        assert_eq!(set.of_rule("search"), vec!["b", "c"]);
        assert_eq!(set.by_id.len(), 2);

        let mut drained = set.drain();
        drained.sort();
        assert_eq!(drained, vec![("b".to_string(), 4), ("c".to_string(), 3)]);
        assert_eq!(set.of_rule("search"), Vec::<String>::new());
        assert!(set.by_id.is_empty());
    }

    /// A rule with one live rollout holds room for one id, not a first push's four.
    #[test]
    fn a_rule_with_one_rollout_reserves_one_id() {
        let mut set = LiveSet::default();
        set.insert("a".into(), "checkout".into(), ());
        assert_eq!(set.by_rule["checkout"].capacity(), 1);
        set.insert("b".into(), "checkout".into(), ());
        assert_eq!(set.of_rule("checkout"), vec!["a", "b"]);
    }

    #[test]
    fn ids_of_a_rule_stay_in_id_order_whatever_the_insert_order() {
        let mut set = LiveSet::default();
        for id in ["m", "c", "x", "a", "c"] {
            set.insert(id.into(), "checkout".into(), ());
        }
        assert_eq!(set.of_rule("checkout"), vec!["a", "c", "m", "x"]);
        set.remove("m");
        assert_eq!(set.of_rule("checkout"), vec!["a", "c", "x"]);
    }

    #[test]
    fn an_emptied_rule_leaves_no_key_behind() {
        let mut set = LiveSet::default();
        for i in 0..1000 {
            let id = format!("ro-{i}");
            set.insert(id.clone(), format!("rule-{i}"), ());
            set.remove(&id);
        }
        assert!(
            set.by_rule.is_empty(),
            "ended rollouts must not grow the index"
        );
        assert!(set.by_id.is_empty());
    }
}
