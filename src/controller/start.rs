//! Starting a rollout (and a new run of an ended one): the conflict check against the live
//! index, the first save, and the task.

use chrono::Utc;

use super::shell::{ControlError, Controller, StartOptions};
use crate::rollout::{Event, Phase, Rollout};

impl Controller {
    /// Starts a rollout of `version` under `rule`. One live rollout per rule.
    pub async fn start(&self, rule_name: &str, version: &str) -> Result<Rollout, ControlError> {
        self.start_with(rule_name, version, StartOptions::default())
            .await
    }

    /// Starts a new run of an ended rollout (`retry`): same rule and version, a new id linked to
    /// the old one, from step 1. The old rollout and its history stay as they ended.
    pub async fn retry(
        &self,
        id: &str,
        by: String,
        reason: Option<String>,
    ) -> Result<Rollout, ControlError> {
        let old = self.get(id)?;
        crate::rollout::controls::can_retry(&old)
            .map_err(|why| ControlError::Rejected(format!("cannot retry {id}: {why}")))?;
        let now = Utc::now();
        let record = crate::rollout::controls::ControlRecord {
            at: now,
            action: "retry".into(),
            by,
            reason,
            from: old.phase,
            to: crate::rollout::Phase::Pending,
        };
        let opts = StartOptions {
            emergency: old.emergency,
            retry_of: Some(old.id.clone()),
            run: old.run.saturating_add(1),
            controls: vec![record],
            migration: old.migration.as_deref().cloned(),
        };
        self.start_with(&old.rule, &old.version, opts).await
    }

    /// [`Controller::start`] with the options of an emergency or a retry.
    pub async fn start_with(
        &self,
        rule_name: &str,
        version: &str,
        opts: StartOptions,
    ) -> Result<Rollout, ControlError> {
        if *self.inner.shutdown.borrow() {
            return Err(ControlError::ShuttingDown);
        }
        let rule = self
            .rules()
            .get(rule_name)
            .cloned()
            .ok_or_else(|| ControlError::UnknownRule(rule_name.to_string()))?;
        if version.trim().is_empty() {
            return Err(ControlError::Rejected("version must not be empty".into()));
        }
        let rollout = {
            let mut live = self.lock_live();
            // The conflict check reads the index of live tasks and the store only for the
            // rollouts it names (one at most, normally): starting is O(1) in the number of
            // rollouts ([`super::live`]).
            for id in live.of_rule(rule_name) {
                // A `failed` rollout that still owes its rollback counts as live: a new canary
                // must not take traffic while the old one is still being taken out.
                let Some(other) = self.inner.store.get(&id)?.filter(|r| r.is_live()) else {
                    continue;
                };
                let owes = if other.rollback_undelivered() {
                    ", its rollback not yet delivered"
                } else {
                    ""
                };
                return Err(ControlError::Conflict(format!(
                    "rule {rule_name:?} already has a live rollout {} ({}{owes})",
                    other.id,
                    other.phase.as_str()
                )));
            }
            let id = format!("ro-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
            let mut rollout = Rollout::new(
                id.clone(),
                rule_name.to_string(),
                version.to_string(),
                Utc::now(),
            );
            rollout.emergency = opts.emergency;
            rollout.retry_of = opts.retry_of;
            rollout.run = opts.run.max(1);
            rollout.controls = opts.controls;
            rollout.migration = opts.migration.map(Box::new);
            rollout.verify = match crate::rollout::verify::plan_for(
                rule.spec.verify.as_deref(),
                rollout.emergency,
            ) {
                Some(mut v) => {
                    let promoted = self.inner.store.list_in(rule_name, Phase::Succeeded)?;
                    v.previous_version = previous_version(&promoted, rule_name);
                    Some(Box::new(v))
                }
                None => None,
            };
            let source = rule
                .source()
                .map_err(|e| ControlError::Rejected(e.to_string()))?;
            self.inner.store.create(&rollout, &source)?;
            self.spawn(&mut live, rule, rollout.clone(), false);
            rollout
        };
        tracing::info!(event = "rollout.start", rollout = %rollout.id, rule = %rollout.rule, version = %rollout.version, "rollout started");
        match self.send(&rollout.id, Event::Start).await {
            // Created but its first decision not yet saved: the task retries it by itself.
            Err(ControlError::Store(e)) => {
                tracing::warn!(rollout = %rollout.id, error = %e, "start not saved yet; will retry");
                Ok(rollout)
            }
            other => other,
        }
    }
}

/// The version last promoted under `rule` (what a revert goes back to).
fn previous_version(stored: &[Rollout], rule: &str) -> Option<String> {
    stored
        .iter()
        .filter(|r| r.rule == rule && r.phase == Phase::Succeeded)
        .max_by_key(|r| r.finished_at)
        .map(|r| r.version.clone())
}
