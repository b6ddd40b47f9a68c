//! A live rollout's window queries, worked out once: what each query's batch shape is, or why
//! its text cannot be rendered.
//!
//! A rollout's window queries depend only on its rule snapshot (fixed while it runs), its id,
//! its version, the metric and the group, so they are the same text every tick. Rendering all
//! of them for every rollout at every slot (minijinja), holding the texts while the slot runs
//! and hashing them to find their shapes again was most of a slot's transient memory at 10,000
//! rollouts (heaptrack: 18 MB of texts, 14 MB of requests holding them, 12 MB of the per-text
//! shape memo). The memo keeps each query's shape ([`Parsed`], whose tree is shared by every
//! query of its template) with the rollout itself ([`RolloutRule`]), so it is dropped with the
//! rollout and there is one per live rollout, whatever the churn. The text is rendered again
//! only for a query sent alone (a single, a fallback, an identical-query batch) or logged
//! ([`super::gather_many`]).

use std::ops::Deref;
use std::sync::{Arc, Mutex};

use crate::rollout::Rollout;
use crate::rules::schema::MetricKind;
use crate::rules::{Group, QueryContext, Rule};
use crate::source::batch::{Parsed, parsed};

/// A rollout's rule snapshot, with its queries' memo: what the scheduler, the slot and the
/// rollout's actor hand along instead of the bare rule, so every tick of the rollout finds the
/// memo its first tick built.
#[derive(Debug, Clone)]
pub(crate) struct RolloutRule {
    rule: Arc<Rule>,
    queries: Arc<QueryMemo>,
}

impl RolloutRule {
    /// The rule with an empty memo: built at the rollout's first batched tick.
    pub(crate) fn new(rule: Arc<Rule>) -> RolloutRule {
        RolloutRule {
            rule,
            queries: Arc::default(),
        }
    }

    pub(crate) fn queries(&self) -> &QueryMemo {
        &self.queries
    }
}

impl From<Arc<Rule>> for RolloutRule {
    fn from(rule: Arc<Rule>) -> RolloutRule {
        RolloutRule::new(rule)
    }
}

impl Deref for RolloutRule {
    type Target = Rule;

    fn deref(&self) -> &Rule {
        &self.rule
    }
}

impl AsRef<Rule> for RolloutRule {
    fn as_ref(&self) -> &Rule {
        &self.rule
    }
}

/// One rollout's [`Known`], built when first needed.
#[derive(Debug, Default)]
pub struct QueryMemo(Mutex<Option<Arc<Known>>>);

/// What a rollout's window queries are, for the rule, rollout id and version it was built for.
#[derive(Debug)]
pub struct Known {
    /// The rule it was rendered from (its address; the memo lives no longer than the rule in a
    /// [`RolloutRule`], so a match is that very rule), the rollout's id and version: a memo
    /// handed another rollout is built again, never used.
    rule: usize,
    rollout: Box<str>,
    version: Box<str>,
    /// One per window metric of the rule, in the rule's order.
    pub(super) metrics: Box<[KnownMetric]>,
}

/// One window metric's queries.
#[derive(Debug)]
pub(super) enum KnownMetric {
    /// Both queries rendered: each one's shape, or why it cannot be batched (asked alone).
    Rendered { canary: Parsed, baseline: Parsed },
    /// A query could not be rendered: the metric is failed with this at every tick, as
    /// [`super::analysis::fetch`] fails it.
    Failed(String),
}

impl QueryMemo {
    /// `rollout`'s queries under `rule`: the memo's, or built now (rendering and parsing each
    /// query once) when it has none or has another rollout's.
    pub fn known(&self, rule: &Rule, rollout: &Rollout) -> Arc<Known> {
        let held = self.lock().clone();
        if let Some(known) = held.filter(|k| k.is_for(rule, rollout)) {
            return known;
        }
        let known = Arc::new(Known::build(rule, rollout));
        *self.lock() = Some(known.clone());
        known
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Arc<Known>>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Known {
    fn build(rule: &Rule, rollout: &Rollout) -> Known {
        let ctx = QueryContext {
            rollout: &rollout.id,
            version: &rollout.version,
        };
        let metrics = window_queries(rule)
            .map(|(_, q)| {
                match (
                    rule.render(q, Group::Canary, &ctx),
                    rule.render(q, Group::Baseline, &ctx),
                ) {
                    (Ok(canary), Ok(baseline)) => KnownMetric::Rendered {
                        canary: parsed(&canary),
                        baseline: parsed(&baseline),
                    },
                    (Err(e), _) | (_, Err(e)) => KnownMetric::Failed(e.to_string()),
                }
            })
            .collect();
        Known {
            rule: address(rule),
            rollout: rollout.id.as_str().into(),
            version: rollout.version.as_str().into(),
            metrics,
        }
    }

    fn is_for(&self, rule: &Rule, rollout: &Rollout) -> bool {
        self.rule == address(rule)
            && *self.rollout == *rollout.id
            && *self.version == *rollout.version
    }
}

fn address(rule: &Rule) -> usize {
    std::ptr::from_ref(rule) as usize
}

/// The rule's window metrics with their query templates, in the rule's order: the order of
/// [`Known::metrics`].
pub(super) fn window_queries(
    rule: &Rule,
) -> impl Iterator<Item = (&crate::rules::schema::MetricSpec, &str)> {
    rule.metrics().filter_map(|m| match m.kind() {
        MetricKind::Window(q) => Some((m, q)),
        _ => None,
    })
}

#[cfg(test)]
#[path = "gather_memo_tests.rs"]
mod tests;
