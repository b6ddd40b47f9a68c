//! The judge's vocabulary: what a verdict on a metric says (Check, Verdict, Threshold, Evidence)
//! and the settings a rule gives the judge (direction, classifier and sequential-test settings).
//!
//! Architecture Invariant: a leaf. It imports no other room, so the rule schema, the judge, the
//! machine, the store and the outputs can all speak it without importing each other: the rule
//! schema names these settings without reaching into the judge's internals, and the judge reads
//! the schema without the schema reading the judge.

mod check_wire;
mod config;
mod evidence;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use config::{
    ClassifierConfig, DEFAULT_GRID, EffectMeasure, NanStrategy, OutlierStrategy, SequentialConfig,
};
pub use evidence::Evidence;

/// Which way a metric gets worse. Shared by thresholds, ratios and the statistical classifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Higher is worse (error rate, latency): the common case, hence the default.
    #[default]
    Increase,
    /// Lower is worse (throughput, success ratio).
    Decrease,
    /// Any change is suspicious.
    Either,
}

/// Kayenta's words for how the canary compares with the baseline, kept verbatim so people who
/// know Kayenta can read canaryd's output without a glossary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Classification {
    Pass,
    High,
    Low,
    Nodata,
    NodataFail,
    Error,
}

/// The verdict a user sees for one metric at one tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Warn,
    Fail,
    Nodata,
    Error,
}

/// Which line a value was held against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThresholdKind {
    RollbackAbove,
    RollbackBelow,
    WarnAbove,
    WarnBelow,
    MaxRatio,
    AllowedIncrease,
    AllowedDecrease,
    CriticalIncrease,
    CriticalDecrease,
    MaxDifference,
    /// The sequential test's evidence reached M/alpha.
    Evidence,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    pub kind: ThresholdKind,
    pub value: f64,
}

/// A metric's verdict with everything a human needs to explain it.
///
/// Every live rollout keeps its last tick's checks, so a check is kept small: the metric's name
/// is the rule's own (`Arc<str>`, shared, not a copy per rollout and tick) and the numbers only
/// a statistical or sequential metric has are boxed ([`Stats`], most checks have none). Its
/// JSON is the flat object it always was (`check_wire.rs`): API, store, reports and
/// Alertmanager payloads read the same bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub metric: Arc<str>,
    pub verdict: Verdict,
    pub classification: Option<Classification>,
    /// The metric is marked `critical` in its rule: any failure of it rolls back at once.
    pub critical: bool,
    /// The statistical comparison found an effect beyond `critical_increase` /
    /// `critical_decrease` (Kayenta's critical effect size). Distinct from `critical`: it is
    /// about this tick's numbers, not the metric's configuration.
    pub critical_effect: bool,
    /// Muted metrics are judged and shown but decide nothing.
    pub muted: bool,
    /// The canary value the deciding rule used (latest point for absolute lines, window mean
    /// for the ratio).
    pub canary: Option<f64>,
    pub baseline: Option<f64>,
    pub ratio: Option<f64>,
    pub threshold: Option<Threshold>,
    /// p-value, interval, estimate and effect: `None` when all four are (set through
    /// [`Check::set_stats`], which keeps it so). Boxed: inline they made every check 64 bytes
    /// larger, and threshold metrics (the shipped rules' kind) never have them.
    pub stats: Option<Box<Stats>>,
    pub canary_samples: usize,
    pub baseline_samples: usize,
    /// The sequential test's evidence, for `test: sequential` metrics. Boxed: most checks have
    /// none, and inline it made every check 80 bytes larger (every live rollout keeps its last
    /// tick's checks).
    pub evidence: Option<Box<Evidence>>,
    pub reason: String,
}

/// The statistical comparison's numbers on a [`Check`] (and the sequential test's p-value and
/// best-supported ratio as effect).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Stats {
    pub p_value: Option<f64>,
    pub interval: Option<(f64, f64)>,
    pub estimate: Option<f64>,
    pub effect: Option<f64>,
}

impl Check {
    pub fn p_value(&self) -> Option<f64> {
        self.stats.as_ref().and_then(|s| s.p_value)
    }

    pub fn interval(&self) -> Option<(f64, f64)> {
        self.stats.as_ref().and_then(|s| s.interval)
    }

    pub fn estimate(&self) -> Option<f64> {
        self.stats.as_ref().and_then(|s| s.estimate)
    }

    pub fn effect(&self) -> Option<f64> {
        self.stats.as_ref().and_then(|s| s.effect)
    }

    pub fn stats(&self) -> Stats {
        self.stats.as_deref().copied().unwrap_or_default()
    }

    /// Replaces the statistical numbers; all `None` keeps no box (so equal checks compare
    /// equal however they were made, and one read back from JSON equals the one written).
    pub fn set_stats(&mut self, stats: Stats) {
        self.stats = (stats != Stats::default()).then(|| Box::new(stats));
    }

    /// A breach of an absolute rollback line, or any failure of a critical metric, does not wait
    /// for `failure_limit`: the runbooks roll back at once when error rate passes 5 %.
    pub fn rolls_back_now(&self) -> bool {
        self.verdict == Verdict::Fail
            && !self.muted
            && (self.critical
                || matches!(
                    self.threshold.map(|t| t.kind),
                    Some(
                        ThresholdKind::RollbackAbove
                            | ThresholdKind::RollbackBelow
                            | ThresholdKind::CriticalIncrease
                            | ThresholdKind::CriticalDecrease
                            | ThresholdKind::Evidence
                    )
                ))
    }

    /// Healthy enough to count toward promotion. A muted metric never blocks.
    pub fn is_healthy(&self) -> bool {
        self.muted || matches!(self.verdict, Verdict::Pass | Verdict::Warn)
    }

    /// A verdict with no numbers yet: the start of every check, and of test fixtures.
    pub fn named(
        metric: impl Into<Arc<str>>,
        verdict: Verdict,
        reason: impl Into<String>,
    ) -> Check {
        Check {
            metric: metric.into(),
            verdict,
            classification: None,
            critical: false,
            critical_effect: false,
            canary: None,
            baseline: None,
            ratio: None,
            threshold: None,
            stats: None,
            canary_samples: 0,
            baseline_samples: 0,
            evidence: None,
            muted: false,
            reason: reason.into(),
        }
    }
}
