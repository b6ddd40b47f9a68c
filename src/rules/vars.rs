//! A rule's `vars`: a few names and values, kept as a sorted list. A `BTreeMap` allocates a
//! node for eleven entries (about 550 bytes) for the one or two a rule sets, and every rule
//! holds its own (issue 14: one rule file per service, 10,000 of them).

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Sorted by name, names unique: reads and writes as the YAML mapping it was.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vars(Vec<(String, String)>);

impl Vars {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.find(name).ok().map(|i| self.0[i].1.as_str())
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.find(name).is_ok()
    }

    /// Sets `name`, replacing its value if set.
    pub fn insert(&mut self, name: String, value: String) {
        match self.find(&name) {
            Ok(i) => self.0[i].1 = value,
            Err(i) => self.0.insert(i, (name, value)),
        }
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| k.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A map to render with: a query's variables are these and the built-in ones.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.0.iter().cloned().collect()
    }

    fn find(&self, name: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.as_str().cmp(name))
    }
}

impl From<BTreeMap<String, String>> for Vars {
    fn from(map: BTreeMap<String, String>) -> Self {
        // A map iterates sorted with unique names: the invariant holds as collected.
        let mut list: Vec<(String, String)> = map.into_iter().collect();
        list.shrink_to_fit();
        Self(list)
    }
}

impl FromIterator<(String, String)> for Vars {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        Self::from(iter.into_iter().collect::<BTreeMap<_, _>>())
    }
}

impl<'de> Deserialize<'de> for Vars {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        BTreeMap::<String, String>::deserialize(d).map(Self::from)
    }
}

impl Serialize for Vars {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sorted_and_inserts_in_place() {
        let mut v: Vars = serde_saphyr::from_str("b: '2'\na: '1'\n").expect("a map");
        assert_eq!(v.keys().collect::<Vec<_>>(), ["a", "b"]);
        v.insert("ab".into(), "3".into());
        v.insert("a".into(), "4".into());
        assert_eq!(
            v.iter().collect::<Vec<_>>(),
            [("a", "4"), ("ab", "3"), ("b", "2")]
        );
        assert_eq!(v.get("b"), Some("2"));
        assert!(!v.contains_key("c"));
        assert_eq!(
            serde_json::to_string(&v).expect("strings serialize"),
            r#"{"a":"4","ab":"3","b":"2"}"#
        );
    }
}
