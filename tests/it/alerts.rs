//! Alertmanager both ways and health probes, against the real stack: a real Prometheus scraping
//! the simulated service, a real Alertmanager, and `canaryd serve` as a child process.

use crate::common;

use std::time::{Duration, Instant};

use canaryd::demo::alertmanager::{AlertmanagerOptions, AlertmanagerProcess};
use canaryd::demo::prometheus::PrometheusOptions;
use canaryd::demo::receiver::HookReceiver;
use canaryd::demo::service::Track;
use common::alerting::{
    AlertedRollout, alerted_rollout, alerts_of, service_and_prometheus, write_rule,
};
use common::{Daemon, RuleOpts, calls_to, rule_yaml};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_raises_canary_rollback_in_alertmanager_and_resolves_it_after_keep_firing_for() {
    let name = "am-out-api";
    // A slow rollback hook keeps the rollout in rolling_back long enough to see the alert fire.
    let slow_rollback = |receiver: &HookReceiver| {
        rule_yaml(name, receiver, &RuleOpts::default()).replace(
            &format!(
                r#"rollback: {{ url: "{}", timeout: 2s"#,
                receiver.url("/rollback")
            ),
            &format!(
                r#"rollback: {{ url: "{}", timeout: 10s"#,
                receiver.url("/rollback")
            ),
        )
    };
    // Every part bound by name, so that each lives to the end of the test.
    let AlertedRollout {
        dir: _dir,
        service,
        prometheus: _prometheus,
        am,
        receiver,
        id,
        daemon,
    } = alerted_rollout(
        name,
        "v2.0.0",
        AlertmanagerOptions::default(),
        slow_rollback,
        &["--alertmanager-rollback-keep-firing-for", "3s"],
    )
    .await;
    // Only the rollback hook is slow: a slow set_weight (timeout 2 s) would fail the step
    // change and roll back for the hook instead of the metric.
    receiver.set_path_delay("/rollback", Duration::from_secs(3));
    service.update(Track::Canary, |p| p.error_rate = 0.2);

    let deadline = Instant::now() + Duration::from_secs(30);
    let alert = loop {
        let found = alerts_of(&am, &id).await;
        if let Some(a) = found
            .into_iter()
            .find(|a| a["labels"]["alertname"] == "CanaryRollback")
        {
            break a;
        }
        assert!(
            Instant::now() < deadline,
            "no CanaryRollback in Alertmanager; rollout: {}\nlog:\n{}",
            daemon.rollout(&id).await,
            common::tail(&daemon.log_text(), 30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let state = daemon.rollout(&id).await;
    let labels = &alert["labels"];
    assert_eq!(labels["severity"], "critical");
    assert_eq!(labels["rule"], name);
    assert_eq!(labels["version"], "v2.0.0");
    assert_eq!(
        labels["metric"], "error_rate",
        "rolled back for: {}",
        state["reason"]
    );
    assert_eq!(
        labels["step"],
        state["step"].as_u64().expect("step").to_string()
    );
    let value: f64 = alert["annotations"]["value"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .expect("value annotation");
    assert!(value > 0.05 && value <= 0.25, "canary error ratio {value}");
    assert_eq!(alert["annotations"]["threshold"], "0.05");
    assert!(
        alert["generatorURL"]
            .as_str()
            .is_some_and(|u| u.ends_with(&format!("/api/v1/rollouts/{id}"))),
        "{alert}"
    );
    assert!(
        alert["annotations"]["summary"]
            .as_str()
            .is_some_and(|s| s.contains("error_rate")),
        "{alert}"
    );

    receiver.set_path_delay("/rollback", Duration::ZERO);
    daemon
        .wait_phase(&id, &["rolled_back"], Duration::from_secs(20))
        .await;
    // Still firing once the rollback is done, then resolved when keep_firing_for is up.
    assert!(
        alerts_of(&am, &id)
            .await
            .iter()
            .any(|a| a["labels"]["alertname"] == "CanaryRollback"),
        "CanaryRollback resolved with the rollback"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while !alerts_of(&am, &id).await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "alerts still active after the rollback ended: {:?}",
            alerts_of(&am, &id).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_alert_routed_through_alertmanager_rolls_the_rollout_back() {
    let name = "am-in-api";
    let dir = tempfile::tempdir().expect("tempdir");
    // Alertmanager learns canaryd's address once canaryd has bound its port (see
    // `AlertmanagerProcess::set_webhook_urls`).
    let mut am = AlertmanagerProcess::start(AlertmanagerOptions::default())
        .await
        .expect("alertmanager");
    let alert_rules = dir.path().join("alerts.yml");
    std::fs::write(
        &alert_rules,
        format!(
            r#"groups:
  - name: canary
    rules:
      - alert: CanaryErrors
        expr: |
          sum(rate(http_requests_total{{service="{name}", track="canary", code=~"5.."}}[4s]))
            / sum(rate(http_requests_total{{service="{name}", track="canary"}}[4s])) > 0.1
        labels: {{ severity: critical, service: {name} }}
"#
        ),
    )
    .expect("alert rules");
    let (service, prometheus) = service_and_prometheus(
        name,
        PrometheusOptions {
            rule_files: vec![alert_rules],
            alertmanagers: vec![am.address()],
            ..PrometheusOptions::default()
        },
    )
    .await;
    let receiver = HookReceiver::start().await.expect("receiver");
    // Thresholds far away, so only the alert can roll back.
    let text = rule_yaml(
        name,
        &receiver,
        // Held long enough that only the alert can end the rollout (it promotes otherwise).
        &RuleOpts {
            hold: "30s",
            ..RuleOpts::default()
        },
    )
    .replace("rollback_above: 0.05", "rollback_above: 0.9")
    .replace("warn_above: 0.01", "warn_above: 0.8")
    .replace("max_ratio: 2.0", "max_ratio: 1000")
        + &format!(
            "alerts:\n  rollback_on: ['alertname=\"CanaryErrors\", service=\"{name}\"']\n  pause_on: ['alertname=\"Maintenance\"']\n"
        );
    let rule = write_rule(dir.path(), name, &text);
    let daemon = Daemon::start(&prometheus.url(), &[rule], dir.path(), &[]).await;
    am.set_webhook_urls(vec![format!("{}/api/v1/alertmanager", daemon.url)])
        .await
        .expect("point Alertmanager at canaryd");
    let id = daemon.start_rollout(name, "v3.0.0").await;
    daemon
        .wait_phase(&id, &["progressing"], Duration::from_secs(10))
        .await;
    service.update(Track::Canary, |p| p.error_rate = 0.3);
    let r = daemon
        .wait_phase(&id, &["rolled_back"], Duration::from_secs(60))
        .await;
    let reason = r["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("alert fired: CanaryErrors"),
        "rolled back for another reason: {reason}"
    );
    assert!(reason.contains(&format!("service=\"{name}\"")), "{reason}");
    assert!(
        receiver
            .calls()
            .iter()
            .any(|c| c.path == "/rollback" && c.body["reason"].as_str() == Some(reason)),
        "rollback hook not called with the alert as reason"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_needs_the_api_token_and_a_version_4_payload() {
    let name = "am-token-api";
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = HookReceiver::start().await.expect("receiver");
    let rule = write_rule(
        dir.path(),
        name,
        &rule_yaml(name, &receiver, &RuleOpts::default()),
    );
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "0123456789abcdef0123\n").expect("token");
    // No Prometheus is needed to answer the webhook.
    let mut daemon = Daemon::start(
        "http://127.0.0.1:9",
        &[rule],
        dir.path(),
        &["--api-token-file", token_file.to_str().expect("utf-8")],
    )
    .await;
    let payload = serde_json::json!({"version": "4", "status": "firing", "alerts": [
        {"status": "firing", "labels": {"alertname": "APIDown"}}]});
    let (status, _) = daemon
        .post("/api/v1/alertmanager", Some(payload.clone()))
        .await;
    assert_eq!(status, 401);
    daemon.token = Some("0123456789abcdef0123".into());
    let (status, body) = daemon.post("/api/v1/alertmanager", Some(payload)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rolled_back"], serde_json::json!([]));
    let (status, body) = daemon
        .post(
            "/api/v1/alertmanager",
            Some(serde_json::json!({"version": "3", "alerts": []})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_health_endpoint_rolls_the_rollout_back() {
    let name = "health-api";
    let (service, prometheus) = service_and_prometheus(name, PrometheusOptions::default()).await;
    let receiver = HookReceiver::start().await.expect("receiver");
    let dir = tempfile::tempdir().expect("tempdir");
    let health_url = format!("http://{}/canary/health/ready", service.addr());
    let text = rule_yaml(name, &receiver, &RuleOpts::default())
        + &format!("health:\n  - {{ url: \"{health_url}\", interval: 300ms, failure_limit: 3 }}\n");
    let rule = write_rule(dir.path(), name, &text);
    let daemon = Daemon::start(&prometheus.url(), &[rule], dir.path(), &[]).await;
    let id = daemon.start_rollout(name, "v4.0.0").await;
    daemon
        .wait_phase(&id, &["progressing"], Duration::from_secs(10))
        .await;
    // Healthy probes for a while: a passing endpoint must not roll back.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !daemon.rollout(&id).await["rollback_decided"]
            .as_bool()
            .unwrap_or(true)
    );
    service.update(Track::Canary, |p| p.healthy = false);
    let r = daemon
        .wait_phase(&id, &["rolled_back"], Duration::from_secs(20))
        .await;
    let reason = r["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with(&format!("health check {health_url} failed: HTTP 503")),
        "{reason}"
    );
    assert!(reason.contains("3 times in a row"), "{reason}");
    let calls = receiver.calls();
    assert_eq!(
        calls_to(&calls, "/rollback").len(),
        1,
        "rollback hook not called"
    );
    assert!(calls_to(&calls, "/promote").is_empty());
}
