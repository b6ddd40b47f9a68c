//! What a deployment record keeps of one metric between ticks (`report.rs`'s builder): a few
//! numbers per metric of every live rollout, so kept small. Split from `report` (file budget).

use crate::verdict::Verdict;

/// What the ticks said of one metric so far: one per metric of every live rollout, so its
/// two `Option<(f64, f64)>`s are two pairs and two bits (56 bytes were 40).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Seen {
    pub(super) ticks: u32,
    pub(super) last_verdict: Option<Verdict>,
    /// Which pairs hold values: [`BASELINE`], [`CANARY`].
    has: u8,
    /// (first, last) value seen, once `has` says so.
    baseline: (f64, f64),
    canary: (f64, f64),
}

pub(super) const BASELINE: u8 = 1;
pub(super) const CANARY: u8 = 2;

impl Seen {
    /// Records `v` as the last value of the pair `which`, and as its first if it had none.
    pub(super) fn see(&mut self, which: u8, v: f64) {
        let first = self.has & which == 0;
        self.has |= which;
        let pair = if which == BASELINE {
            &mut self.baseline
        } else {
            &mut self.canary
        };
        if first {
            pair.0 = v;
        }
        pair.1 = v;
    }

    /// The pair `which` as (first, last), if a value was seen.
    pub(super) fn pair(&self, which: u8) -> Option<(f64, f64)> {
        let pair = if which == BASELINE {
            self.baseline
        } else {
            self.canary
        };
        (self.has & which != 0).then_some(pair)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Structural, not a measurement: two `Option<(f64, f64)>`s made it 56 bytes.
    #[test]
    fn a_metric_seen_is_forty_bytes_and_keeps_first_and_last() {
        assert!(std::mem::size_of::<Seen>() <= 40);
        let mut seen = Seen::default();
        assert_eq!(seen.pair(CANARY), None);
        seen.see(CANARY, 1.0);
        seen.see(BASELINE, 5.0);
        seen.see(CANARY, 2.0);
        seen.see(CANARY, 3.0);
        assert_eq!(seen.pair(CANARY), Some((1.0, 3.0)));
        assert_eq!(seen.pair(BASELINE), Some((5.0, 5.0)));
    }
}
