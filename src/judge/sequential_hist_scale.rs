//! The histogram test's null restated every tick: "the canary's latency is at most 1 + m(t)
//! times the baseline's", with each edge's tail margin read from the baseline's histogram as it
//! stands before the tick, and m(t) tightening from `margin` to `settled_margin` as the hold
//! goes on.
//!
//! Why a margin that tightens: canary and baseline run on different hosts, so even a healthy
//! canary's latency relative to the baseline's wobbles (the groups' own slow drifts) around a
//! static host offset. At high traffic the e-process follows the mean of that path since the
//! first look, and the mean of a path that has run for one hour still carries most of the
//! wobble, while after eight hours it carries mostly the static offset. A margin wide enough
//! for the first hour (0.2: BENCHMARKS "The latency ceiling") is twice what the eighth needs,
//! and the canaries a 24 h hold misses are exactly the + 30 % ones on hosts a few percent
//! faster than the baseline's, which that width hides. `simulate::bounds` computes the best
//! any policy can do at each horizon; this schedule follows its boundary in two numbers.
//!
//! Why it stays anytime-valid: every tick's per-edge factor is the likelihood ratio of
//! "g × (1 + m_e,k)" against "1 + m_e,k", with m_e,k computed from data before tick k (the
//! schedule is a fixed function of the tick count, the tail shares come from the baseline's
//! buckets up to the previous tick). Each factor has conditional mean ≤ 1 under that tick's
//! null, so each grid ratio's product is a nonnegative supermartingale, and so is the average
//! over grid ratios and edges: Ville's inequality bounds P(ever reaching M/α) by α under the
//! null "at every tick, at no edge is the canary's tail heavier than a (1 + m(t)) times slower
//! baseline's would be". The later null is stricter than the earlier: a canary 15 % slower for a
//! day is not "the same" after eight hours, though it was in the first.
//!
//! Why the margins are refreshed from the baseline's histogram: the shared wobble moves both
//! groups' medians by 20 % for half an hour at a time, which moves every edge along the
//! distribution and changes the tail ratio a given latency scale makes there. Margins fixed
//! from the first look carry that look's wobble for the whole hold; the baseline's buckets
//! since the first look average it away.

use serde::{Deserialize, Serialize};

use super::sequential_hist::{Buckets, edge_margins};

/// The tightening null and what it is computed from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScaleNull {
    /// Alternatives relative to each edge's null of the tick: ratio g × (1 + m_e,k).
    pub grid: Vec<f64>,
    /// Latency-scale margin at the first tick of evidence, and the one it tightens to.
    pub margin: f64,
    pub settled: f64,
    /// Ticks of evidence over which ln(1 + m) goes linearly from `margin` to `settled`.
    pub settle_ticks: u64,
    /// Every finite edge of the histogram, ascending, and the baseline's requests above each
    /// and in all, since the counters began (the first look) plus every tick's increase since.
    pub edges: Vec<f64>,
    pub above: Vec<f64>,
    pub total: f64,
}

impl ScaleNull {
    /// The latency-scale margin of the tick after `ticks` ticks of evidence.
    pub fn margin_at(&self, ticks: u64) -> f64 {
        let (a, b) = ((1.0 + self.margin).ln(), (1.0 + self.settled).ln());
        let f = if self.settle_ticks == 0 {
            1.0
        } else {
            (ticks as f64 / self.settle_ticks as f64).min(1.0)
        };
        (a + (b - a) * f).exp() - 1.0
    }

    /// The tail margin of each of `edges` for the tick after `ticks` ticks (None: that edge
    /// cannot be tested on this tick).
    pub fn margins_for(&self, edges: &[f64], ticks: u64) -> Vec<Option<f64>> {
        let all = edge_margins(&self.edges, &self.above, self.total, self.margin_at(ticks));
        edges
            .iter()
            .map(|e| {
                let i = self.edges.iter().position(|x| x == e)?;
                all.get(i).copied().flatten()
            })
            .collect()
    }

    /// Adds one tick's baseline increases (`le` over `self.edges`); a tick whose list does
    /// not match, or with a count that is not a number, is left out.
    pub fn observe(&mut self, baseline: &Buckets) {
        if baseline.le.len() != self.edges.len() {
            return;
        }
        let count = baseline.count;
        if !(count.is_finite() && count > 0.0) || baseline.le.iter().any(|v| !v.is_finite()) {
            return;
        }
        for (a, le) in self.above.iter_mut().zip(&baseline.le) {
            *a += (count - le).clamp(0.0, count);
        }
        self.total += count;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::sequential_hist::{HistogramEProcess, HistogramTick};
    use statrs::distribution::{ContinuousCDF, Normal};

    const EDGES: [f64; 11] = [
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ];

    /// Expected bucket counts of `n` log-normal requests (median `median`, σ 0.6).
    fn buckets(n: f64, median: f64) -> Buckets {
        let z = Normal::new(0.0, 1.0).unwrap();
        Buckets {
            le: EDGES
                .iter()
                .map(|e| n * z.cdf((e / median).ln() / 0.6))
                .collect(),
            count: n,
        }
    }

    fn scale(settled: f64, settle_ticks: u64) -> ScaleNull {
        let first = buckets(1e5, 0.5);
        ScaleNull {
            grid: vec![1.1, 1.25, 1.5, 2.0],
            margin: 0.2,
            settled,
            settle_ticks,
            edges: EDGES.to_vec(),
            above: first.le.iter().map(|le| first.count - le).collect(),
            total: first.count,
        }
    }

    /// Ticks of evidence until the test rejects at threshold 200, for a canary `factor` times
    /// as slow as the baseline at a 50 % split (None: not within `ticks`).
    fn rejects_after(null: ScaleNull, factor: f64, ticks: usize) -> Option<usize> {
        let mut p = HistogramEProcess::with_scale(null).expect("testable edges");
        let tick = HistogramTick {
            canary: buckets(3000.0, 0.5 * factor),
            baseline: buckets(3000.0, 0.5),
        };
        (1..=ticks).find(|_| {
            assert!(p.update_scaled(&tick, f64::INFINITY));
            p.log_e() >= 200f64.ln()
        })
    }

    #[test]
    fn the_margin_tightens_linearly_in_log_scale_and_then_stays() {
        let s = scale(0.15, 100);
        assert!((s.margin_at(0) - 0.2).abs() < 1e-12);
        assert!((s.margin_at(100) - 0.15).abs() < 1e-12);
        assert!((s.margin_at(1000) - 0.15).abs() < 1e-12);
        let half = ((1.2f64.ln() + 1.15f64.ln()) / 2.0).exp() - 1.0;
        assert!((s.margin_at(50) - half).abs() < 1e-12);
        assert!((scale(0.15, 0).margin_at(0) - 0.15).abs() < 1e-12);
    }

    /// The mechanism itself: a canary 18 % slower is inside a fixed 0.2 margin for ever, and
    /// outside the settled 0.15 once the hold has gone on; a canary 10 % slower is inside both.
    #[test]
    fn a_settled_margin_catches_what_the_starting_one_tolerates() {
        assert_eq!(rejects_after(scale(0.2, 100), 1.18, 2000), None);
        let caught = rejects_after(scale(0.15, 100), 1.18, 2000);
        assert!(caught.is_some_and(|t| t > 20), "{caught:?}");
        assert_eq!(rejects_after(scale(0.15, 100), 1.1, 2000), None);
    }

    #[test]
    fn the_baselines_buckets_are_added_before_the_next_tick() {
        let mut s = scale(0.15, 100);
        let before = (s.total, s.above[7]);
        s.observe(&buckets(1000.0, 0.5));
        assert_eq!(s.total, before.0 + 1000.0);
        assert!(s.above[7] > before.1);
        // A tick whose edges do not match, or with no requests, is left out.
        s.observe(&Buckets {
            le: vec![1.0],
            count: 5.0,
        });
        s.observe(&buckets(0.0, 0.5));
        assert_eq!(s.total, before.0 + 1000.0);
    }
}
