//! `POST /api/v1/alertmanager`: Alertmanager's webhook (payload version 4).
//!
//! A firing alert that matches one of a rule's `alerts.rollback_on` matcher sets rolls back that
//! rule's live rollouts; one matching `alerts.pause_on` pauses them. Resolved alerts change
//! nothing: a rollback is final, and a pause is lifted by a human (`resume`), who knows whether
//! the cause is gone. The handler decides nothing itself beyond matching labels.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::rollout::Event;
use crate::rules::matchers::{self, MatcherSet};

/// The parts of Alertmanager's webhook payload canaryd reads; other fields are ignored so a
/// newer Alertmanager that adds some still works.
#[derive(Debug, Deserialize)]
pub struct WebhookPayload {
    pub version: String,
    #[serde(default)]
    pub alerts: Vec<WebhookAlert>,
}

#[derive(Debug, Deserialize)]
pub struct WebhookAlert {
    pub status: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl WebhookAlert {
    /// `APIDown{service="checkout-api", severity="critical"}`: the alert as the reason reads it.
    fn describe(&self) -> String {
        let name = self.labels.get("alertname").map_or("", String::as_str);
        let rest: Vec<String> = self
            .labels
            .iter()
            .filter(|(k, _)| *k != "alertname")
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect();
        format!("{name}{{{}}}", rest.join(", "))
    }
}

fn parsed(sets: &[serde_saphyr::Spanned<String>]) -> Vec<MatcherSet> {
    sets.iter()
        .filter_map(|s| matchers::parse(&s.value).ok())
        .collect()
}

/// The first firing alert that one of `sets` matches: a group of hundreds of alerts stops a
/// rollout once, named by its first matching alert, not hundreds of times.
fn first_match<'a>(alerts: &'a [WebhookAlert], sets: &[MatcherSet]) -> Option<&'a WebhookAlert> {
    if sets.is_empty() {
        return None;
    }
    alerts
        .iter()
        .filter(|a| a.status == "firing")
        .find(|a| sets.iter().any(|set| set.matches(&a.labels)))
}

pub async fn receive(
    State(state): State<AppState>,
    body: Result<Json<WebhookPayload>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(payload) = body.map_err(|e| {
        // Past the limit is 413, so Alertmanager's log says "too large", not "bad request".
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge(super::ALERTMANAGER_BODY_LIMIT)
        } else {
            ApiError::BadRequest(format!("invalid webhook payload: {}", e.body_text()))
        }
    })?;
    if payload.version != "4" {
        return Err(ApiError::BadRequest(format!(
            "webhook payload version {:?} is not supported; Alertmanager sends version 4",
            payload.version
        )));
    }
    let rules = state.controller.rules();
    let mut rolled_back = Vec::new();
    let mut paused = Vec::new();
    for rule in rules.values() {
        let spec = &rule.spec.alerts;
        // A rollback outranks a pause when one group holds alerts for both.
        let (event, alert, out) =
            if let Some(a) = first_match(&payload.alerts, &parsed(&spec.rollback_on)) {
                let event = Event::AlertFired {
                    alert: a.describe(),
                };
                (event, a, &mut rolled_back)
            } else if let Some(a) = first_match(&payload.alerts, &parsed(&spec.pause_on)) {
                let event = Event::AlertPause {
                    alert: a.describe(),
                };
                (event, a, &mut paused)
            } else {
                continue;
            };
        for id in state.controller.live_of_rule(rule.name()) {
            tracing::warn!(event = "alert.received", alert = %alert.describe(), rule = rule.name(), rollout = %id, "alert matches the rule");
            // Rejections are expected: an alert for a rollout already rolling back, or a
            // pause of a paused rollout.
            if state.controller.send(&id, event.clone()).await.is_ok() {
                out.push(id);
            }
        }
    }
    Ok(Json(json!({"rolled_back": rolled_back, "paused": paused})))
}
