//! Alertmanager's webhook at the sizes a real Alertmanager sends: a group of hundreds of alerts
//! rolls a rollout back, and only bodies past 8 MiB are refused, with 413.

use crate::common;

use std::time::Duration;

use canaryd::demo::alertmanager::{AlertmanagerOptions, AlertmanagerProcess};
use canaryd::demo::prometheus::PrometheusOptions;
use canaryd::demo::receiver::HookReceiver;
use common::alerting::{post_reading_early, service_and_prometheus, write_rule};
use common::{Daemon, RuleOpts, rule_yaml};
use serde_json::Value;

/// Alertmanager posts whole groups; a big incident is hundreds of alerts in one webhook, far
/// past the 64 KiB other routes allow. A real Alertmanager holding 400 firing alerts (posted to
/// it as Prometheus would) notifies canaryd, and the matching group rolls the rollout back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_alertmanager_group_of_hundreds_of_alerts_rolls_the_rollout_back() {
    let name = "am-big-api";
    let dir = tempfile::tempdir().expect("tempdir");
    // Alertmanager learns canaryd's address once canaryd has bound its port (see
    // `AlertmanagerProcess::set_webhook_urls`).
    let mut am = AlertmanagerProcess::start(AlertmanagerOptions::default())
        .await
        .expect("alertmanager");
    let (_service, prometheus) = service_and_prometheus(name, PrometheusOptions::default()).await;
    let receiver = HookReceiver::start().await.expect("receiver");
    // Held long enough that only the alert can end the rollout (it promotes otherwise).
    let opts = RuleOpts {
        hold: "30s",
        ..RuleOpts::default()
    };
    let text = rule_yaml(name, &receiver, &opts)
        + &format!("alerts:\n  rollback_on: ['alertname=\"InstanceDown\", service=\"{name}\"']\n");
    let rule = write_rule(dir.path(), name, &text);
    let daemon = Daemon::start(&prometheus.url(), &[rule], dir.path(), &[]).await;
    am.set_webhook_urls(vec![format!("{}/api/v1/alertmanager", daemon.url)])
        .await
        .expect("point Alertmanager at canaryd");
    let id = daemon.start_rollout(name, "v9.0.0").await;
    daemon
        .wait_phase(&id, &["progressing"], Duration::from_secs(10))
        .await;

    let description = "Instance has not answered its scrape for 1 minute. ".repeat(12);
    let alerts: Vec<Value> = (0..400)
        .map(|i| {
            serde_json::json!({
                "labels": {"alertname": "InstanceDown", "service": name, "severity": "critical",
                           "instance": format!("10.0.{}.{}:8080", i / 250, i % 250), "job": "checkout"},
                "annotations": {"summary": format!("instance {i} down"), "description": description},
                "generatorURL": format!("http://prometheus.example:9090/graph?g0.expr=up%7Binstance%3D%22{i}%22%7D"),
            })
        })
        .collect();
    let size = serde_json::to_vec(&alerts).expect("json").len();
    assert!(
        size > 4 * 64 * 1024,
        "the group must be far past 64 KiB: {size} bytes"
    );
    let posted = reqwest::Client::new()
        .post(format!("{}/api/v2/alerts", am.url()))
        .json(&alerts)
        .send()
        .await
        .expect("post to alertmanager");
    assert!(posted.status().is_success(), "{}", posted.status());

    let r = daemon
        .wait_phase(&id, &["rolled_back"], Duration::from_secs(30))
        .await;
    let reason = r["reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("alert fired: InstanceDown"), "{reason}");
    assert!(
        receiver.calls().iter().any(|c| c.path == "/rollback"),
        "rollback hook not called"
    );
}

/// The webhook route takes several MiB; past its 8 MiB limit it answers 413 (not 400), and the
/// other routes keep their 64 KiB limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_takes_megabytes_and_answers_413_beyond_its_limit() {
    let name = "am-limit-api";
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = HookReceiver::start().await.expect("receiver");
    let rule = write_rule(
        dir.path(),
        name,
        &rule_yaml(name, &receiver, &RuleOpts::default()),
    );
    let daemon = Daemon::start("http://127.0.0.1:9", &[rule], dir.path(), &[]).await;
    let webhook = |alerts: usize| {
        let alert = serde_json::json!({"status": "firing", "labels": {"alertname": "Noise", "pad": "x".repeat(1000)}});
        serde_json::json!({"version": "4", "status": "firing", "alerts": vec![alert; alerts]})
    };
    // About 3 MiB: accepted.
    let (status, body) = daemon
        .post("/api/v1/alertmanager", Some(webhook(3000)))
        .await;
    assert_eq!(status, 200, "{body}");
    // 10 MiB: too large, and said so.
    let answer = post_reading_early(&daemon.url, "/api/v1/alertmanager", 10 * 1024 * 1024).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("larger than the 8388608 bytes"), "{answer}");
    let (status, body) = daemon
        .post(
            "/api/v1/rollouts",
            Some(serde_json::json!({"rule": name, "version": "x".repeat(100 * 1024)})),
        )
        .await;
    assert_eq!(status, 413, "{body}");
}
