//! Alertmanager both ways and health probes, against the real stack: a real Prometheus scraping
//! the simulated service, a real Alertmanager, and `canaryd serve` as a child process.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use canaryd::demo::alertmanager::{AlertmanagerOptions, AlertmanagerProcess};
use canaryd::demo::prometheus::{PrometheusOptions, PrometheusProcess};
use canaryd::demo::receiver::HookReceiver;
use canaryd::demo::service::{DemoService, Track};
use common::{Daemon, RuleOpts, rule_yaml};
use serde_json::Value;

/// The service and its Prometheus, waiting until the canary has rates.
async fn service_and_prometheus(
    name: &str,
    opts: PrometheusOptions,
) -> (DemoService, PrometheusProcess) {
    let service = DemoService::start(name, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("demo service");
    let prometheus = PrometheusProcess::start(PrometheusOptions {
        targets: vec![service.addr().to_string()],
        ..opts
    })
    .await
    .expect("prometheus");
    prometheus
        .wait_for_series(
            &format!(r#"sum(rate(http_requests_total{{service="{name}", track="canary"}}[4s]))"#),
            Duration::from_secs(30),
        )
        .await
        .expect("series in prometheus");
    (service, prometheus)
}

fn write_rule(dir: &std::path::Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(format!("{name}.yaml"));
    std::fs::write(&p, text).expect("write rule");
    p
}

/// Alerts Alertmanager holds for a rollout (resolved ones are not listed by API v2).
async fn alerts_of(am: &AlertmanagerProcess, rollout: &str) -> Vec<Value> {
    let url = format!("{}/api/v2/alerts", am.url());
    let body: Value = match reqwest::get(&url).await {
        Ok(r) => r.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    };
    body.as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|a| a["labels"]["rollout"] == rollout)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_raises_canary_rollback_in_alertmanager_and_resolves_it_after_keep_firing_for() {
    let name = "am-out-api";
    let (service, prometheus) = service_and_prometheus(name, PrometheusOptions::default()).await;
    let am = AlertmanagerProcess::start(AlertmanagerOptions::default())
        .await
        .expect("alertmanager");
    let receiver = HookReceiver::start().await.expect("receiver");
    let dir = tempfile::tempdir().expect("tempdir");
    // A slow rollback hook keeps the rollout in rolling_back long enough to see the alert fire.
    let text = rule_yaml(name, &receiver, &RuleOpts::default()).replace(
        &format!(
            r#"rollback: {{ url: "{}", timeout: 2s"#,
            receiver.url("/rollback")
        ),
        &format!(
            r#"rollback: {{ url: "{}", timeout: 10s"#,
            receiver.url("/rollback")
        ),
    );
    let rule = write_rule(dir.path(), name, &text);
    let daemon = Daemon::start(
        &prometheus.url(),
        &[rule],
        dir.path(),
        &[
            "--alertmanager-url",
            &am.url(),
            "--alertmanager-resend-interval",
            "1s",
            "--alertmanager-rollback-keep-firing-for",
            "3s",
        ],
    )
    .await;
    let id = daemon.start_rollout(name, "v2.0.0").await;
    daemon
        .wait_phase(&id, &["progressing"], Duration::from_secs(10))
        .await;
    receiver.set_delay(Duration::from_secs(3));
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
    assert_eq!(labels["metric"], "error_rate");
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

    receiver.set_delay(Duration::ZERO);
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
    let port = canaryd::demo::free_loopback_port().expect("port");
    let am = AlertmanagerProcess::start(AlertmanagerOptions {
        webhook_urls: vec![format!("http://127.0.0.1:{port}/api/v1/alertmanager")],
        ..AlertmanagerOptions::default()
    })
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
    let text = rule_yaml(name, &receiver, &RuleOpts::default())
        .replace("rollback_above: 0.05", "rollback_above: 0.9")
        .replace("warn_above: 0.01", "warn_above: 0.8")
        .replace("max_ratio: 2.0", "max_ratio: 1000")
        + &format!(
            "alerts:\n  rollback_on: ['alertname=\"CanaryErrors\", service=\"{name}\"']\n  pause_on: ['alertname=\"Maintenance\"']\n"
        );
    let rule = write_rule(dir.path(), name, &text);
    let daemon = Daemon::start_on(port, &prometheus.url(), &[rule], dir.path(), &[]).await;
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
}

/// Polls Alertmanager until `pred` holds for the rollout's active alerts.
async fn wait_alerts(
    am: &AlertmanagerProcess,
    rollout: &str,
    timeout: Duration,
    pred: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let found = alerts_of(am, rollout).await;
        if pred(&found) {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "Alertmanager never held the expected alerts for {rollout}; it holds {found:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn named<'a>(alerts: &'a [Value], name: &str) -> Option<&'a Value> {
    alerts.iter().find(|a| a["labels"]["alertname"] == name)
}

/// A fast rollback hook used to resolve `CanaryRollback` before Alertmanager's `group_wait`
/// ended, so nobody was paged. Now the alert stays active after `rolled_back` (default 1 h) and
/// Alertmanager notifies its receiver (the pager) of it as firing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_rollback_still_pages_through_alertmanager() {
    let name = "am-page-api";
    let (service, prometheus) = service_and_prometheus(name, PrometheusOptions::default()).await;
    let pager = HookReceiver::start().await.expect("pager");
    let am = AlertmanagerProcess::start(AlertmanagerOptions {
        webhook_urls: vec![pager.url("/page")],
        group_wait: Duration::from_secs(2),
        ..AlertmanagerOptions::default()
    })
    .await
    .expect("alertmanager");
    let receiver = HookReceiver::start().await.expect("receiver");
    let dir = tempfile::tempdir().expect("tempdir");
    let rule = write_rule(
        dir.path(),
        name,
        &rule_yaml(name, &receiver, &RuleOpts::default()),
    );
    let daemon = Daemon::start(
        &prometheus.url(),
        &[rule],
        dir.path(),
        &[
            "--alertmanager-url",
            &am.url(),
            "--alertmanager-resend-interval",
            "1s",
        ],
    )
    .await;
    let id = daemon.start_rollout(name, "v7.0.0").await;
    daemon
        .wait_phase(&id, &["progressing"], Duration::from_secs(10))
        .await;
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
    let (_service, prometheus) = service_and_prometheus(name, PrometheusOptions::default()).await;
    let am = AlertmanagerProcess::start(AlertmanagerOptions::default())
        .await
        .expect("alertmanager");
    let receiver = HookReceiver::start().await.expect("receiver");
    let dir = tempfile::tempdir().expect("tempdir");
    let rule = write_rule(
        dir.path(),
        name,
        &rule_yaml(
            name,
            &receiver,
            &RuleOpts {
                hold: "30s",
                ..RuleOpts::default()
            },
        ),
    );
    let daemon = Daemon::start(
        &prometheus.url(),
        &[rule],
        dir.path(),
        &[
            "--alertmanager-url",
            &am.url(),
            "--alertmanager-resend-interval",
            "1s",
        ],
    )
    .await;
    let id = daemon.start_rollout(name, "v8.0.0").await;
    daemon
        .wait_phase(&id, &["progressing"], Duration::from_secs(10))
        .await;
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

/// Alertmanager posts whole groups; a big incident is hundreds of alerts in one webhook, far
/// past the 64 KiB other routes allow. A real Alertmanager holding 400 firing alerts (posted to
/// it as Prometheus would) notifies canaryd, and the matching group rolls the rollout back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_alertmanager_group_of_hundreds_of_alerts_rolls_the_rollout_back() {
    let name = "am-big-api";
    let dir = tempfile::tempdir().expect("tempdir");
    let port = canaryd::demo::free_loopback_port().expect("port");
    let am = AlertmanagerProcess::start(AlertmanagerOptions {
        webhook_urls: vec![format!("http://127.0.0.1:{port}/api/v1/alertmanager")],
        ..AlertmanagerOptions::default()
    })
    .await
    .expect("alertmanager");
    let (_service, prometheus) = service_and_prometheus(name, PrometheusOptions::default()).await;
    let receiver = HookReceiver::start().await.expect("receiver");
    let text = rule_yaml(name, &receiver, &RuleOpts::default())
        + &format!("alerts:\n  rollback_on: ['alertname=\"InstanceDown\", service=\"{name}\"']\n");
    let rule = write_rule(dir.path(), name, &text);
    let daemon = Daemon::start_on(port, &prometheus.url(), &[rule], dir.path(), &[]).await;
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

/// Posts a `length`-byte JSON-ish body over raw HTTP while reading the answer concurrently, as
/// curl or Alertmanager would: a server that refuses the body mid-way answers and closes, which
/// makes a client that only reads after writing see a broken pipe instead of the answer.
async fn post_reading_early(base: &str, path: &str, length: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://").to_string();
    let stream = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let (mut rd, mut wr) = stream.into_split();
    let reader = tokio::spawn(async move {
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        // Until the connection ends, or errs after the answer arrived.
        while let Ok(n) = rd.read(&mut buf).await {
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&answer).into_owned()
    });
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
    );
    let chunk = vec![b' '; 64 * 1024];
    let mut sent = 0;
    if wr.write_all(head.as_bytes()).await.is_ok() {
        while sent < length {
            let n = chunk.len().min(length - sent);
            if wr.write_all(&chunk[..n]).await.is_err() {
                break;
            }
            sent += n;
        }
    }
    tokio::time::timeout(Duration::from_secs(20), reader)
        .await
        .expect("answer within 20 s")
        .expect("reader")
}
