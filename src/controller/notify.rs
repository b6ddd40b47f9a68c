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
use crate::actions::templates::Templates;
use crate::config::{NotificationEvent, NotificationKind, NotificationSection};
use crate::controller::Update;
use crate::controller::feed::Feed;
use crate::outbound::Redirect;
use crate::redact;
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
                NotificationKind::Slack => json!({ "text": slack_text(&text) }),
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

/// Text as Slack reads it: `&`, `<` and `>` are its control characters (`<url|label>` links,
/// `<!channel>` mentions), so a version or reason that contains them is escaped and stays text.
/// URLs stay bare; Slack links them itself.
pub fn slack_text(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The rollout's page in the web view, below `external_url`.
pub fn page_url(external_url: &str, id: &str) -> String {
    format!("{external_url}/rollouts/{}", crate::html::path_segment(id))
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
    let steps_before = before.map_or(0, ReportBuilder::steps_len);
    if after.steps_len() > steps_before {
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
    let waits = matches!(u.rollout.phase, Phase::WaitingApproval | Phase::Paused);
    if waits && before.map(ReportBuilder::phase) != Some(u.rollout.phase.as_str()) {
        out.push(NotificationEvent::Waiting);
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
                .or_insert_with(|| ReportBuilder::new(r, rule.cloned()));
            builder.observe(&u);
            let events = if u.event == crate::controller::feed::RESYNC {
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
                obj.insert(
                    "page_url".into(),
                    json!(page_url(&notifier.external_url, &r.id)),
                );
                obj.insert("reason".into(), json!(r.reason));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::Rollout;

    fn update(r: &Rollout, event: &'static str) -> Update {
        Update {
            rollout: std::sync::Arc::new(r.clone()),
            event,
            actions: Vec::new(),
        }
    }

    #[test]
    fn a_gate_or_a_pause_notifies_once_when_it_begins() {
        let mut r = Rollout::new("r1".into(), "api".into(), "v2".into(), Utc::now());
        r.phase = Phase::Progressing;
        let mut b = ReportBuilder::new(&r, None);
        b.observe(&update(&r, "tick"));
        for phase in [Phase::WaitingApproval, Phase::Paused] {
            let before = b.clone();
            r.phase = phase;
            let u = update(&r, "tick");
            b.observe(&u);
            assert!(
                events_of(&u, Some(&before), &b).contains(&NotificationEvent::Waiting),
                "{phase:?}"
            );
            let again = b.clone();
            b.observe(&u);
            assert!(
                !events_of(&u, Some(&again), &b).contains(&NotificationEvent::Waiting),
                "{phase:?} again is not news"
            );
        }
    }

    #[test]
    fn slack_control_characters_stay_text_and_the_link_is_a_path_below_external_url() {
        assert_eq!(
            slack_text("<!channel> a&b <https://x|click>"),
            "&lt;!channel&gt; a&amp;b &lt;https://x|click&gt;"
        );
        assert_eq!(
            page_url("https://canary.example.com/ops", "0a1b-2c"),
            "https://canary.example.com/ops/rollouts/0a1b-2c"
        );
        assert_eq!(
            page_url("http://h", "a/../b?c"),
            "http://h/rollouts/a%2F..%2Fb%3Fc"
        );
    }
}
