//! What a source saw for one group of one metric: the judge's input.
//!
//! Every way a query can go wrong has its own variant, so the judge can say `nodata` for "nothing
//! to judge" and `error` for "could not look", and never mistake either for health.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Observation {
    /// Finite values in time order (NaN and infinities dropped). Never empty.
    Samples { values: Vec<f64>, dropped: usize },
    /// The query matched no series, or every point was NaN/Inf.
    Empty { dropped: usize },
    /// The query returned several series where one aggregated series was expected.
    Ambiguous { series: usize },
    /// The source could not answer: down, timeout, HTTP error, bad query, garbage.
    Failed { message: String },
}

impl Observation {
    /// Builds an observation from raw values, dropping NaN and infinities. Prometheus returns NaN
    /// for 0/0 (a ratio over no traffic), which is "no data", not a number to compare.
    pub fn from_values(raw: impl IntoIterator<Item = f64>) -> Observation {
        let mut dropped = 0;
        let values: Vec<f64> = raw
            .into_iter()
            .filter(|v| {
                let keep = v.is_finite();
                dropped += usize::from(!keep);
                keep
            })
            .collect();
        if values.is_empty() {
            Observation::Empty { dropped }
        } else {
            Observation::Samples { values, dropped }
        }
    }

    pub fn values(&self) -> &[f64] {
        match self {
            Observation::Samples { values, .. } => values,
            _ => &[],
        }
    }

    pub fn latest(&self) -> Option<f64> {
        self.values().last().copied()
    }
}
