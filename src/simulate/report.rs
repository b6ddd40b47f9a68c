//! Summaries of simulated decisions: rates with their uncertainty, and how fast.

use serde::Serialize;

use super::counts::Scenario;
use super::policy::Policy;

/// How often a line's rollouts rolled back and how fast: the numbers every simulation report
/// gives, whatever the line is made of.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rates {
    /// True when the canary was healthy, so `rate` is the false-rollback rate; otherwise it is
    /// the detection rate.
    pub healthy: bool,
    pub runs: usize,
    pub rollbacks: usize,
    pub rate: f64,
    /// Wilson 95 % interval of `rate`: the simulation has a finite number of runs, and the
    /// reader should see how much that limits the claim.
    pub interval: (f64, f64),
    /// Median and 90th percentile (nearest rank) of the rollback tick, over rollouts that
    /// rolled back.
    pub median_ticks: Option<usize>,
    pub p90_ticks: Option<usize>,
}

impl Rates {
    /// From the ticks at which rollouts rolled back, sorted, out of `runs` rollouts.
    pub fn of(healthy: bool, sorted_ticks: &[usize], runs: usize) -> Rates {
        let rollbacks = sorted_ticks.len();
        Rates {
            healthy,
            runs,
            rollbacks,
            rate: if runs == 0 {
                0.0
            } else {
                rollbacks as f64 / runs as f64
            },
            interval: interval_95(rollbacks, runs),
            median_ticks: nearest_rank(sorted_ticks, 0.5),
            p90_ticks: nearest_rank(sorted_ticks, 0.9),
        }
    }

    /// The table cells: what is measured, rollbacks of runs, rate, interval, median and p90.
    pub fn cells(&self) -> [String; 6] {
        let pct = |v: f64| format!("{:.1} %", v * 100.0);
        let ticks = |v: Option<usize>| v.map(|t| t.to_string()).unwrap_or_else(|| "-".into());
        [
            if self.healthy {
                "false rollbacks".into()
            } else {
                "detected".into()
            },
            format!("{}/{}", self.rollbacks, self.runs),
            pct(self.rate),
            format!("{} – {}", pct(self.interval.0), pct(self.interval.1)),
            ticks(self.median_ticks),
            ticks(self.p90_ticks),
        ]
    }
}

/// One scenario × policy line of the report; ticks are counted from the rollout's first tick.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub scenario: String,
    pub policy: String,
    #[serde(flatten)]
    pub rates: Rates,
}

impl Row {
    pub fn summarise(scenario: &Scenario, policy: &Policy, decided: &[Option<usize>]) -> Row {
        let mut at: Vec<usize> = decided.iter().flatten().copied().collect();
        at.sort_unstable();
        Row {
            scenario: scenario.name.to_string(),
            policy: policy.name(),
            rates: Rates::of(scenario.healthy(), &at, decided.len()),
        }
    }
}

/// Wilson score interval at 95 % for `k` successes in `n` trials; (0, 1) with no trials. Wilson
/// rather than the normal approximation because false-rollback rates sit near 0, where the
/// normal interval collapses to a point.
pub fn interval_95(k: usize, n: usize) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let z = 1.959_963_984_540_054_f64;
    let (n, p) = (n as f64, k as f64 / n as f64);
    let z2 = z * z;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = z / (1.0 + z2 / n) * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    // The ends are exactly 0 and 1 when nothing or everything rolled back; the arithmetic
    // above leaves a rounding residue there.
    let lower = if k == 0 {
        0.0
    } else {
        (centre - half).max(0.0)
    };
    let upper = if k as f64 >= n {
        1.0
    } else {
        (centre + half).min(1.0)
    };
    (lower, upper)
}

/// Nearest-rank quantile of sorted values.
pub fn nearest_rank(sorted: &[usize], q: f64) -> Option<usize> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// The report as an aligned Markdown table, ready for BENCHMARKS.md.
pub fn table(rows: &[Row]) -> String {
    let header = [
        "scenario",
        "policy",
        "measures",
        "rollbacks",
        "rate",
        "95 % interval",
        "median tick",
        "p90 tick",
    ]
    .map(String::from);
    let mut lines: Vec<[String; 8]> = vec![header];
    for r in rows {
        let [measures, rollbacks, rate, interval, median, p90] = r.rates.cells();
        lines.push([
            r.scenario.clone(),
            r.policy.clone(),
            measures,
            rollbacks,
            rate,
            interval,
            median,
            p90,
        ]);
    }
    // Text columns left, number columns right.
    markdown_table(&lines, |i| i < 3)
}

/// Lines (the first is the header) as an aligned Markdown table: columns for which `text` is
/// true are left-aligned, the others (numbers) right-aligned.
pub fn markdown_table<const N: usize>(
    lines: &[[String; N]],
    text: impl Fn(usize) -> bool,
) -> String {
    let mut width = [0usize; N];
    for line in lines {
        for (w, cell) in width.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let render = |line: &[String; N]| {
        let cells: Vec<String> = line
            .iter()
            .zip(width)
            .enumerate()
            .map(|(i, (cell, w))| {
                let pad = " ".repeat(w.saturating_sub(cell.chars().count()));
                if text(i) {
                    format!("{cell}{pad}")
                } else {
                    format!("{pad}{cell}")
                }
            })
            .collect();
        format!("| {} |\n", cells.join(" | "))
    };
    let Some((header, body)) = lines.split_first() else {
        return String::new();
    };
    let mut out = render(header);
    let rule: Vec<String> = width
        .iter()
        .enumerate()
        .map(|(i, &w)| {
            if text(i) {
                "-".repeat(w)
            } else {
                format!("{}:", "-".repeat(w.saturating_sub(1)))
            }
        })
        .collect();
    out.push_str(&format!("| {} |\n", rule.join(" | ")));
    for line in body {
        out.push_str(&render(line));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_interval_matches_the_textbook_values() {
        // 10 of 100: the Wilson interval is 0.0552 – 0.1744.
        let (lo, hi) = interval_95(10, 100);
        assert!(
            (lo - 0.0552).abs() < 1e-4 && (hi - 0.1744).abs() < 1e-4,
            "{lo} {hi}"
        );
        // 0 of 1000: the upper end is 0.38 %, not 0.
        let (lo, hi) = interval_95(0, 1000);
        assert!(lo == 0.0 && (hi - 0.00383).abs() < 1e-5, "{lo} {hi}");
    }

    #[test]
    fn nearest_rank_quantiles() {
        let v = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
        assert_eq!(nearest_rank(&v, 0.5), Some(5));
        assert_eq!(nearest_rank(&v, 0.9), Some(9));
        assert_eq!(nearest_rank(&[], 0.5), None);
    }
}
