//! Reloading rules without dropping working state: a bad file keeps the last good set, as
//! Prometheus does with its rule groups.

use std::sync::Arc;

use super::{RuleError, load_paths};
use crate::rollout::controller::{Controller, RuleSet};

/// Loads every rule or none. Returns the errors when the set is rejected.
pub fn load_set(patterns: &[String]) -> Result<RuleSet, Vec<RuleError>> {
    let (rules, errors) = load_paths(patterns);
    if errors.is_empty() {
        Ok(rules
            .into_iter()
            .map(|r| (r.name().to_string(), Arc::new(r)))
            .collect())
    } else {
        Err(errors)
    }
}

/// Reloads into the controller; on any error keeps the running rules and says where.
pub fn reload(controller: &Controller, patterns: &[String]) -> Result<usize, Vec<RuleError>> {
    match load_set(patterns) {
        Ok(set) => {
            let n = set.len();
            controller.replace_rules(set);
            metrics::gauge!("canaryd_rules_reload_success").set(1.0);
            tracing::info!(rules = n, "rules reloaded");
            Ok(n)
        }
        Err(errors) => {
            metrics::gauge!("canaryd_rules_reload_success").set(0.0);
            for e in &errors {
                tracing::error!(error = %e, "rule reload rejected; keeping the running rules");
            }
            Err(errors)
        }
    }
}
