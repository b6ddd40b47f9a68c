//! No client that delivers something follows a redirect (design.md, trust rules): a hook, a
//! notification, an alert to Alertmanager or a health probe answered with a 3xx has failed, its
//! error names the status and the (redacted) Location, and the place the Location names gets
//! nothing. Real local servers on both ends; the last test drives a whole rollout.

use crate::common;

use std::time::Duration;

use canaryd::actions::canary_alerts::Alert;
use canaryd::actions::templates::Templates;
use canaryd::actions::{HookError, HookPayload, HookRunner};
use canaryd::config::{NotificationEvent, NotificationKind, NotificationSection};
use canaryd::controller::alertmanager::AlertmanagerClient;
use canaryd::controller::notify::Notifier;
use canaryd::demo::receiver::HookReceiver;
use canaryd::rollout::HookKind;
use canaryd::rules::schema::HookSpec;
use canaryd::source::HealthProbe;
use common::{RuleOpts, Stack, calls_to};

const STATUSES: [u16; 5] = [301, 302, 303, 307, 308];

fn payload() -> HookPayload {
    HookPayload {
        event: HookKind::Rollback,
        rollout_id: "ro-redirect".into(),
        rule: "checkout-api".into(),
        version: "v9".into(),
        step: 1,
        weight: 0,
        phase: "rolling_back".into(),
        reason: Some("error_rate: canary 0.2 is above rollback_above 0.05".into()),
        checks: vec![],
        time: chrono::Utc::now(),
    }
}

/// A receiver that redirects everything to `elsewhere`, with a secret in the Location's query.
async fn redirecting(status: u16, elsewhere: &HookReceiver) -> HookReceiver {
    let rx = HookReceiver::start().await.expect("receiver");
    rx.redirect(Some((status, &elsewhere.url("/stolen?token=t0ken"))))
        .expect("redirect status");
    rx
}

#[tokio::test]
async fn a_hook_answered_with_a_redirect_failed_and_nothing_reaches_the_location() {
    for status in STATUSES {
        let elsewhere = HookReceiver::start().await.expect("receiver");
        let rx = redirecting(status, &elsewhere).await;
        let mut runner = HookRunner::new().expect("runner");
        runner.min_backoff = Duration::from_millis(10);
        let spec = HookSpec {
            url: Some(rx.url("/rollback")),
            command: None,
            timeout: Duration::from_secs(2),
            retries: 3,
            secret_file: None,
        };
        let err = runner
            .call(Some(&spec), &payload())
            .await
            .expect_err("a redirect is no delivery");
        assert!(
            matches!(err, HookError::Redirect { .. }),
            "{status}: {err:?}"
        );
        let text = err.to_string();
        assert!(text.contains(&format!("HTTP {status} redirect")), "{text}");
        assert!(
            text.contains(&elsewhere.url("/stolen?***")),
            "names the Location, redacted: {text}"
        );
        assert!(!text.contains("t0ken"), "{text}");
        assert_eq!(
            elsewhere.attempts(),
            0,
            "{status}: the body, signature and Idempotency-Key went elsewhere"
        );
        // The same answer every time: a redirect is not retried within one delivery.
        assert_eq!(rx.attempts(), 1, "{status}");
    }
}

#[tokio::test]
async fn a_health_probe_answered_with_a_redirect_fails() {
    let elsewhere = HookReceiver::start().await.expect("receiver");
    let rx = redirecting(302, &elsewhere).await;
    let probe = HealthProbe::new().expect("probe");
    let err = probe
        .check(&rx.url("/health/ready"), Duration::from_secs(2))
        .await
        .expect_err("a redirect is no health");
    assert!(err.contains("HTTP 302 redirect"), "{err}");
    assert!(!err.contains("t0ken"), "{err}");
    assert_eq!(elsewhere.attempts(), 0);
}

#[tokio::test]
async fn notifications_and_alerts_answered_with_a_redirect_fail() {
    let elsewhere = HookReceiver::start().await.expect("receiver");
    let rx = redirecting(307, &elsewhere).await;
    let notifier = Notifier::new(
        vec![NotificationSection {
            kind: NotificationKind::Webhook,
            url: rx.url("/chat"),
            events: vec![],
        }],
        Templates::load(None).expect("templates"),
        "http://127.0.0.1:9797".into(),
    )
    .expect("notifier");
    let context = serde_json::json!({
        "rollout": "ro-1", "rule": "r", "version": "v1", "phase": "rolled_back", "weight": 5,
        "rollback": {"reason": "aborted"}, "now": "2026-01-01 00:00 UTC",
        "rollout_url": "http://127.0.0.1:9797/api/v1/rollouts/ro-1",
    });
    let errors = notifier.send(NotificationEvent::Rollback, &context).await;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("HTTP 307 redirect"), "{errors:?}");

    let client = AlertmanagerClient::new(vec![rx.url("")]).expect("client");
    let alert = Alert {
        labels: [("alertname".to_string(), "CanaryRollback".to_string())].into(),
        annotations: Default::default(),
        starts_at: chrono::Utc::now(),
        ends_at: None,
        generator_url: "http://127.0.0.1:9797/api/v1/rollouts/ro-1".into(),
    };
    let errors = client.post(&[alert]).await;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].to_string().contains("HTTP 307 redirect"),
        "{errors:?}"
    );
    assert!(!format!("{errors:?}").contains("t0ken"));
    assert_eq!(elsewhere.attempts(), 0);
}

/// The rollback hook answers 307 to another origin that would answer 200: the rollout must show
/// the rollback as undelivered (`failed`), keep re-delivering it, and end `rolled_back` only
/// once the real receiver took it; the other origin never sees a byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirected_rollback_is_undelivered_then_delivered_to_the_hook_itself() {
    let stack = Stack::start(
        "redirected-rollback-api",
        RuleOpts {
            hold: "30s",
            ..RuleOpts::default()
        },
    )
    .await;
    let id = stack.start_at_first_step("v1").await;
    let elsewhere = HookReceiver::start().await.expect("receiver");
    stack
        .receiver
        .redirect(Some((307, &elsewhere.url("/rollback"))))
        .expect("redirect");
    let (status, body) = stack
        .daemon
        .post(&format!("/api/v1/rollouts/{id}/abort"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    let r = stack
        .daemon
        .wait_phase(&id, &["failed", "rolled_back"], Duration::from_secs(30))
        .await;
    assert_eq!(r["phase"], "failed", "{r}");
    let reason = r["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("rollback hook failed") && reason.contains("HTTP 307 redirect"),
        "{reason}"
    );
    let (_, history) = stack
        .daemon
        .get(&format!("/api/v1/rollouts/{id}/history"))
        .await;
    let rollbacks: Vec<_> = history["hook_deliveries"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|d| d["hook"] == "rollback")
        .collect();
    assert!(
        !rollbacks.is_empty() && rollbacks.iter().all(|d| d["outcome"] == "failed"),
        "{history}"
    );

    // Re-delivered until it arrives: once the hook stops redirecting, the rollback lands there.
    stack.receiver.redirect(None).expect("answer normally");
    let r = stack
        .daemon
        .wait_phase(&id, &["rolled_back"], Duration::from_secs(40))
        .await;
    assert_eq!(r["weight"], 0, "{r}");
    assert_eq!(
        calls_to(&stack.receiver.calls(), "/rollback").len(),
        1,
        "delivered to the hook's own URL"
    );
    assert_eq!(elsewhere.attempts(), 0, "the other origin got nothing");
}
