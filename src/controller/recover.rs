//! Resuming after a start: every live rollout in the store gets its actor back, on the rule
//! text it started with.

use std::collections::HashMap;
use std::sync::Arc;

use super::shell::{ControlError, Controller};
use crate::rollout::Rollout;
use crate::rules::{Rule, parse_rule};

impl Controller {
    /// Resumes every live rollout in the store, each with the rule text it started with: same
    /// step, hold counted from the persisted step start, counters kept, and an action that was
    /// decided but not confirmed delivered again first (same Idempotency-Key). Returns how many.
    pub fn recover(&self) -> Result<usize, ControlError> {
        let mut live = self.lock_live();
        let mut n = 0;
        // Rollouts started from the same rule text share one parsed rule.
        let mut shared = HashMap::new();
        for rollout in self.inner.store.list()? {
            if !rollout.is_live() || live.contains_key(&rollout.id) {
                continue;
            }
            let Some(rule) = self.snapshot_rule(&rollout, &mut shared) else {
                tracing::error!(event = "rollout.unrecoverable", rollout = %rollout.id, rule = %rollout.rule,
                    "no usable rule snapshot and no loaded rule of that name; rollout left as stored");
                continue;
            };
            tracing::info!(event = "rollout.recover", rollout = %rollout.id, rule = %rollout.rule,
                phase = rollout.phase.as_str(), step = rollout.step, weight = rollout.weight,
                pending = ?rollout.pending.as_ref().map(|a| a.hook().as_str()), "resuming rollout");
            self.spawn(&mut live, rule, rollout, true);
            n += 1;
        }
        Ok(n)
    }

    /// The rule a rollout resumes on: its snapshot, parsed once per distinct text (`shared`),
    /// and the loaded rule itself when the text is the same (the common case), so N recovered
    /// rollouts do not hold N copies of the same rule.
    fn snapshot_rule(
        &self,
        r: &Rollout,
        shared: &mut HashMap<String, Arc<Rule>>,
    ) -> Option<Arc<Rule>> {
        let source = match self.inner.store.rule_source(&r.id) {
            Ok(s) => s.filter(|s| !s.is_empty()),
            Err(e) => {
                tracing::error!(rollout = %r.id, error = %e, "cannot read the rule snapshot");
                None
            }
        };
        let current = self.rules().get(&r.rule).cloned();
        let Some(text) = source else {
            return current;
        };
        if let Some(c) = current
            .as_ref()
            .filter(|c| c.source().is_ok_and(|s| s == text.as_str()))
        {
            return Some(c.clone());
        }
        if let Some(rule) = shared.get(&text) {
            return Some(rule.clone());
        }
        let path = current.as_ref().map_or_else(
            || std::path::PathBuf::from(format!("<snapshot of {}>", r.rule)),
            |c| c.path.clone(),
        );
        match parse_rule(&path, &text) {
            Ok(rule) => {
                let rule = Arc::new(rule);
                shared.insert(text, rule.clone());
                Some(rule)
            }
            Err(errors) => {
                for e in errors {
                    tracing::error!(rollout = %r.id, error = %e, "rule snapshot no longer valid");
                }
                current
            }
        }
    }
}
