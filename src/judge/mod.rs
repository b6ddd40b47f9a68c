//! The judge: samples in, verdicts out.
//!
//! Architecture Invariant: nothing in this folder does I/O or reads a clock. Every function takes
//! the samples and the metric's configuration as arguments and returns a value that explains
//! itself, so verdicts can be replayed offline (`canaryd judge`) and tested as tables.

pub mod checks;
pub mod classifier;
pub mod observation;
pub mod persistence;
pub mod score;
pub mod sequential;
pub mod sequential_hist;
pub mod sequential_hist_tick;
pub mod stats;
pub mod tick;

use serde::{Deserialize, Serialize};

pub use checks::{Check, Threshold, ThresholdKind, Verdict, judge_metric};
pub use observation::Observation;
pub use score::{Score, ScoreOutcome, Scored, score};
pub use tick::{MetricInput, judge_tick};

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
