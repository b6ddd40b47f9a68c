//! The report of simulated rule runs: rates with Wilson intervals, ticks to detect, and which
//! metric decided, as a Markdown table or JSON.

use std::collections::BTreeMap;

use serde::Serialize;

use super::report::{Rates, markdown_table};
use super::{Outcome, Scenario, Setup};

/// One rule × scenario × traffic × horizon line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub rule: String,
    pub scenario: String,
    pub traffic: String,
    pub horizon: String,
    /// Ticks are judged ticks (one a minute past warmup) until the rollback.
    #[serde(flatten)]
    pub rates: Rates,
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
        Summary {
            rule: rule.to_string(),
            scenario: scenario.name.to_string(),
            traffic: setup.traffic.name.to_string(),
            horizon: humantime::format_duration(setup.horizon).to_string(),
            rates: Rates::of(scenario.is_healthy(), &ticks, outcomes.len()),
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
        let [measures, rollbacks, rate, interval, median, p90] = r.rates.cells();
        lines.push([
            r.rule.clone(),
            r.scenario.clone(),
            r.traffic.clone(),
            r.horizon.clone(),
            measures,
            rollbacks,
            rate,
            interval,
            median,
            p90,
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
