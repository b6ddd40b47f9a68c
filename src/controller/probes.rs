//! Health probes of live rollouts: the runbooks' "health endpoint fails" rollback trigger.
//!
//! A small supervisor watches the update stream; for every live rollout whose rule lists
//! `health` endpoints it runs one task per endpoint that GETs it every `interval` and sends
//! [`Event::HealthFailed`] after `failure_limit` consecutive failures. Tasks end with their
//! rollout. The counting lives here rather than in the machine because it is about probes, not
//! about rollouts: the machine only learns the conclusion, like it does from an alert.

use std::collections::HashMap;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::Controller;
use super::feed::Feed;
use crate::rollout::Event;
use crate::rules::schema::HealthSpec;
use crate::source::HealthProbe;

/// Runs until the update stream closes; aborts its probe tasks when it returns.
pub async fn supervise(mut feed: Feed, probe: HealthProbe) {
    let mut running: HashMap<String, Vec<JoinHandle<()>>> = HashMap::new();
    let controller = feed.controller().clone();
    // Rollouts that were live before the supervisor subscribed.
    for r in controller.list().unwrap_or_default() {
        if !r.phase.is_terminal() {
            start(&controller, &probe, &r.id, &r.rule, &mut running);
        }
    }
    while let Some(updates) = feed.next().await {
        for u in updates {
            let r = &u.rollout;
            if r.phase.is_terminal() {
                for h in running.remove(&r.id).unwrap_or_default() {
                    h.abort();
                }
            } else if !running.contains_key(&r.id) {
                start(&controller, &probe, &r.id, &r.rule, &mut running);
            }
        }
    }
    for h in running.into_values().flatten() {
        h.abort();
    }
}

fn start(
    controller: &Controller,
    probe: &HealthProbe,
    id: &str,
    rule: &str,
    running: &mut HashMap<String, Vec<JoinHandle<()>>>,
) {
    let specs: Vec<HealthSpec> = controller
        .rules()
        .get(rule)
        .map(|r| r.spec.health.iter().map(|h| h.value.clone()).collect())
        .unwrap_or_default();
    let tasks = specs
        .into_iter()
        .map(|spec| {
            tokio::spawn(probe_endpoint(
                controller.clone(),
                probe.clone(),
                id.to_string(),
                spec,
            ))
        })
        .collect();
    running.insert(id.to_string(), tasks);
}

/// Probes one endpoint until it failed `failure_limit` times in a row or the rollout ended.
async fn probe_endpoint(controller: Controller, probe: HealthProbe, id: String, spec: HealthSpec) {
    // Bounded both ways: a tiny interval cannot spin, a huge one cannot overflow the ticker.
    let interval = spec
        .interval
        .clamp(Duration::from_millis(100), Duration::from_secs(24 * 3600));
    // A probe must answer before the next one is due, and no probe waits longer than 10 s.
    let timeout = interval.min(Duration::from_secs(10));
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failures = 0u32;
    loop {
        ticker.tick().await;
        match probe.check(&spec.url, timeout).await {
            Ok(()) => failures = 0,
            Err(error) => {
                failures = failures.saturating_add(1);
                tracing::warn!(event = "health.fail", rollout = %id, url = %crate::redact::url(&spec.url), failures, limit = spec.failure_limit, error = %error, "health probe failed");
                if failures >= spec.failure_limit {
                    let error = format!("{error} ({failures} times in a row)");
                    let event = Event::HealthFailed {
                        url: crate::redact::url(&spec.url),
                        error,
                    };
                    if let Err(e) = controller.send(&id, event).await {
                        tracing::info!(rollout = %id, error = %e, "health failure not applied");
                    }
                    return;
                }
            }
        }
    }
}
