//! A parsed query's set-aside matcher values, packed.
//!
//! The shape memo keeps one `Shape` per distinct query text — 8 per rollout, 80,000 at 10,000
//! rollouts — and each held its values as one `String` apiece: three or four allocations of a
//! few bytes, each with its allocator overhead. Packed with their lengths they are one
//! allocation per query, whatever the number of values.

/// The values in walk order, in one allocation: how many, each one's length (LEB128), then
/// their concatenated text. A text and a list of ends were two allocations and 32 bytes in the
/// shape; this is one and 16 (heaptrack at 5,000 rollouts: 2 MB of values, issue 14).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Values(Box<[u8]>);

impl Values {
    pub fn iter(&self) -> Iter<'_> {
        let mut at = 0;
        // A count is never more than the bytes (each value has a length byte).
        let n = varint(&self.0, &mut at).min(self.0.len());
        let lens = at;
        for _ in 0..n {
            varint(&self.0, &mut at);
        }
        Iter {
            bytes: &self.0,
            lens,
            text: at,
            left: n,
        }
    }
}

/// The values of a [`Values`], read off its bytes without allocating.
#[derive(Debug, Clone)]
pub struct Iter<'a> {
    bytes: &'a [u8],
    /// Where the next length is.
    lens: usize,
    /// Where the next value starts.
    text: usize,
    left: usize,
}

impl<'a> Iterator for Iter<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        self.left = self.left.checked_sub(1)?;
        let len = varint(self.bytes, &mut self.lens);
        let end = self.text.saturating_add(len);
        let piece = self.bytes.get(self.text..end).unwrap_or_default();
        self.text = end;
        // Every piece is a whole `&str` as pushed, so this never fails; if the bytes were
        // damaged anyway, a value reads as empty rather than panicking.
        Some(std::str::from_utf8(piece).unwrap_or_default())
    }
}

/// Writes `n` as LEB128.
fn push_varint(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let low = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(low);
            return;
        }
        out.push(low | 0x80);
    }
}

/// Reads a LEB128 number at `*at` and moves past it; what is missing or too long reads as 0.
fn varint(bytes: &[u8], at: &mut usize) -> usize {
    let mut n: usize = 0;
    for shift in (0..usize::BITS).step_by(7) {
        let Some(&b) = bytes.get(*at) else {
            return 0;
        };
        *at += 1;
        n |= usize::from(b & 0x7f).checked_shl(shift).unwrap_or(0);
        if b & 0x80 == 0 {
            return n;
        }
    }
    0
}

impl<S: AsRef<str>> FromIterator<S> for Values {
    fn from_iter<I: IntoIterator<Item = S>>(values: I) -> Self {
        let values: Vec<S> = values.into_iter().collect();
        let text: usize = values.iter().map(|v| v.as_ref().len()).sum();
        let mut out = Vec::with_capacity(text + values.len() * 2 + 2);
        push_varint(&mut out, values.len());
        for v in &values {
            push_varint(&mut out, v.as_ref().len());
        }
        for v in &values {
            out.extend_from_slice(v.as_ref().as_bytes());
        }
        Values(out.into())
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
        let long = "v".repeat(300);
        let many: Vec<String> = (0..200).map(|i| format!("{i}{long}")).collect();
        let v: Values = many.iter().collect();
        assert_eq!(v.iter().collect::<Vec<_>>(), many);
    }

    /// One allocation of the values' bytes and a few more, not a second list of ends.
    #[test]
    fn values_are_one_allocation_in_sixteen_bytes() {
        assert_eq!(std::mem::size_of::<Values>(), 16);
        let v: Values = ["svc-00017", "canary"].iter().collect();
        assert_eq!(v.0.len(), 3 + "svc-00017canary".len());
    }

    #[test]
    fn values_that_split_differently_are_not_equal() {
        let a: Values = ["ab", "c"].iter().collect();
        let b: Values = ["a", "bc"].iter().collect();
        assert_ne!(a, b);
        assert_eq!(a, ["ab", "c"].iter().collect::<Values>());
    }
}
