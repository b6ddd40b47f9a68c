//! Settings a rule file gives the judge, by the rule-file keys: the Kayenta classifier's and the
//! sequential test's. Defaults live here, so `check` and the judge agree on them.

use serde::{Deserialize, Serialize};

use super::Direction;

/// Which effect size gates `high`/`low` beyond significance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum EffectMeasure {
    /// Canary mean / baseline mean; 1.0 is no effect. Kayenta's default.
    #[default]
    MeanRatio,
    /// P(canary sample > baseline sample), ties one half; 0.5 is no effect. Bounded and
    /// defined for zero means; set `allowed_increase` below 1.0 (e.g. 0.7) when using it.
    Cles,
}

/// Per-metric settings; the field names are the rule-file keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClassifierConfig {
    /// Which way the metric gets worse; only that way can fail.
    pub direction: Direction,
    /// What to do with NaN samples.
    pub nan_strategy: NanStrategy,
    /// Whether to trim outliers first.
    pub outliers: OutlierStrategy,
    /// Fraction of |estimate| the interval must clear; Kayenta's 0.25.
    pub tolerance: f64,
    /// Confidence level of the interval; Kayenta's judge uses 0.98.
    pub confidence: f64,
    /// Effect size compared with the allowed/critical thresholds.
    pub effect_size: EffectMeasure,
    /// `high` needs effect ≥ this. 1.0 (Kayenta's default) adds no requirement for the mean
    /// ratio; the shipped rules use 1.1 and above because canary and baseline differ a little
    /// anyway.
    pub allowed_increase: f64,
    /// `low` needs effect ≤ this.
    pub allowed_decrease: f64,
    /// A `high` with effect ≥ this is flagged `critical`.
    pub critical_increase: f64,
    /// A `low` with effect ≤ this is flagged `critical`.
    pub critical_decrease: f64,
    /// Missing data fails the metric (`nodata_fail`) instead of being `nodata`.
    pub must_have_data: bool,
}

impl Default for ClassifierConfig {
    fn default() -> Self {
        Self {
            direction: Direction::default(),
            nan_strategy: NanStrategy::default(),
            outliers: OutlierStrategy::default(),
            tolerance: 0.25,
            confidence: 0.98,
            effect_size: EffectMeasure::default(),
            allowed_increase: 1.0,
            allowed_decrease: 1.0,
            critical_increase: 1.0,
            critical_decrease: 1.0,
            must_have_data: false,
        }
    }
}

/// What to do with NaN samples (a scrape that returned no value for a step).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum NanStrategy {
    /// Drop them: a missing point is not a measurement. Kayenta's default.
    #[default]
    Remove,
    /// Replace them with 0.0, as Kayenta does, for counters where "no series" means "nothing
    /// happened" (e.g. errors that never occurred).
    Replace,
}

/// Whether to drop outliers before the test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutlierStrategy {
    /// Use every sample.
    Keep,
    /// Drop samples outside `[min(p1, Q1 − factor·IQR), max(p99, Q3 + factor·IQR)]`: Kayenta's
    /// IQR detector with reduced sensitivity, which only ever removes gross spikes (a scrape
    /// during a restart), never the tail a regression lives in.
    Remove {
        /// Fence width in interquartile ranges; Kayenta uses 3.0. Must be positive.
        factor: f64,
    },
}

impl Default for OutlierStrategy {
    fn default() -> Self {
        OutlierStrategy::Remove { factor: 3.0 }
    }
}

/// Kayenta-like default grid of alternative rate ratios.
pub const DEFAULT_GRID: [f64; 6] = [1.25, 1.5, 2.0, 3.0, 5.0, 10.0];

/// Settings of one sequential metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SequentialConfig {
    /// Tolerated excess: the null is "canary ≤ (1 + margin) × baseline".
    pub margin: f64,
    /// Chance of ever failing a healthy canary, over the whole rollout.
    pub alpha: f64,
    /// Alternative ratios mixed; only those above 1 + margin are used.
    pub grid: Vec<f64>,
    /// Sequential metrics in the rule (Bonferroni: the threshold is metrics / alpha).
    pub metrics: usize,
    /// The most one tick may multiply the evidence by (per grid ratio); None: unbounded.
    /// Why: a canary-only blip of seconds puts dozens of errors into one tick, which the
    /// likelihood ratio reads as overwhelming evidence. Capping each tick's factor at C keeps
    /// the guarantee (min(LR, C) ≤ LR, so its conditional mean is still ≤ 1 under the null)
    /// and makes a rollback need ln(M/α)/ln(C) ticks of evidence at least.
    #[serde(default)]
    pub max_tick_factor: Option<f64>,
    /// `test: sequential_histogram`: the latency-scale margin the null tightens to over
    /// `settle_ticks` ticks of evidence (`judge::sequential_hist_scale`); None: it stays.
    #[serde(default)]
    pub settled_margin: Option<f64>,
    #[serde(default)]
    pub settle_ticks: u64,
}

impl Default for SequentialConfig {
    fn default() -> Self {
        SequentialConfig {
            margin: 0.0,
            alpha: 0.05,
            grid: DEFAULT_GRID.to_vec(),
            metrics: 1,
            max_tick_factor: None,
            settled_margin: None,
            settle_ticks: 0,
        }
    }
}

impl SequentialConfig {
    /// E must reach this to fail the metric: M / α.
    pub fn threshold(&self) -> f64 {
        self.metrics.max(1) as f64 / self.alpha
    }

    /// ln of the per-tick cap: +∞ when there is none (or it is not a number above 1).
    pub fn log_tick_cap(&self) -> f64 {
        match self.max_tick_factor {
            Some(c) if c.is_finite() && c > 1.0 => c.ln(),
            _ => f64::INFINITY,
        }
    }
}
