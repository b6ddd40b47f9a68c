//! On-call hears of every automatic rollback, against a real Prometheus and a real
//! Alertmanager: `CanaryRollback` outlives a fast rollback long enough to page, and a rollback
//! that cannot be delivered is its own critical alert until it is.

use crate::common;

use std::time::Duration;

use canaryd::demo::alertmanager::AlertmanagerOptions;
use canaryd::demo::receiver::HookReceiver;
use canaryd::demo::service::Track;
use common::alerting::{AlertedRollout, alerted_rollout, alerts_of, named, wait_alerts};
use common::{RuleOpts, rule_yaml};

/// A fast rollback hook used to resolve `CanaryRollback` before Alertmanager's `group_wait`
/// ended, so nobody was paged. Now the alert stays active after `rolled_back` (default 1 h) and
/// Alertmanager notifies its receiver (the pager) of it as firing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_rollback_still_pages_through_alertmanager() {
    let name = "am-page-api";
    let pager = HookReceiver::start().await.expect("pager");
    let am = AlertmanagerOptions {
        webhook_urls: vec![pager.url("/page")],
        group_wait: Duration::from_secs(2),
        ..AlertmanagerOptions::default()
    };
    let rule = |receiver: &HookReceiver| rule_yaml(name, receiver, &RuleOpts::default());
    // Every part bound by name, so that each lives to the end of the test.
    let AlertedRollout {
        dir: _dir,
        service,
        prometheus: _prometheus,
        am,
        receiver: _receiver,
        id,
        daemon,
    } = alerted_rollout(name, "v7.0.0", am, rule, &[]).await;
    service.update(Track::Canary, |p| p.error_rate = 0.2);
    daemon
        .wait_phase(&id, &["rolled_back"], Duration::from_secs(30))
        .await;

    let alerts = wait_alerts(&am, &id, Duration::from_secs(10), |a| {
        named(a, "CanaryRollback").is_some()
    })
    .await;
    let alert = named(&alerts, "CanaryRollback").expect("listed");
    assert_eq!(alert["status"]["state"], "active", "{alert}");
    assert_eq!(alert["labels"]["severity"], "critical");
    assert!(named(&alerts, "CanaryRollbackUndelivered").is_none());
    // The pager hears of it, as firing, after group_wait.
    let paged = pager
        .wait_for(
            |calls| {
                calls.iter().any(|c| {
                    c.body["alerts"].as_array().is_some_and(|alerts| {
                        alerts.iter().any(|a| {
                            a["labels"]["alertname"] == "CanaryRollback"
                                && a["labels"]["rollout"] == id.as_str()
                                && a["status"] == "firing"
                        })
                    })
                })
            },
            Duration::from_secs(15),
        )
        .await;
    assert!(
        paged,
        "no firing CanaryRollback reached the pager: {:#?}",
        pager.calls()
    );
    // Still active after re-sends: it outlives the rollback, not just the next update.
    assert!(
        named(&alerts_of(&am, &id).await, "CanaryRollback").is_some(),
        "CanaryRollback resolved after the page"
    );
}

/// A rollback whose hook cannot be delivered is its own critical alert while it is owed, and
/// that alert resolves once the rollback arrives (while `CanaryRollback` keeps firing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undelivered_rollback_is_a_critical_alert_until_delivered() {
    let name = "am-owed-api";
    let rule = |receiver: &HookReceiver| {
        rule_yaml(
            name,
            receiver,
            &RuleOpts {
                hold: "30s",
                ..RuleOpts::default()
            },
        )
    };
    // Every part bound by name, so that each lives to the end of the test.
    let AlertedRollout {
        dir: _dir,
        service: _service,
        prometheus: _prometheus,
        am,
        receiver,
        id,
        daemon,
    } = alerted_rollout(name, "v8.0.0", AlertmanagerOptions::default(), rule, &[]).await;
    receiver.fail_next(1000);
    let (status, body) = daemon
        .post(&format!("/api/v1/rollouts/{id}/abort"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    daemon
        .wait_phase(&id, &["failed"], Duration::from_secs(30))
        .await;
    let alerts = wait_alerts(&am, &id, Duration::from_secs(10), |a| {
        named(a, "CanaryRollbackUndelivered").is_some()
    })
    .await;
    let owed = named(&alerts, "CanaryRollbackUndelivered").expect("listed");
    assert_eq!(owed["labels"]["severity"], "critical", "{owed}");
    assert!(
        owed["annotations"]["description"]
            .as_str()
            .is_some_and(|d| d.contains("rollback hook failed")),
        "{owed}"
    );
    assert!(named(&alerts, "CanaryRollback").is_some(), "{alerts:#?}");

    receiver.fail_next(0);
    daemon
        .wait_phase(&id, &["rolled_back"], Duration::from_secs(60))
        .await;
    let alerts = wait_alerts(&am, &id, Duration::from_secs(10), |a| {
        named(a, "CanaryRollbackUndelivered").is_none()
    })
    .await;
    assert!(
        named(&alerts, "CanaryRollback").is_some(),
        "the rollback alert outlives the delivery: {alerts:#?}"
    );
}
