//! What the sequential tests found, carried on a [`super::Check`] so a verdict explains itself.

use serde::{Deserialize, Serialize};

/// What a verdict shows about the test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// E_t: how many times likelier the data are under "canary worse" than under "not worse".
    pub e_value: f64,
    pub max_e: f64,
    /// Always-valid p-value: min(1, 1 / max E).
    pub p_value: f64,
    pub threshold: f64,
    pub canary_rate: Option<f64>,
    pub baseline_rate: Option<f64>,
    /// The grid ratio with the most support.
    pub best_ratio: Option<f64>,
    pub ticks: u64,
}

impl Evidence {
    /// "evidence 105 : 1 (threshold 40), p = 0.0095, canary errors 1.1 % vs 0.5 %".
    pub fn sentence(&self, what: &str) -> String {
        let pct = |v: Option<f64>| {
            v.map(|v| format!("{:.3} %", v * 100.0))
                .unwrap_or_else(|| "-".into())
        };
        format!(
            "evidence {:.1} : 1 (threshold {:.0}), p = {:.4}, canary {what} {} vs baseline {} over {} ticks{}",
            self.e_value,
            self.threshold,
            self.p_value,
            pct(self.canary_rate),
            pct(self.baseline_rate),
            self.ticks,
            self.best_ratio
                .map(|r| format!(", most support for {r}x"))
                .unwrap_or_default()
        )
    }
}
