//! The part of a rule the state machine needs, as plain data, so machine tests need no YAML.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

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
    /// Lifecycle hooks the rule has (`rollout::lifecycle`).
    pub lifecycle: super::lifecycle::LifecycleHooks,
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
            windows: rule.windows.as_deref().cloned(),
            lifecycle: super::lifecycle::LifecycleHooks {
                pre_rollout: rule.spec.hooks.pre_rollout.is_some(),
                readiness: rule.spec.hooks.readiness.is_some(),
                migrate_down: rule.spec.hooks.migrate_down.is_some(),
            },
        }
    }

    pub fn is_last(&self, step: usize) -> bool {
        step + 1 >= self.steps.len()
    }
}

/// `at + d` that cannot panic: chrono's `+` does on overflow, and a duration from a rule is user
/// input. Validation bounds every rule duration to a year (`rules::bounds`), so saturating at the
/// end of chrono's time only guards against values that never met it — and "not before the end
/// of time" is the safe reading of a hold too long to represent.
pub fn after(at: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(d)
        .ok()
        .and_then(|d| at.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_adds_and_saturates_instead_of_panicking() {
        let t = DateTime::from_timestamp(1_700_000_000, 0).expect("time");
        assert_eq!(
            after(t, Duration::from_secs(60)),
            DateTime::from_timestamp(1_700_000_060, 0).expect("time")
        );
        let huge = Duration::from_secs(1_000_000_000 * 365 * 86_400);
        assert_eq!(after(t, huge), DateTime::<Utc>::MAX_UTC);
        assert_eq!(after(t, Duration::MAX), DateTime::<Utc>::MAX_UTC);
    }
}
