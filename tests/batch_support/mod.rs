//! What the batch tests (`batch_queries`, `batch_outage`) share: the rollout they gather for.

use canaryd::rollout::{Phase, Rollout};
use canaryd::rules::Rule;

/// A rollout of `rule` progressing at 5 % for two minutes: past any warmup, so its ticks are
/// gathered and judged.
pub fn rollout(rule: &Rule) -> Rollout {
    let now = chrono::Utc::now();
    let mut r = Rollout::new(
        format!("r-{}", rule.name()),
        rule.name().into(),
        "v2".into(),
        now,
    );
    r.phase = Phase::Progressing;
    r.weight = 5;
    r.step_started_at = Some(now - chrono::Duration::seconds(120));
    r
}
