//! The member keys a cache entry remembers, in one allocation: a child of
//! `window_cache_entry.rs`.
//!
//! Why: an entry needs its members' keys only to find them again in the next tick's batch. It
//! kept the tick's own `Arc<[Vec<String>]>` — a vector and a string per label value for each of
//! 20,000 members — alive until the next answer replaced it, so at every tick two generations of
//! keys were held at once: heaptrack at 5,000 rollouts counted 9 MB of member keys at the peak
//! (BENCHMARKS.md, "Scale — session 13"), half of them the entry's. Here every value is one
//! slice of one text, ~16 bytes a member with the bench's keys instead of ~112.

use std::collections::HashMap;

use super::Index;

/// Keys in order: key `i` is the values `value_ends[key_ends[i - 1]..key_ends[i]]` of `text`.
#[derive(Debug)]
pub(super) struct Keys {
    text: Box<str>,
    /// Where each value ends in `text`.
    value_ends: Box<[u32]>,
    /// Where each key's values end in `value_ends`.
    key_ends: Box<[u32]>,
}

impl Keys {
    /// `keys` stored compactly; `None` past 4 GB of text or 4 billion values (never a batch).
    pub(super) fn new(keys: &[Vec<String>]) -> Option<Keys> {
        let bytes = keys.iter().flatten().map(String::len).sum();
        let values = keys.iter().map(Vec::len).sum();
        let mut text = String::with_capacity(bytes);
        let mut value_ends = Vec::with_capacity(values);
        let mut key_ends = Vec::with_capacity(keys.len());
        for key in keys {
            for v in key {
                text.push_str(v);
                value_ends.push(u32::try_from(text.len()).ok()?);
            }
            key_ends.push(u32::try_from(value_ends.len()).ok()?);
        }
        Some(Keys {
            text: text.into_boxed_str(),
            value_ends: value_ends.into_boxed_slice(),
            key_ends: key_ends.into_boxed_slice(),
        })
    }

    pub(super) fn len(&self) -> usize {
        self.key_ends.len()
    }

    /// Key `i`'s values; none past the end.
    fn key(&self, i: usize) -> impl ExactSizeIterator<Item = &str> + '_ {
        let end = self.key_ends.get(i).map_or(0, |&e| e as usize);
        let start = match i.checked_sub(1) {
            Some(j) => self.key_ends.get(j).map_or(end, |&e| e as usize),
            None => 0,
        };
        (start..end.max(start)).map(move |v| {
            let to = self.value_ends[v] as usize;
            let from = v.checked_sub(1).map_or(0, |u| self.value_ends[u] as usize);
            &self.text[from..to]
        })
    }

    fn equals(&self, i: usize, key: &[String]) -> bool {
        let mine = self.key(i);
        mine.len() == key.len() && mine.zip(key).all(|(a, b)| a == b)
    }

    /// Where each of `keys` is among these, or `None` when one is new. The members of a steady
    /// batch are the same, in the same order, tick after tick: compared without a map.
    pub(super) fn index_of(&self, keys: &[Vec<String>]) -> Option<Index> {
        if self.len() == keys.len() && keys.iter().enumerate().all(|(i, k)| self.equals(i, k)) {
            return Some(Index::Same);
        }
        let at: HashMap<Vec<&str>, usize> = (0..self.len())
            .map(|i| (self.key(i).collect(), i))
            .collect();
        keys.iter()
            .map(|k| {
                let k: Vec<&str> = k.iter().map(String::as_str).collect();
                at.get(&k).copied()
            })
            .collect::<Option<Vec<usize>>>()
            .map(Index::At)
    }

    /// Bytes held on the heap.
    #[cfg(test)]
    pub(super) fn heap_bytes(&self) -> usize {
        self.text.len() + 4 * (self.value_ends.len() + self.key_ends.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(list: &[&[&str]]) -> Vec<Vec<String>> {
        list.iter()
            .map(|k| k.iter().map(|v| v.to_string()).collect())
            .collect()
    }

    #[test]
    fn keys_are_found_again_exactly_and_values_never_run_together() {
        let old = keys(&[
            &["svc-1", "canary"],
            &["svc-1", "baseline"],
            &["svc-1c", "anary"],
            &["", "x"],
            &["ü|\"", ""],
            &[],
        ]);
        let stored = Keys::new(&old).expect("stored");
        assert_eq!(stored.len(), 6);
        for (i, k) in old.iter().enumerate() {
            assert_eq!(stored.key(i).collect::<Vec<_>>(), *k, "key {i}");
        }
        assert_eq!(stored.key(6).count(), 0, "none past the end");
        assert_eq!(stored.index_of(&old), Some(Index::Same));
        let shuffled = vec![old[2].clone(), old[0].clone(), old[5].clone()];
        assert_eq!(stored.index_of(&shuffled), Some(Index::At(vec![2, 0, 5])));
        // "svc-1" + "canary" is not "svc-1c" + "anary", nor one value "svc-1canary".
        assert_eq!(stored.index_of(&keys(&[&["svc-1canary"]])), None);
        assert_eq!(stored.index_of(&keys(&[&["svc-1", "canary", ""]])), None);
        let mut longer = old.clone();
        longer[0].push(String::new());
        assert_eq!(
            stored.index_of(&longer),
            None,
            "a value more is another key"
        );
        assert_eq!(
            stored.index_of(&old[..5]),
            Some(Index::At(vec![0, 1, 2, 3, 4])),
            "fewer members: found, not the same"
        );
    }

    #[test]
    fn a_member_takes_its_values_bytes_and_4_bytes_a_value_and_a_key() {
        let many: Vec<Vec<String>> = (0..20_000)
            .map(|i| vec![format!("svc-{i:05}"), "canary".to_string()])
            .collect();
        let stored = Keys::new(&many).expect("stored");
        assert_eq!(stored.heap_bytes(), 20_000 * (9 + 6 + 4 * 3));
        assert_eq!(stored.index_of(&many), Some(Index::Same));
    }
}
