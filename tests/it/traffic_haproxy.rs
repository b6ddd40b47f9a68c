//! The HAProxy provider against a real HAProxy (Debian `haproxy`) in front of two real backends:
//! the canary's measured share follows each weight, a rollback leaves it nothing, a reload
//! mid-rollout loses no step, and a weight changed by hand pauses the rollout and alerts.

use crate::common;

use std::time::{Duration, Instant};

use canaryd::demo::alertmanager::{AlertmanagerOptions, AlertmanagerProcess};
use canaryd::demo::prometheus::PrometheusOptions;
use canaryd::demo::receiver::HookReceiver;
use canaryd::demo::traffic_stack::{Backend, HaproxyProcess, send_requests};
use canaryd::rules::traffic::HaproxySpec;
use canaryd::traffic::haproxy::Haproxy;
use canaryd::traffic::{TrafficProvider, set_confirmed};
use common::alerting::{named, service_and_prometheus, wait_alerts, write_rule};
use common::{Daemon, RuleOpts, rule_yaml, weights};

async fn proxy() -> (Backend, Backend, HaproxyProcess) {
    let canary = Backend::start("canary").await.expect("canary backend");
    let baseline = Backend::start("baseline").await.expect("baseline backend");
    let haproxy = HaproxyProcess::start(canary.addr(), baseline.addr())
        .await
        .expect("haproxy");
    (canary, baseline, haproxy)
}

fn spec(h: &HaproxyProcess) -> HaproxySpec {
    HaproxySpec {
        socket: Some(h.admin_socket()),
        address: None,
        backend: "app".into(),
        canary: "canary".into(),
        baseline: "baseline".into(),
        timeout: Duration::from_secs(2),
    }
}

fn traffic_yaml(h: &HaproxyProcess) -> String {
    format!(
        "traffic:\n  provider: haproxy\n  socket: {}\n  backend: app\n  canary: canary\n  baseline: baseline\n",
        h.admin_socket().display()
    )
}

/// The canary's weight as HAProxy holds it.
async fn canary_weight(h: &HaproxyProcess) -> u32 {
    let answer = h
        .command("get weight app/canary")
        .await
        .expect("get weight");
    answer
        .split_whitespace()
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("unexpected answer {answer:?}"))
}

async fn wait_canary_weight(h: &HaproxyProcess, want: u32, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let w = canary_weight(h).await;
        if w == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "haproxy canary weight {w}, wanted {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn canary_share_of_real_requests_follows_each_weight_and_is_zero_after_rollback() {
    let (canary, _baseline, haproxy) = proxy().await;
    let p = Haproxy::new(spec(&haproxy));
    common::traffic::assert_share_follows_each_weight_then_none(&p, &haproxy.url(), &canary).await;
    assert_eq!(p.current().await.expect("read").weights.canary, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_server_name_is_an_error_not_a_confirmation() {
    let (_c, _b, haproxy) = proxy().await;
    let mut s = spec(&haproxy);
    s.canary = "nosuchserver".into();
    let err = set_confirmed(&Haproxy::new(s), 25)
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("No such server"), "{err}");
    assert_eq!(canary_weight(&haproxy).await, 0, "nothing moved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rollout_moves_haproxy_weights_and_a_reload_mid_rollout_loses_no_step() {
    let (_c, _b, haproxy) = proxy().await;
    let name = "traffic-reload";
    let (_service, prometheus) = service_and_prometheus(name, PrometheusOptions::default()).await;
    let receiver = HookReceiver::start().await.expect("receiver");
    let dir = tempfile::tempdir().expect("dir");
    let rule = write_rule(
        dir.path(),
        name,
        &(rule_yaml(name, &receiver, &RuleOpts::default()) + &traffic_yaml(&haproxy)),
    );
    let daemon = Daemon::start(&prometheus.url(), &[rule], dir.path(), &[]).await;
    let id = daemon.start_rollout(name, "v2").await;
    // Each set_weight hook runs after HAProxy confirmed the weight.
    let deadline = Instant::now() + Duration::from_secs(30);
    while daemon.rollout(&id).await["weight"] != 25 {
        assert!(Instant::now() < deadline, "never reached 25 %");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(canary_weight(&haproxy).await, 25);
    haproxy.reload().await.expect("reload");
    // The new worker starts from the configuration file (canary 0) until canaryd sees it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let want = daemon.rollout(&id).await["weight"].as_u64().unwrap_or(0) as u32;
        if canary_weight(&haproxy).await == want && daemon.log_text().contains("traffic.reapplied")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "weights not re-applied after the reload:\n{}",
            common::tail(&daemon.log_text(), 30)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = daemon
        .wait_phase(
            &id,
            &["succeeded", "rolled_back", "failed", "paused"],
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(r["phase"], "succeeded", "{r}");
    assert_eq!(
        weights(&receiver.calls()),
        vec![5, 25, 50, 100],
        "a step was lost or repeated"
    );
    assert_eq!(canary_weight(&haproxy).await, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_weight_changed_by_hand_pauses_and_alerts_and_rollback_zeroes_the_canary_first() {
    let (canary, _b, haproxy) = proxy().await;
    let name = "traffic-drift";
    let (_service, prometheus) = service_and_prometheus(name, PrometheusOptions::default()).await;
    let am = AlertmanagerProcess::start(AlertmanagerOptions::default())
        .await
        .expect("alertmanager");
    let receiver = HookReceiver::start().await.expect("receiver");
    let dir = tempfile::tempdir().expect("dir");
    let opts = RuleOpts {
        hold: "60s",
        ..RuleOpts::default()
    };
    let rule = write_rule(
        dir.path(),
        name,
        &(rule_yaml(name, &receiver, &opts) + &traffic_yaml(&haproxy)),
    );
    let am_url = am.url();
    let daemon = Daemon::start(
        &prometheus.url(),
        &[rule],
        dir.path(),
        &[
            "--alertmanager-url",
            &am_url,
            "--alertmanager-resend-interval",
            "1s",
        ],
    )
    .await;
    let id = daemon.start_rollout(name, "v2").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while daemon.rollout(&id).await["weight"] != 5 {
        assert!(Instant::now() < deadline, "never reached 5 %");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let answer = haproxy
        .command("set weight app/canary 60")
        .await
        .expect("by hand");
    assert!(answer.trim().is_empty(), "{answer}");
    let r = daemon
        .wait_phase(&id, &["paused"], Duration::from_secs(15))
        .await;
    assert_eq!(r["pause_reason"], "drift", "{r}");
    assert!(
        r["reason"].as_str().unwrap_or("").contains("canary 60"),
        "{r}"
    );
    assert_eq!(
        canary_weight(&haproxy).await,
        60,
        "canaryd must not overwrite a human's change"
    );
    let alerts = wait_alerts(&am, &id, Duration::from_secs(20), |a| {
        named(a, "CanaryTrafficDrift").is_some()
    })
    .await;
    assert_eq!(
        named(&alerts, "CanaryTrafficDrift").expect("alert")["labels"]["severity"],
        "critical"
    );
    // Resume: canaryd's weight again.
    let (status, body) = daemon
        .post(&format!("/api/v1/rollouts/{id}/resume"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    wait_canary_weight(&haproxy, 5, Duration::from_secs(10)).await;
    // Rollback: the canary is at 0 before the rollback hook is called.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(None::<String>));
    {
        let seen = seen.clone();
        let socket = haproxy.admin_socket();
        receiver.on_call(move |c| {
            if c.path == "/rollback" {
                *seen.lock().expect("lock") = Some(get_weight_sync(&socket));
            }
        });
    }
    let (status, body) = daemon
        .post(
            &format!("/api/v1/rollouts/{id}/abort"),
            Some(serde_json::json!({"reason": "test"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    daemon
        .wait_phase(&id, &["rolled_back"], Duration::from_secs(15))
        .await;
    let at_hook = seen
        .lock()
        .expect("lock")
        .clone()
        .expect("rollback hook called");
    assert!(
        at_hook.starts_with("0 "),
        "canary weight when the rollback hook ran: {at_hook:?}"
    );
    assert_eq!(canary_weight(&haproxy).await, 0);
    let before = canary.hits();
    let counts = send_requests(&haproxy.url(), 500, 16).await;
    assert_eq!(counts.get("canary"), None, "{counts:?}");
    assert_eq!(canary.hits(), before);
}

/// `get weight app/canary` from inside a (synchronous) receiver callback.
fn get_weight_sync(socket: &std::path::Path) -> String {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket).expect("admin socket");
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    s.write_all(b"get weight app/canary\n").expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}
