//! Alertmanager in tests: the service and its Prometheus, rule files, what Alertmanager holds
//! for a rollout, and a raw HTTP post for bodies a server refuses mid-way.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use canaryd::demo::alertmanager::{AlertmanagerOptions, AlertmanagerProcess};
use canaryd::demo::prometheus::{PrometheusOptions, PrometheusProcess};
use canaryd::demo::receiver::HookReceiver;
use canaryd::demo::service::DemoService;
use serde_json::Value;

use super::Daemon;

/// A rollout progressing while canaryd sends its alerts to a real Alertmanager (re-sent every
/// second, so a test sees each change quickly). Fields drop in order: canaryd stops first and
/// its folder goes last, as when they were locals of the test.
pub struct AlertedRollout {
    pub daemon: Daemon,
    /// The rollout, `progressing`.
    pub id: String,
    pub receiver: HookReceiver,
    pub am: AlertmanagerProcess,
    pub prometheus: PrometheusProcess,
    pub service: DemoService,
    pub dir: tempfile::TempDir,
}

/// Starts the service and its Prometheus, Alertmanager with `am`, the hook receiver, and canaryd
/// serving the rule `name` (its text written by `rule` for the receiver) with `args` after the
/// Alertmanager flags; then a rollout of `version`, and waits until it is `progressing`.
pub async fn alerted_rollout(
    name: &str,
    version: &str,
    am: AlertmanagerOptions,
    rule: impl FnOnce(&HookReceiver) -> String,
    args: &[&str],
) -> AlertedRollout {
    let (service, prometheus) = service_and_prometheus(name, PrometheusOptions::default()).await;
    let am = AlertmanagerProcess::start(am).await.expect("alertmanager");
    let receiver = HookReceiver::start().await.expect("receiver");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_rule(dir.path(), name, &rule(&receiver));
    let am_url = am.url();
    let mut all = vec![
        "--alertmanager-url",
        am_url.as_str(),
        "--alertmanager-resend-interval",
        "1s",
    ];
    all.extend_from_slice(args);
    let daemon = Daemon::start(&prometheus.url(), &[path], dir.path(), &all).await;
    let id = daemon.start_rollout(name, version).await;
    daemon
        .wait_phase(&id, &["progressing"], Duration::from_secs(10))
        .await;
    AlertedRollout {
        daemon,
        id,
        receiver,
        am,
        prometheus,
        service,
        dir,
    }
}

/// The service and its Prometheus, waiting until the canary has rates.
pub async fn service_and_prometheus(
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

pub fn write_rule(dir: &std::path::Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(format!("{name}.yaml"));
    std::fs::write(&p, text).expect("write rule");
    p
}

/// Alerts Alertmanager holds for a rollout (resolved ones are not listed by API v2).
pub async fn alerts_of(am: &AlertmanagerProcess, rollout: &str) -> Vec<Value> {
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

/// Polls Alertmanager until `pred` holds for the rollout's active alerts.
pub async fn wait_alerts(
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

pub fn named<'a>(alerts: &'a [Value], name: &str) -> Option<&'a Value> {
    alerts.iter().find(|a| a["labels"]["alertname"] == name)
}

/// Posts a `length`-byte JSON-ish body over raw HTTP while reading the answer concurrently, as
/// curl or Alertmanager would: a server that refuses the body mid-way answers and closes, which
/// makes a client that only reads after writing see a broken pipe instead of the answer.
pub async fn post_reading_early(base: &str, path: &str, length: usize) -> String {
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
