//! A parsed query's set-aside matcher values, packed.
//!
//! The shape memo keeps one `Shape` per distinct query text — 8 per rollout, 80,000 at 10,000
//! rollouts — and each held its values as one `String` apiece: three or four allocations of a
//! few bytes, each with its allocator overhead. Packed into one text and one list of ends they
//! are two allocations per query, whatever the number of values.

/// The values in walk order: `text` is their concatenation and `ends[i]` where value `i` ends.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Values {
    text: Box<str>,
    ends: Box<[usize]>,
}

impl Values {
    pub fn iter(&self) -> impl Iterator<Item = &str> + Clone {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        // Every end is a char boundary: it is where a whole `&str` was pushed.
        starts
            .zip(self.ends.iter().copied())
            .map(|(a, b)| self.text.get(a..b).unwrap_or_default())
    }
}

impl<S: AsRef<str>> FromIterator<S> for Values {
    fn from_iter<I: IntoIterator<Item = S>>(values: I) -> Self {
        let (mut text, mut ends) = (String::new(), Vec::new());
        for v in values {
            text.push_str(v.as_ref());
            ends.push(text.len());
        }
        Values {
            text: text.into(),
            ends: ends.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Values;

    #[test]
    fn values_come_back_in_order_with_empty_and_multibyte_ones() {
        let input = ["svc-1", "", "canary", "é\"\\x", ""];
        let v: Values = input.iter().collect();
        assert_eq!(v.iter().collect::<Vec<_>>(), input);
        assert_eq!(Values::default().iter().count(), 0);
    }

    #[test]
    fn values_that_split_differently_are_not_equal() {
        let a: Values = ["ab", "c"].iter().collect();
        let b: Values = ["a", "bc"].iter().collect();
        assert_ne!(a, b);
        assert_eq!(a, ["ab", "c"].iter().collect::<Values>());
    }
}
