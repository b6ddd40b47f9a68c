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
pub mod sequential_hist_scale;
pub mod sequential_hist_tick;
mod sequential_tick;
pub mod stats;
pub mod tick;

pub use checks::judge_metric;
pub use observation::Observation;
pub use score::{Score, ScoreOutcome, Scored, score};
pub use tick::{MetricInput, judge_tick};
