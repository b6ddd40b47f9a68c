//! The judge's vocabulary: what a verdict on a metric says (Check, Verdict, Threshold, Evidence)
//! and the settings a rule gives the judge (direction, classifier and sequential-test settings).
//!
//! Architecture Invariant: a leaf. It imports no other room, so the rule schema, the judge, the
//! machine, the store and the outputs can all speak it without importing each other: the rule
//! schema names these settings without reaching into the judge's internals, and the judge reads
//! the schema without the schema reading the judge.

mod config;
mod evidence;

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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub metric: String,
    pub verdict: Verdict,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub classification: Option<Classification>,
    /// The metric is marked `critical` in its rule: any failure of it rolls back at once.
    pub critical: bool,
    /// The statistical comparison found an effect beyond `critical_increase` /
    /// `critical_decrease` (Kayenta's critical effect size). Distinct from `critical`: it is
    /// about this tick's numbers, not the metric's configuration.
    #[serde(default)]
    pub critical_effect: bool,
    /// The canary value the deciding rule used (latest point for absolute lines, window mean
    /// for the ratio).
    pub canary: Option<f64>,
    pub baseline: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
    pub threshold: Option<Threshold>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<(f64, f64)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effect: Option<f64>,
    pub canary_samples: usize,
    pub baseline_samples: usize,
    /// The sequential test's evidence, for `test: sequential` metrics. Boxed: most checks have
    /// none, and inline it made every check 80 bytes larger (every live rollout keeps its last
    /// tick's checks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Box<Evidence>>,
    /// Muted metrics are judged and shown but decide nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub muted: bool,
    pub reason: String,
}

impl Check {
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
    pub fn named(metric: impl Into<String>, verdict: Verdict, reason: impl Into<String>) -> Check {
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
            p_value: None,
            interval: None,
            estimate: None,
            effect: None,
            canary_samples: 0,
            baseline_samples: 0,
            evidence: None,
            muted: false,
            reason: reason.into(),
        }
    }
}
