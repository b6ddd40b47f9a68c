//! Alerts out: posts canaryd's own alerts to every configured Alertmanager (API v2).
//!
//! A subscriber of the controller's update stream. On every update it derives the rollout's
//! alerts ([`crate::actions::canary_alerts`]), posts the new ones, and resolves (sets `endsAt`) the ones
//! that ended. Every `resend_interval` it re-posts what is still active, as Prometheus does, so
//! Alertmanager never times an active alert out, and re-derives alerts that depend on time alone
//! (`CanaryStalled`, and `CanaryRollback`, which outlives its rollback by
//! `rollback_keep_firing_for`).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::actions::canary_alerts::{Alert, AlertContext, alerts_for, may_alert};
use crate::controller::feed::Feed;
use crate::outbound::Redirect;
use crate::redact;
use crate::rollout::{Phase, Rollout};

#[derive(Debug, thiserror::Error)]
pub enum AlertmanagerError {
    #[error("{url}: {message}")]
    Delivery { url: String, message: String },
}

/// Posts alert batches to a list of Alertmanagers. Cheap to clone.
#[derive(Clone)]
pub struct AlertmanagerClient {
    http: reqwest::Client,
    urls: Vec<String>,
}

impl AlertmanagerClient {
    pub fn new(urls: Vec<String>) -> Result<AlertmanagerClient, reqwest::Error> {
        Ok(AlertmanagerClient {
            http: crate::outbound::client_builder()
                .timeout(Duration::from_secs(10))
                .build()?,
            urls,
        })
    }

    /// Posts to every Alertmanager; each is independent, as in an HA pair, so one down does not
    /// keep the others from paging. Returns the failures.
    pub async fn post(&self, alerts: &[Alert]) -> Vec<AlertmanagerError> {
        let mut errors = Vec::new();
        if alerts.is_empty() {
            return errors;
        }
        for base in &self.urls {
            let url = format!("{}/api/v2/alerts", base.trim_end_matches('/'));
            let message = match self.http.post(&url).json(alerts).send().await {
                Err(e) => Some(redact::text(&e.to_string())),
                Ok(r) => match Redirect::of(&r) {
                    Some(redirect) => Some(redirect.to_string()),
                    None => r
                        .error_for_status()
                        .err()
                        .map(|e| redact::text(&e.to_string())),
                },
            };
            if let Some(message) = message {
                errors.push(AlertmanagerError::Delivery {
                    url: redact::url(&url),
                    message,
                });
            }
        }
        errors
    }
}

/// Settings of the publisher, from the daemon's `alertmanager` section.
#[derive(Clone)]
pub struct PublisherConfig {
    pub resend_interval: Duration,
    pub stall_after: Duration,
    pub rollback_keep_firing_for: Duration,
    pub external_url: String,
}

/// Active alerts per rollout, keyed by their label set.
type Active = BTreeMap<BTreeMap<String, String>, Alert>;

struct Publisher {
    client: AlertmanagerClient,
    cfg: PublisherConfig,
    active: HashMap<String, Active>,
    phase_since: HashMap<String, (Phase, DateTime<Utc>)>,
}

/// Runs until the controller's update stream closes.
pub async fn run(mut feed: Feed, client: AlertmanagerClient, cfg: PublisherConfig) {
    let mut ticker = tokio::time::interval(cfg.resend_interval.max(Duration::from_millis(200)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut p = Publisher {
        client,
        cfg,
        active: HashMap::new(),
        phase_since: HashMap::new(),
    };
    loop {
        tokio::select! {
            updates = feed.next() => {
                let Some(updates) = updates else { return };
                for u in updates {
                    p.reconcile(&u.rollout, Utc::now()).await;
                }
            }
            _ = ticker.tick() => {
                // Replicas share the store: only the leader speaks for it.
                if !feed.controller().leadership().is_leader() {
                    continue;
                }
                let now = Utc::now();
                for r in feed.controller().list().unwrap_or_default() {
                    // Also rollbacks that ended while canaryd was down: on-call still hears.
                    if p.active.contains_key(&r.id) || may_alert(&r, now, p.cfg.rollback_keep_firing_for) {
                        p.reconcile(&r, now).await;
                    }
                }
                let all: Vec<Alert> = p.active.values().flat_map(|a| a.values().cloned()).collect();
                p.deliver(&all).await;
            }
        }
    }
}

impl Publisher {
    /// Posts what started and what ended for one rollout.
    async fn reconcile(&mut self, r: &Rollout, now: DateTime<Utc>) {
        let since = match self.phase_since.get(&r.id) {
            Some((phase, at)) if *phase == r.phase => *at,
            _ => {
                self.phase_since.insert(r.id.clone(), (r.phase, now));
                now
            }
        };
        let cx = AlertContext {
            now,
            phase_since: since,
            stall_after: self.cfg.stall_after,
            rollback_keep_firing_for: self.cfg.rollback_keep_firing_for,
            external_url: &self.cfg.external_url,
        };
        let mut previous = self.active.remove(&r.id).unwrap_or_default();
        let mut current = Active::new();
        let mut changed = Vec::new();
        for mut a in alerts_for(r, &cx) {
            match previous.remove(&a.labels) {
                Some(old) => a.starts_at = old.starts_at,
                None => changed.push(a.clone()),
            }
            current.insert(a.labels.clone(), a);
        }
        for (_, mut ended) in previous {
            ended.ends_at = Some(now);
            changed.push(ended);
        }
        // A new rollout of the same rule does not resolve what an older one still has: a
        // rollback pages for its full `rollback_keep_firing_for` even when a fixed version
        // follows at once, and an undelivered rollback keeps new rollouts of its rule out.
        if r.phase.is_terminal() {
            self.phase_since.remove(&r.id);
        }
        if !current.is_empty() {
            self.active.insert(r.id.clone(), current);
        }
        self.deliver(&changed).await;
    }

    async fn deliver(&self, alerts: &[Alert]) {
        for a in alerts {
            let state = if a.ends_at.is_some() {
                "resolved"
            } else {
                "firing"
            };
            tracing::info!(
                event = "alert.send",
                alert = a.name(),
                rollout = a.labels.get("rollout").map_or("", String::as_str),
                state,
                "alert to Alertmanager"
            );
        }
        for e in self.client.post(alerts).await {
            metrics::counter!("canaryd_alertmanager_errors_total").increment(1);
            tracing::warn!(error = %e, "cannot post alerts to Alertmanager");
        }
    }
}
