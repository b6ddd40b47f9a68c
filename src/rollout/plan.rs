//! The part of a rule the state machine needs, as plain data, so machine tests need no YAML.

use std::time::Duration;

use crate::rules::schema::OnNodata;
use crate::rules::{Rule, Windows};

#[derive(Debug, Clone, PartialEq)]
pub struct PlanStep {
    pub weight: u32,
    pub hold: Duration,
    pub approval: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub steps: Vec<PlanStep>,
    pub warmup: Duration,
    pub failure_limit: u32,
    pub nodata_limit: u32,
    /// What `nodata_limit` consecutive no-data ticks do: pause (default) or roll back.
    pub on_nodata: OnNodata,
    pub windows: Option<Windows>,
}

impl Plan {
    pub fn from_rule(rule: &Rule) -> Plan {
        let a = &rule.spec.analysis;
        Plan {
            steps: rule
                .steps()
                .map(|s| PlanStep {
                    weight: s.weight,
                    hold: s.hold(),
                    approval: s.approval,
                })
                .collect(),
            warmup: a.warmup,
            failure_limit: a.failure_limit,
            nodata_limit: a.nodata_limit,
            on_nodata: a.on_nodata,
            windows: rule.windows.clone(),
        }
    }

    pub fn is_last(&self, step: usize) -> bool {
        step + 1 >= self.steps.len()
    }
}
