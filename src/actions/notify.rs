//! Notifications to chat and webhooks: the runbooks' "deploy scheduled", "step completed",
//! "rollback" and "deploy complete" messages, rendered from editable templates.
//!
//! A subscriber of the update stream. It keeps its own [`ReportBuilder`] per rollout, so the
//! final message can say duration and baseline → canary per metric without asking the report
//! subscriber (the two are independent: one failing does not stop the other).

use std::collections::HashMap;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use chrono::Utc;
use serde_json::{Value, json};

use super::report::ReportBuilder;
use super::templates::Templates;
use crate::config::{NotificationEvent, NotificationKind, NotificationSection};
use crate::outbound::Redirect;
use crate::redact;
use crate::rollout::controller::Update;
use crate::rollout::feed::Feed;
use crate::rollout::{Action, Phase};

/// Delivers rendered messages. Cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    http: reqwest::Client,
    targets: Vec<NotificationSection>,
    templates: Templates,
    external_url: String,
}

impl Notifier {
    pub fn new(
        targets: Vec<NotificationSection>,
        templates: Templates,
        external_url: String,
    ) -> Result<Notifier, reqwest::Error> {
        Ok(Notifier {
            http: crate::outbound::client_builder()
                .timeout(Duration::from_secs(10))
                .build()?,
            targets,
            templates,
            external_url,
        })
    }

    /// Renders `event` and posts it to every target subscribed to it. Returns the failures as
    /// text; a chat outage must never affect a rollout.
    pub async fn send(&self, event: NotificationEvent, context: &Value) -> Vec<String> {
        let mut errors = Vec::new();
        let text = match self
            .templates
            .render(&format!("{}.txt.j2", event.as_str()), context)
        {
            Ok(t) => t,
            Err(e) => return vec![e.to_string()],
        };
        for t in &self.targets {
            if !t.events.is_empty() && !t.events.contains(&event) {
                continue;
            }
            let body = match t.kind {
                NotificationKind::Slack => json!({ "text": text }),
                NotificationKind::Webhook => json!({
                    "event": event.as_str(),
                    "rollout": context["rollout"],
                    "rule": context["rule"],
                    "version": context["version"],
                    "phase": context["phase"],
                    "text": text,
                    "report": context,
                }),
            };
            let post = || async {
                let r = self
                    .http
                    .post(&t.url)
                    .json(&body)
                    .send()
                    .await
                    .map_err(|e| redact::text(&e.to_string()))?;
                match Redirect::of(&r) {
                    Some(redirect) => Err(redirect.to_string()),
                    None => r
                        .error_for_status()
                        .map(drop)
                        .map_err(|e| redact::text(&e.to_string())),
                }
            };
            let backoff = ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(200))
                .with_max_times(3)
                .with_jitter();
            if let Err(e) = post.retry(backoff).await {
                errors.push(format!("{}: {e}", redact::url(&t.url)));
            }
        }
        errors
    }
}

/// Which notifications one update calls for, in order.
fn events_of(
    u: &Update,
    before: Option<&ReportBuilder>,
    after: &ReportBuilder,
) -> Vec<NotificationEvent> {
    let mut out = Vec::new();
    if u.event == "start" && u.rollout.phase != Phase::Pending {
        out.push(NotificationEvent::Scheduled);
    }
    let steps_before = before.map_or(0, |b| b.report().steps.len());
    if after.report().steps.len() > steps_before {
        out.push(NotificationEvent::StepCompleted);
    }
    if u.actions
        .iter()
        .any(|a| matches!(a, Action::Rollback { .. }))
    {
        out.push(NotificationEvent::Rollback);
    }
    if u.rollout.phase.is_terminal() {
        out.push(NotificationEvent::Complete);
    }
    out
}

/// Runs until the update stream closes.
pub async fn run(mut feed: Feed, notifier: Notifier) {
    let mut builders: HashMap<String, ReportBuilder> = HashMap::new();
    while let Some(updates) = feed.next().await {
        for u in updates {
            let r = &u.rollout;
            // Resyncs after a lag only catch up: their events were already missed.
            let before = builders.get(&r.id).cloned();
            if before.is_none() && r.phase.is_terminal() {
                continue;
            }
            let rules = feed.controller().rules();
            let rule = rules.get(&r.rule);
            let builder = builders
                .entry(r.id.clone())
                .or_insert_with(|| ReportBuilder::new(r, rule.map(|r| r.as_ref())));
            builder.observe(&u);
            let events = if u.event == crate::rollout::feed::RESYNC {
                Vec::new()
            } else {
                events_of(&u, before.as_ref(), builder)
            };
            if events.is_empty() {
                continue;
            }
            let mut ctx = serde_json::to_value(builder.report()).unwrap_or_default();
            let steps = ctx["steps"].as_array().cloned().unwrap_or_default();
            let weights: Vec<u32> = rule
                .map(|r| r.steps().map(|s| s.weight).collect())
                .unwrap_or_default();
            let expected: Duration = rule
                .map(|r| r.steps().map(|s| s.hold()).sum())
                .unwrap_or_default();
            if let Some(obj) = ctx.as_object_mut() {
                obj.insert(
                    "now".into(),
                    json!(Utc::now().format("%Y-%m-%d %H:%M UTC").to_string()),
                );
                obj.insert(
                    "rollout_url".into(),
                    json!(format!(
                        "{}/api/v1/rollouts/{}",
                        notifier.external_url, r.id
                    )),
                );
                obj.insert("plan_weights".into(), json!(weights));
                obj.insert(
                    "expected_duration".into(),
                    json!(humantime::format_duration(expected).to_string()),
                );
                obj.insert("weight".into(), json!(r.weight));
                obj.insert("step".into(), steps.last().cloned().unwrap_or(Value::Null));
                obj.insert(
                    "previous".into(),
                    steps.iter().rev().nth(1).cloned().unwrap_or(Value::Null),
                );
            }
            for event in events {
                for e in notifier.send(event, &ctx).await {
                    tracing::warn!(event = "notify.fail", rollout = %r.id, kind = event.as_str(), error = %e, "notification not delivered");
                }
            }
            if r.phase.is_terminal() {
                builders.remove(&r.id);
            }
        }
    }
}
