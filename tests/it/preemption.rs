//! Control preempts analysis: against a real Prometheus that the test freezes (SIGSTOP) while a
//! tick's query is waiting in its socket, an abort, a pause, an Alertmanager webhook matching
//! `rollback_on` and a health probe that reaches its `failure_limit` are each decided, saved and
//! (for rollbacks) delivered to the hook within 1 s. A tick that cannot finish ends at its own
//! deadline as an error tick, so a frozen Prometheus pauses the rollout for no data quickly.
//!
//! Each test prints the latency it measured (`cargo test --test it preemption:: -- --nocapture`).

use crate::common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use canaryd::demo::prometheus::PrometheusProcess;
use canaryd::demo::receiver::ReceivedCall;
use common::{RuleOpts, Stack, calls_to, weights};
use serde_json::{Value, json};

/// What a command may take, from the request to its effect, whatever Prometheus does.
const BOUND: Duration = Duration::from_secs(1);

/// The common stack with a rule that holds its first step for ten minutes, so nothing but the
/// command under test moves the rollout.
struct Setup(Stack);

impl std::ops::Deref for Setup {
    type Target = Stack;
    fn deref(&self) -> &Stack {
        &self.0
    }
}

impl Setup {
    async fn start(name: &str, extra_rule: &str) -> Setup {
        let opts = RuleOpts {
            hold: "10m",
            ..RuleOpts::default()
        };
        Setup(Stack::start_with(name, opts, extra_rule, &[]).await)
    }

    /// Starts a rollout and returns once a tick with real data from Prometheus was judged.
    async fn rollout_with_a_judged_tick(&self) -> String {
        let id = self.daemon.start_rollout(&self.rule, "v2").await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = self.daemon.rollout(&id).await;
            let judged = r["weight"] == 5
                && r["checks"]
                    .as_array()
                    .is_some_and(|cs| !cs.is_empty() && cs.iter().all(|c| c["verdict"] == "pass"));
            if judged {
                return id;
            }
            assert!(Instant::now() < deadline, "no healthy judged tick: {r}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Freezes Prometheus and returns once one of canaryd's queries waits, unread, in its
    /// socket: from then on a tick is in flight and cannot finish.
    async fn freeze_prometheus_mid_tick(&self) {
        signal(prometheus_pid(&self.prometheus), "-STOP");
        let port = port_of(&self.prometheus.url());
        let deadline = Instant::now() + Duration::from_secs(10);
        while !query_waiting(port) {
            assert!(
                Instant::now() < deadline,
                "no query reached the frozen Prometheus"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The first rollback call, waiting long enough that a slow daemon shows its latency.
    async fn rollback_call(&self) -> ReceivedCall {
        let arrived = self
            .receiver
            .wait_for(
                |calls| calls.iter().any(|c| c.path == "/rollback"),
                Duration::from_secs(40),
            )
            .await;
        assert!(
            arrived,
            "no rollback call; log:\n{}",
            self.daemon.log_text()
        );
        self.receiver
            .calls()
            .into_iter()
            .find(|c| c.path == "/rollback")
            .expect("rollback call")
    }

    fn assert_never_moved_forward(&self) {
        let calls = self.receiver.calls();
        assert_eq!(weights(&calls), vec![5]);
        assert!(calls_to(&calls, "/promote").is_empty());
    }
}

impl Drop for Setup {
    /// Thaws Prometheus so that it dies like any other child when the setup is dropped.
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-CONT", &prometheus_pid(&self.prometheus).to_string()])
            .status();
    }
}

/// The pid of the Prometheus started in `p.dir()` (its command line names its config file).
fn prometheus_pid(p: &PrometheusProcess) -> u32 {
    let config = format!("--config.file={}", p.dir().join("prometheus.yml").display());
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.split(|b| *b == 0).any(|arg| arg == config.as_bytes()))
        })
        .expect("the test's Prometheus process")
}

fn signal(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill {sig} {pid}");
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port")
}

/// An established connection to `port` on 127.0.0.1 holds bytes its server has not read.
fn query_waiting(port: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table.lines().skip(1).any(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let local_port = f
            .get(1)
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| u16::from_str_radix(p, 16).ok());
        let unread = f
            .get(4)
            .and_then(|q| q.split(':').nth(1))
            .and_then(|rx| u64::from_str_radix(rx, 16).ok());
        local_port == Some(port) && f.get(3) == Some(&"01") && unread.is_some_and(|n| n > 0)
    })
}

fn since(t0: SystemTime, at: SystemTime) -> Duration {
    at.duration_since(t0).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_reaches_the_rollback_hook_within_a_second_while_prometheus_hangs() {
    let s = Setup::start("preempt-abort", "").await;
    let id = s.rollout_with_a_judged_tick().await;
    s.freeze_prometheus_mid_tick().await;
    let t0 = SystemTime::now();
    let (status, body) = s
        .daemon
        .post(
            &format!("/api/v1/rollouts/{id}/abort"),
            Some(json!({"reason": "pager"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let call = s.rollback_call().await;
    let latency = since(t0, call.at);
    println!("abort -> rollback hook with Prometheus frozen: {latency:?}");
    assert!(latency < BOUND, "abort took {latency:?} to reach the hook");
    assert_eq!(call.body["reason"], "aborted: pager");
    let r = s
        .daemon
        .wait_phase(&id, &["rolled_back"], Duration::from_secs(5))
        .await;
    assert_eq!(r["reason"], "aborted: pager");
    s.assert_never_moved_forward();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_is_decided_and_saved_within_a_second_while_prometheus_hangs() {
    let s = Setup::start("preempt-pause", "").await;
    let id = s.rollout_with_a_judged_tick().await;
    s.freeze_prometheus_mid_tick().await;
    let t0 = Instant::now();
    let (status, body) = s
        .daemon
        .post(&format!("/api/v1/rollouts/{id}/pause"), None)
        .await;
    let latency = t0.elapsed();
    println!("pause -> phase paused with Prometheus frozen: {latency:?}");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["phase"], "paused", "{body}");
    assert!(latency < BOUND, "pause took {latency:?}");
    // Saved, not only answered: the store says so too.
    let r: Value = s.daemon.rollout(&id).await;
    assert_eq!(r["phase"], "paused", "{r}");
    assert_eq!(r["reason"], "paused by user", "{r}");
    s.assert_never_moved_forward();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_rollback_reaches_the_hook_within_a_second_while_prometheus_hangs() {
    let name = "preempt-alert";
    let s = Setup::start(
        name,
        &format!("alerts:\n  rollback_on: ['alertname=\"CanaryErrors\", service=\"{name}\"']\n"),
    )
    .await;
    let id = s.rollout_with_a_judged_tick().await;
    s.freeze_prometheus_mid_tick().await;
    let webhook = json!({"version": "4", "status": "firing", "alerts": [
        {"status": "firing", "labels": {"alertname": "CanaryErrors", "service": name}}]});
    let t0 = SystemTime::now();
    let (status, body) = s.daemon.post("/api/v1/alertmanager", Some(webhook)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rolled_back"], json!([id]), "{body}");
    let call = s.rollback_call().await;
    let latency = since(t0, call.at);
    println!("alertmanager webhook -> rollback hook with Prometheus frozen: {latency:?}");
    assert!(
        latency < BOUND,
        "the alert took {latency:?} to reach the hook"
    );
    let reason = call.body["reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("alert fired: CanaryErrors"), "{reason}");
    s.assert_never_moved_forward();
}

/// A health endpoint the test switches to failing, recording when it answered each failure.
struct Health {
    url: String,
    healthy: Arc<AtomicBool>,
    failures: Arc<Mutex<Vec<SystemTime>>>,
    _server: tokio::task::JoinHandle<()>,
}

impl Health {
    async fn start() -> Health {
        let healthy = Arc::new(AtomicBool::new(true));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let (h, f) = (healthy.clone(), failures.clone());
        let app = axum::Router::new().route(
            "/ready",
            axum::routing::get(move || {
                let (h, f) = (h.clone(), f.clone());
                async move {
                    if h.load(Ordering::SeqCst) {
                        return axum::http::StatusCode::OK;
                    }
                    f.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(SystemTime::now());
                    axum::http::StatusCode::SERVICE_UNAVAILABLE
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/ready", listener.local_addr().expect("addr"));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Health {
            url,
            healthy,
            failures,
            _server: server,
        }
    }

    fn failures(&self) -> Vec<SystemTime> {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_health_probe_reaches_the_rollback_hook_within_a_second_while_prometheus_hangs() {
    let health = Health::start().await;
    let s = Setup::start(
        "preempt-health",
        &format!(
            "health:\n  - {{ url: \"{}\", interval: 200ms, failure_limit: 2 }}\n",
            health.url
        ),
    )
    .await;
    let id = s.rollout_with_a_judged_tick().await;
    s.freeze_prometheus_mid_tick().await;
    health.healthy.store(false, Ordering::SeqCst);
    let call = s.rollback_call().await;
    // The decisive failure is the probe that reached `failure_limit` (the second one).
    let failures = health.failures();
    let decisive = *failures.get(1).expect("two failed probes");
    let latency = since(decisive, call.at);
    println!("health probe at failure_limit -> rollback hook with Prometheus frozen: {latency:?}");
    assert!(
        latency < BOUND,
        "the failing probe took {latency:?} to reach the hook"
    );
    let reason = call.body["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with(&format!("health check {} failed", health.url)),
        "{reason}"
    );
    let r = s
        .daemon
        .wait_phase(&id, &["rolled_back"], Duration::from_secs(5))
        .await;
    assert_eq!(r["reason"].as_str(), Some(reason));
    s.assert_never_moved_forward();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticks_against_a_frozen_prometheus_end_at_their_deadline_as_no_data() {
    // Interval 1 s and Prometheus timeout 2 s: every tick ends after 1 s as an error tick, so
    // nodata_limit (3) ticks take about 3 s, not 3 ticks of every query timing out in turn.
    let s = Setup::start("preempt-deadline", "").await;
    let id = s.rollout_with_a_judged_tick().await;
    s.freeze_prometheus_mid_tick().await;
    let t0 = Instant::now();
    let r = s
        .daemon
        .wait_phase(&id, &["paused", "rolled_back"], Duration::from_secs(30))
        .await;
    let took = t0.elapsed();
    println!("frozen Prometheus -> paused for no data after 3 ticks: {took:?}");
    assert_eq!(r["phase"], "paused", "{r}");
    let reason = r["reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("no data for 3 ticks"), "{reason}");
    assert!(reason.contains("deadline of 1s"), "{reason}");
    for c in r["checks"].as_array().expect("checks") {
        assert_eq!(c["verdict"], "error", "{c}");
    }
    assert!(took < Duration::from_secs(8), "three ticks took {took:?}");
    s.assert_never_moved_forward();
}
