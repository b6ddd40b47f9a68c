//! The report of simulated rule runs: rates with Wilson intervals, ticks to detect, and which
//! metric decided, as a Markdown table or JSON.

use std::collections::BTreeMap;

use serde::Serialize;

use super::report::{interval_95, markdown_table, nearest_rank};
use super::{Outcome, Scenario, Setup};

/// One rule × scenario × traffic × horizon line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub rule: String,
    pub scenario: String,
    pub traffic: String,
    pub horizon: String,
    /// True when the canary was healthy, so `rate` is the false-rollback rate; otherwise it is
    /// the detection rate.
    pub healthy: bool,
    pub runs: usize,
    pub rollbacks: usize,
    pub rate: f64,
    /// Wilson 95 % interval of `rate`.
    pub interval: (f64, f64),
    /// Judged ticks (one a minute past warmup) until the rollback: median and 90th percentile
    /// (nearest rank), over the rollouts that rolled back.
    pub median_ticks: Option<usize>,
    pub p90_ticks: Option<usize>,
    /// Rollouts that neither promoted nor rolled back in time (paused for want of data).
    pub unfinished: usize,
    /// Rollbacks per deciding metric.
    pub decided_by: BTreeMap<String, usize>,
}

impl Summary {
    pub fn new(rule: &str, scenario: &Scenario, setup: &Setup, outcomes: &[Outcome]) -> Summary {
        let mut ticks: Vec<usize> = outcomes
            .iter()
            .filter_map(|o| o.rollback.as_ref().map(|(t, _)| *t))
            .collect();
        ticks.sort_unstable();
        let mut decided_by = BTreeMap::new();
        for o in outcomes {
            if let Some(m) = o.decided_by() {
                *decided_by.entry(m.to_string()).or_insert(0) += 1;
            }
        }
        let runs = outcomes.len();
        Summary {
            rule: rule.to_string(),
            scenario: scenario.name.to_string(),
            traffic: setup.traffic.name.to_string(),
            horizon: humantime::format_duration(setup.horizon).to_string(),
            healthy: scenario.is_healthy(),
            runs,
            rollbacks: ticks.len(),
            rate: if runs == 0 {
                0.0
            } else {
                ticks.len() as f64 / runs as f64
            },
            interval: interval_95(ticks.len(), runs),
            median_ticks: nearest_rank(&ticks, 0.5),
            p90_ticks: nearest_rank(&ticks, 0.9),
            unfinished: outcomes
                .iter()
                .filter(|o| o.rollback.is_none() && !o.promoted)
                .count(),
            decided_by,
        }
    }
}

/// The summaries as an aligned Markdown table.
pub fn markdown(rows: &[Summary]) -> String {
    let pct = |v: f64| format!("{:.1} %", v * 100.0);
    let ticks = |v: Option<usize>| v.map(|t| t.to_string()).unwrap_or_else(|| "-".into());
    let header = [
        "rule",
        "scenario",
        "traffic",
        "hold",
        "measures",
        "rollbacks",
        "rate",
        "95 % interval",
        "median ticks",
        "p90 ticks",
        "unfinished",
        "decided by",
    ]
    .map(String::from);
    let mut lines: Vec<[String; 12]> = vec![header];
    for r in rows {
        let mut by: Vec<(&String, &usize)> = r.decided_by.iter().collect();
        by.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        lines.push([
            r.rule.clone(),
            r.scenario.clone(),
            r.traffic.clone(),
            r.horizon.clone(),
            if r.healthy {
                "false rollbacks".into()
            } else {
                "detected".into()
            },
            format!("{}/{}", r.rollbacks, r.runs),
            pct(r.rate),
            format!("{} – {}", pct(r.interval.0), pct(r.interval.1)),
            ticks(r.median_ticks),
            ticks(r.p90_ticks),
            r.unfinished.to_string(),
            by.iter()
                .take(2)
                .map(|(m, n)| format!("{m} {n}"))
                .collect::<Vec<_>>()
                .join(", "),
        ]);
    }
    markdown_table(&lines, |i| i < 5 || i == 11)
}
