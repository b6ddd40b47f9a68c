//! One event, one line: values from users and peers (an abort reason, an alert's labels) reach
//! the text log, and a newline in one must not start a line that reads like canaryd's own.

use crate::common;

use std::time::Duration;

use common::Daemon;
use serde_json::json;

/// What an attacker would like the log to say, after a newline.
const FORGED: &str = "2026-01-01T00:00:00.000000Z  INFO canaryd: forged";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newline_in_a_reason_or_an_alert_label_cannot_forge_a_log_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rule = dir.path().join("forge.yaml");
    std::fs::write(
        &rule,
        "name: forge\nselector: { canary: 'track=\"canary\"', baseline: 'track=\"baseline\"' }\n\
         steps: [{ weight: 5, hold: 1h }, { weight: 100 }]\n\
         analysis: { interval: 1s, warmup: 0s, nodata_limit: 100 }\n\
         metrics:\n  - { name: up, query: 'sum(up{ {{selector}} })', rollback_below: 1 }\n\
         alerts:\n  rollback_on: ['service=\"forge\"']\n",
    )
    .expect("rule");
    // Prometheus on a closed port: nothing here needs data, only the log.
    let port = canaryd::demo::free_loopback_port().expect("port");
    let d = Daemon::start(
        &format!("http://127.0.0.1:{port}"),
        &[rule],
        dir.path(),
        &[],
    )
    .await;

    let aborted = d.start_rollout("forge", "v1").await;
    let reason = format!("bad smell\n{FORGED} promotion by abort reason\r");
    let (status, body) = d
        .post(
            &format!("/api/v1/rollouts/{aborted}/abort"),
            Some(json!({ "reason": reason })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    d.wait_phase(&aborted, &["rolled_back"], Duration::from_secs(20))
        .await;

    let alerted = d.start_rollout("forge", "v2").await;
    let alertname = format!("APIDown\n{FORGED} promotion by alert label");
    let payload = json!({"version": "4", "status": "firing", "alerts": [
        {"status": "firing", "labels": {"alertname": alertname, "service": "forge"}}]});
    let (status, body) = d.post("/api/v1/alertmanager", Some(payload)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rolled_back"], json!([alerted]), "{body}");
    d.wait_phase(&alerted, &["rolled_back"], Duration::from_secs(20))
        .await;

    let log = d.log_text();
    // Both values reached the log, escaped on their own line...
    for what in ["by abort reason", "by alert label"] {
        assert!(
            log.lines()
                .any(|l| l.contains(&format!("\\n{FORGED} promotion {what}"))),
            "{what} not logged escaped:\n{log}"
        );
    }
    // ...and no line begins with what followed the newline.
    let forged: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("2026-01-01"))
        .collect();
    assert!(forged.is_empty(), "forged log lines: {forged:#?}");
    assert!(!log.contains('\r'), "a carriage return reached the log");
}

/// Per-tick verdicts are DEBUG: at 10,000 rollouts they were four INFO lines per rollout per
/// tick (480,000 lines in ten minutes). The decisions stay at INFO.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tick_verdicts_stay_out_of_the_info_log_while_decisions_are_in_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rule = dir.path().join("quiet.yaml");
    std::fs::write(
        &rule,
        "name: quiet\nselector: { canary: 'track=\"canary\"', baseline: 'track=\"baseline\"' }\n\
         steps: [{ weight: 5, hold: 1h }, { weight: 100 }]\n\
         analysis: { interval: 1s, warmup: 0s, nodata_limit: 100 }\n\
         metrics:\n  - { name: up, query: 'sum(up{ {{selector}} })', rollback_below: 1 }\n",
    )
    .expect("rule");
    // Prometheus on a closed port: every tick judges `error`, which the log used to repeat.
    let port = canaryd::demo::free_loopback_port().expect("port");
    let d = Daemon::start(
        &format!("http://127.0.0.1:{port}"),
        &[rule],
        dir.path(),
        &[],
    )
    .await;
    d.start_rollout("quiet", "v1").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let m = d.metrics().await;
        let verdicts: f64 = m
            .lines()
            .filter(|l| l.starts_with("canaryd_check_verdicts_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if verdicts >= 3.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no three ticks judged:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = d.log_text();
    assert!(log.contains("rollout.start"), "{log}");
    assert!(
        !log.contains("check.verdict"),
        "a tick's verdict reached the INFO log:\n{log}"
    );
}
