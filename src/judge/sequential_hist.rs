//! Anytime-valid test that the canary's latency distribution is not worse than the baseline's,
//! over a histogram's bucket counts, without choosing a bucket edge.
//!
//! Why: `slower_than: 0.5` tests one edge. Pick it too low and a slower tail hides among the
//! many requests that were below it anyway; too high and the few requests above it take hours
//! to say anything. A regression of the P95 by 30 % moves the exceedance probability of every
//! edge around the P95 (by a factor of about 2.6 at the P95 of a log-normal with σ = 0.5), so
//! the test should listen to all of them.
//!
//! How: one e-process per finite edge `e`, exactly the count test of [`super::sequential`]
//! with "requests slower than `e`" as the events: given the n_k requests slower than `e` in
//! tick k, the canary's share of them is binomial with success probability
//! ρ_k·r/(1 + ρ_k(r − 1)) when the canary's probability of being slower than `e` is r times
//! the baseline's. The combined evidence is their average,
//!
//!   E_t = (1/K) Σ_e E_t(e),
//!
//! which is a mixture over edges with weights fixed before the first tick. Every E(e) is a
//! nonnegative supermartingale for the same filtration (all counts up to the previous tick)
//! under its own null "P(canary slower than e) ≤ (1 + m)·P(baseline slower than e)", so under
//! their intersection — at no edge is the canary's tail more than (1 + m) times heavier — the
//! average is one too, and Ville's inequality bounds P(E ever reaches 1/α) by α, at every tick,
//! however many. Averaging dominates the Bonferroni correction of per-edge tests (the mean is at
//! least the largest term over K), and when several edges see the same regression their
//! evidence adds up instead of being divided.
//!
//! The margin matters more here than for error rates: canary and baseline run on different
//! hosts, and a latency scale a few percent apart already makes the far tail 20 % heavier. The
//! null "no difference at all" would reject such a canary given enough hours.
//!
//! Assumption, as for the count test: the router sends each request to canary or baseline
//! independently of how slow it will be.

use serde::{Deserialize, Serialize};

use super::sequential_hist_scale::ScaleNull;
use super::{sequential::EProcess, sequential::TickCounts, sequential::log_mean_exp};
use crate::verdict::SequentialConfig;

/// Increases of one side's cumulative histogram buckets over one tick.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Buckets {
    /// Requests at or below each finite edge (`_bucket{le="…"}`), in the order of the edges.
    pub le: Vec<f64>,
    /// All requests (`le="+Inf"`, or `_count`).
    pub count: f64,
}

/// One tick of both sides.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct HistogramTick {
    pub canary: Buckets,
    pub baseline: Buckets,
}

/// The running test: one count e-process per edge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistogramEProcess {
    /// Finite bucket edges, ascending (seconds).
    pub edges: Vec<f64>,
    pub per_edge: Vec<EProcess>,
    /// ln of the largest combined E seen so far.
    pub log_max_e: f64,
    /// Ticks that entered the test.
    pub ticks: u64,
    /// Each edge's own margin (see [`edge_margins`]); empty: every edge uses the config's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub margins: Vec<f64>,
    /// A null restated every tick (`settled_margin`, [`super::sequential_hist_scale`]); None:
    /// the margins fixed at the first look.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<ScaleNull>,
}

/// Fewest baseline requests above an edge for it to be tested: fewer say too little about how
/// heavy the baseline's tail is there to set its margin.
pub const MIN_ABOVE: f64 = 30.0;

/// Per-edge margins for "the canary's latency is at most `1 + scale` times the baseline's".
///
/// Why: a flat ratio margin does not fit every edge. A latency scale shift δ multiplies the
/// share of requests slower than an edge by about exp(δ·h(z)/σ) (h the normal hazard at the
/// edge's z-score): the farther into the tail, the larger the factor. Canary and baseline
/// hosts differ by a few percent of latency, which barely moves the share above the median but
/// can double the share above the P99.9. So the null is stated in latency, and each edge gets
/// the tail ratio that a `1 + scale` slower canary would have there:
///
///   m_e = S_b(e / (1 + scale)) / S_b(e) − 1,
///
/// S_b the baseline's share of requests slower than x, read from its cumulative bucket counts
/// (`above[i]` of `total` above `edges[i]`) and interpolated between the two edges around
/// e/(1+scale) linearly in (ln x, probit S) — exact for a log-normal latency. The counts must be
/// from before the first tick of evidence (the first look), so the margins are fixed in
/// advance and the test keeps its guarantee for the null they state. An edge with fewer than
/// [`MIN_ABOVE`] baseline requests above it, or with no edge below e/(1+scale) to
/// interpolate from, gets None: it is not tested.
pub fn edge_margins(edges: &[f64], above: &[f64], total: f64, scale: f64) -> Vec<Option<f64>> {
    use statrs::distribution::{ContinuousCDF, Normal};
    let Ok(normal) = Normal::new(0.0, 1.0) else {
        return vec![None; edges.len()];
    };
    let share = |i: usize| -> Option<f64> {
        let a = *above.get(i)?;
        (total > 0.0 && a.is_finite() && a >= MIN_ABOVE && a < total).then(|| a / total)
    };
    // z-score of "slower than edge i": S = 1 − Φ(z).
    let z = |i: usize| share(i).map(|s| normal.inverse_cdf(1.0 - s));
    edges
        .iter()
        .enumerate()
        .map(|(j, &e)| {
            let s_e = share(j)?;
            if !(scale.is_finite() && scale >= 0.0 && e > 0.0) {
                return None;
            }
            let t = e / (1.0 + scale);
            if t >= e {
                return Some(0.0);
            }
            // The edges around t: the largest below or at it, and the next one up (≤ e).
            let lo = (0..j).rev().find(|&i| edges[i] <= t && edges[i] > 0.0)?;
            let hi = lo + 1;
            let (za, zb) = (z(lo)?, z(hi)?);
            let (la, lb) = (edges[lo].ln(), edges[hi].ln());
            let zt = za + (zb - za) * (t.ln() - la) / (lb - la);
            let s_t = 1.0 - normal.cdf(zt);
            let m = s_t / s_e - 1.0;
            m.is_finite().then_some(m.max(0.0))
        })
        .collect()
}

/// What the combined test shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistogramEvidence {
    pub e_value: f64,
    /// Always-valid p-value, min(1, 1 / max E).
    pub p_value: f64,
    /// The edge whose test has the most evidence, and the share of requests slower than it on
    /// each side: what to show a person.
    pub edge: Option<f64>,
    pub canary_slower: Option<f64>,
    pub baseline_slower: Option<f64>,
    pub ticks: u64,
}

impl HistogramEProcess {
    /// A test over `edges` (non-finite edges are dropped; order is kept as given).
    pub fn new(edges: &[f64], cfg: &SequentialConfig) -> Self {
        let edges: Vec<f64> = edges.iter().copied().filter(|e| e.is_finite()).collect();
        HistogramEProcess {
            per_edge: edges.iter().map(|_| EProcess::new(cfg)).collect(),
            edges,
            log_max_e: 0.0,
            ticks: 0,
            margins: Vec::new(),
            scale: None,
        }
    }

    /// A test with its own margin per edge; edges whose margin is None are left out. None when
    /// no edge is left.
    pub fn with_margins(
        edges: &[f64],
        margins: &[Option<f64>],
        cfg: &SequentialConfig,
    ) -> Option<Self> {
        let kept: Vec<(f64, f64)> = edges
            .iter()
            .zip(margins)
            .filter_map(|(e, m)| Some((*e, (*m)?)))
            .filter(|(e, m)| e.is_finite() && m.is_finite())
            .collect();
        if kept.is_empty() {
            return None;
        }
        Some(HistogramEProcess {
            per_edge: kept
                .iter()
                .map(|(_, m)| {
                    // Alternatives relative to each edge's null: the grid's ratios times 1 + m.
                    EProcess::new(&SequentialConfig {
                        margin: *m,
                        grid: cfg.grid.iter().map(|r| r * (1.0 + m)).collect(),
                        ..cfg.clone()
                    })
                })
                .collect(),
            edges: kept.iter().map(|(e, _)| *e).collect(),
            margins: kept.iter().map(|(_, m)| *m).collect(),
            log_max_e: 0.0,
            ticks: 0,
            scale: None,
        })
    }

    /// Adds one tick. A tick whose bucket lists do not match the edges, or with no requests on
    /// a side, carries no evidence and is skipped (returns false).
    pub fn update(&mut self, tick: &HistogramTick, margin: f64) -> bool {
        self.update_capped(tick, margin, f64::INFINITY)
    }

    /// [`HistogramEProcess::update`] with every edge's per-ratio tick contribution at most
    /// `log_cap` (see `SequentialConfig::max_tick_factor`).
    pub fn update_capped(&mut self, tick: &HistogramTick, margin: f64, log_cap: f64) -> bool {
        let k = self.edges.len();
        if tick.canary.le.len() != k || tick.baseline.le.len() != k {
            return false;
        }
        let mut used = false;
        for (i, process) in self.per_edge.iter_mut().enumerate() {
            let margin = self.margins.get(i).copied().unwrap_or(margin);
            let counts = TickCounts {
                canary_events: slower(&tick.canary, i),
                canary_requests: tick.canary.count,
                baseline_events: slower(&tick.baseline, i),
                baseline_requests: tick.baseline.count,
            };
            used |= process.update_capped(&counts, margin, log_cap);
        }
        if used {
            self.ticks += 1;
            self.log_max_e = self.log_max_e.max(self.log_e());
        }
        used
    }

    /// A test whose null is restated every tick by `scale` (its edges a subset of the
    /// scale's): the edges testable at the first look, alternatives relative to each tick's
    /// margins. None when no edge is testable yet.
    pub fn with_scale(scale: ScaleNull) -> Option<Self> {
        let edges: Vec<f64> = scale
            .edges
            .iter()
            .zip(scale.margins_for(&scale.edges, 0))
            .filter_map(|(e, m)| m.map(|_| *e))
            .collect();
        if edges.is_empty() || scale.grid.is_empty() {
            return None;
        }
        let process = EProcess {
            ratios: scale.grid.clone(),
            log_l: vec![0.0; scale.grid.len()],
            log_max_e: 0.0,
            ticks: 0,
            totals: Default::default(),
        };
        Some(HistogramEProcess {
            per_edge: vec![process; edges.len()],
            margins: Vec::new(),
            edges,
            log_max_e: 0.0,
            ticks: 0,
            scale: Some(scale),
        })
    }

    /// One tick of a scaled test: `tick` lists every edge of the scale. Each edge's margin and
    /// alternatives are the scale's for this tick, computed before the tick's counts are added
    /// to the baseline's. Returns false when no edge could use the tick.
    pub fn update_scaled(&mut self, tick: &HistogramTick, log_cap: f64) -> bool {
        let Some(mut scale) = self.scale.take() else {
            return false;
        };
        let k = scale.edges.len();
        if tick.canary.le.len() != k || tick.baseline.le.len() != k {
            self.scale = Some(scale);
            return false;
        }
        let margins = scale.margins_for(&self.edges, self.ticks);
        let mut used = false;
        for ((edge, process), m) in self.edges.iter().zip(&mut self.per_edge).zip(&margins) {
            let (Some(m), Some(i)) = (m, scale.edges.iter().position(|e| e == edge)) else {
                continue;
            };
            let counts = TickCounts {
                canary_events: slower(&tick.canary, i),
                canary_requests: tick.canary.count,
                baseline_events: slower(&tick.baseline, i),
                baseline_requests: tick.baseline.count,
            };
            process.ratios = scale.grid.iter().map(|g| g * (1.0 + m)).collect();
            used |= process.update_capped(&counts, *m, log_cap);
        }
        scale.observe(&tick.baseline);
        self.scale = Some(scale);
        if used {
            self.ticks += 1;
            self.log_max_e = self.log_max_e.max(self.log_e());
        }
        used
    }

    /// ln E_t: the log of the mean of the edges' E.
    pub fn log_e(&self) -> f64 {
        let logs: Vec<f64> = self.per_edge.iter().map(EProcess::log_e).collect();
        log_mean_exp(&logs)
    }

    pub fn e_value(&self) -> f64 {
        self.log_e().min(f64::MAX.ln()).exp()
    }

    /// Fails once E reaches M/α (M sequential metrics in the rule).
    pub fn rejects(&self, cfg: &SequentialConfig) -> bool {
        self.log_e() >= cfg.threshold().ln()
    }

    pub fn evidence(&self) -> HistogramEvidence {
        let best = self
            .per_edge
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.log_e().total_cmp(&b.1.log_e()));
        let share = |e: f64, r: f64| (r > 0.0).then(|| e / r);
        HistogramEvidence {
            e_value: self.e_value(),
            p_value: (-self.log_max_e).exp().min(1.0),
            edge: best.map(|(i, _)| self.edges[i]),
            canary_slower: best
                .and_then(|(_, p)| share(p.totals.canary_events, p.totals.canary_requests)),
            baseline_slower: best
                .and_then(|(_, p)| share(p.totals.baseline_events, p.totals.baseline_requests)),
            ticks: self.ticks,
        }
    }
}

/// Requests slower than edge `i`: all minus those at or below it, clamped so that a scrape
/// caught between bucket updates cannot manufacture slow requests.
fn slower(b: &Buckets, i: usize) -> f64 {
    let le = b.le.get(i).copied().unwrap_or(f64::NAN);
    let v = b.count - le;
    if v.is_finite() {
        v.clamp(0.0, b.count.max(0.0))
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(le: &[f64], count: f64) -> Buckets {
        Buckets {
            le: le.to_vec(),
            count,
        }
    }

    #[test]
    fn edge_margins_are_the_tail_ratio_of_a_scaled_log_normal() {
        use statrs::distribution::{ContinuousCDF, Normal};
        let n = Normal::new(0.0, 1.0).unwrap();
        // Baseline latency log-normal, median 0.5 s, sigma 0.6; the Go default edges.
        let sf = |x: f64| 1.0 - n.cdf((x / 0.5).ln() / 0.6);
        let edges = [
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        let total = 1e9;
        let above: Vec<f64> = edges.iter().map(|e| total * sf(*e)).collect();
        let m = edge_margins(&edges, &above, total, 0.1);
        for (i, e) in edges.iter().enumerate() {
            let want = sf(e / 1.1) / sf(*e) - 1.0;
            match m[i] {
                Some(got) => assert!(
                    (got - want).abs() < 1e-6 * want.max(1.0),
                    "{e}: {got} vs {want}"
                ),
                // The lowest edge has no edge below it; 10 s has under 30 requests above it.
                None => assert!(i == 0 || total * sf(*e) < MIN_ABOVE, "{e}"),
            }
        }
        // Farther into the tail, the same 10 % slower canary makes a heavier tail ratio.
        assert!(
            m[7].unwrap() < m[8].unwrap() && m[8].unwrap() < m[9].unwrap(),
            "{m:?}"
        );
        // No scale margin: every testable edge's null is "no heavier at all".
        assert!(
            edge_margins(&edges, &above, total, 0.0)
                .iter()
                .flatten()
                .all(|m| *m == 0.0)
        );
    }

    #[test]
    fn no_tick_means_no_evidence() {
        let p = HistogramEProcess::new(&[0.1, 0.5], &SequentialConfig::default());
        assert_eq!(p.e_value(), 1.0);
    }

    #[test]
    fn a_tail_twice_as_heavy_at_several_edges_builds_evidence() {
        let cfg = SequentialConfig::default();
        let mut p = HistogramEProcess::new(&[0.1, 0.25, 0.5], &cfg);
        let tick = HistogramTick {
            canary: side(&[500.0, 800.0, 900.0], 1000.0),
            baseline: side(&[500.0, 900.0, 950.0], 1000.0),
        };
        for _ in 0..10 {
            assert!(p.update(&tick, 0.0));
        }
        assert!(p.rejects(&cfg), "E = {}", p.e_value());
        assert_eq!(p.evidence().edge, Some(0.25));
    }

    #[test]
    fn mismatched_bucket_lists_are_skipped() {
        let mut p = HistogramEProcess::new(&[0.1, 0.5], &SequentialConfig::default());
        let tick = HistogramTick {
            canary: side(&[1.0], 2.0),
            baseline: side(&[1.0, 2.0], 2.0),
        };
        assert!(!p.update(&tick, 0.0));
        assert_eq!(p.ticks, 0);
    }

    #[test]
    fn buckets_above_the_count_cannot_make_slow_requests() {
        assert_eq!(slower(&side(&[12.0], 10.0), 0), 0.0);
        assert_eq!(slower(&side(&[f64::NAN], 10.0), 0), 0.0);
    }
}
