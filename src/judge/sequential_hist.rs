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

use super::sequential::{EProcess, SequentialConfig, TickCounts, log_mean_exp};

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
        }
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
