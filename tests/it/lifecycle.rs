//! The release lifecycle on the real stack (Prometheus, Alertmanager, HAProxy, two backends):
//! a failing `pre_rollout` moves no traffic, a readiness 503 holds the step, and a rollback of a
//! non-reversible release never migrates down and asks a human; a reversible one migrates down
//! once traffic is back on the baseline.

use crate::common;

use std::time::{Duration, Instant};

use canaryd::demo::alertmanager::{AlertmanagerOptions, AlertmanagerProcess};
use canaryd::demo::prometheus::PrometheusOptions;
use canaryd::demo::receiver::HookReceiver;
use canaryd::demo::traffic_stack::{Backend, HaproxyProcess};
use common::alerting::{named, service_and_prometheus, wait_alerts, write_rule};
use common::{Daemon, RuleOpts, calls_to, rule_yaml, weights};

struct World {
    canary: Backend,
    _baseline: Backend,
    haproxy: HaproxyProcess,
    receiver: HookReceiver,
    daemon: Daemon,
    _prometheus: canaryd::demo::prometheus::PrometheusProcess,
    _service: canaryd::demo::service::DemoService,
    _dir: tempfile::TempDir,
}

/// `hooks` are extra lines under `hooks:` (indented two spaces).
async fn world(name: &str, opts: RuleOpts, hooks: &str, daemon_args: &[&str]) -> World {
    let canary = Backend::start("canary").await.expect("canary");
    let baseline = Backend::start("baseline").await.expect("baseline");
    let haproxy = HaproxyProcess::start(canary.addr(), baseline.addr())
        .await
        .expect("haproxy");
    let (service, prometheus) = service_and_prometheus(name, PrometheusOptions::default()).await;
    let receiver = HookReceiver::start().await.expect("receiver");
    let dir = tempfile::tempdir().expect("dir");
    let hooks = hooks
        .replace("{ready}", &canary.ready_url())
        .replace("{receiver}", receiver.url("").trim_end_matches('/'));
    let text = format!(
        "{}{hooks}traffic:\n  provider: haproxy\n  socket: {}\n  backend: app\n  canary: canary\n  baseline: baseline\n",
        rule_yaml(name, &receiver, &opts),
        haproxy.admin_socket().display()
    );
    let rule = write_rule(dir.path(), name, &text);
    let daemon = Daemon::start(&prometheus.url(), &[rule], dir.path(), daemon_args).await;
    World {
        canary,
        _baseline: baseline,
        haproxy,
        receiver,
        daemon,
        _prometheus: prometheus,
        _service: service,
        _dir: dir,
    }
}

async fn canary_weight(h: &HaproxyProcess) -> u32 {
    let a = h
        .command("get weight app/canary")
        .await
        .expect("get weight");
    a.split_whitespace()
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("{a:?}"))
}

async fn wait_weight(d: &Daemon, id: &str, w: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while d.rollout(id).await["weight"] != w {
        assert!(
            Instant::now() < deadline,
            "never at {w} %: {}",
            d.rollout(id).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_pre_rollout_ends_the_rollout_before_any_traffic_moves() {
    let w = world(
        "lc-pre",
        RuleOpts::default(),
        "  pre_rollout: { command: [\"sh\", \"-c\", \"echo migration 0042 failed >&2; exit 3\"], timeout: 5s, retries: 0 }\n",
        &[],
    )
    .await;
    let id = w.daemon.start_rollout("lc-pre", "v2").await;
    let r = w.daemon.wait_ended(&id, Duration::from_secs(20)).await;
    assert_eq!(r["phase"], "failed", "{r}");
    let reason = r["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("pre_rollout") && reason.contains("migration 0042 failed"),
        "{reason}"
    );
    assert_eq!(r["weight"], 0);
    assert_eq!(canary_weight(&w.haproxy).await, 0, "HAProxy moved");
    assert!(
        weights(&w.receiver.calls()).is_empty(),
        "set_weight was called"
    );
    assert_eq!(w.canary.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_readiness_503_holds_the_step_and_200_lets_it_advance() {
    let w = world(
        "lc-ready",
        RuleOpts::default(),
        "  readiness: { url: \"{ready}\", timeout: 1s }\n",
        &[],
    )
    .await;
    let id = w.daemon.start_rollout("lc-ready", "v2").await;
    wait_weight(&w.daemon, &id, 5).await;
    assert!(
        w.canary.ready_asked() >= 1,
        "readiness asked before the first weight"
    );
    w.canary.set_ready(503);
    // Several refusals, each after the 5 % hold would have let the rollout advance.
    let asked = w.canary.ready_asked();
    let deadline = Instant::now() + Duration::from_secs(30);
    while w.canary.ready_asked() < asked + 4 {
        assert!(Instant::now() < deadline, "readiness not asked again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = w.daemon.rollout(&id).await;
    assert_eq!(
        (r["weight"].as_u64(), r["step"].as_u64()),
        (Some(5), Some(0)),
        "{r}"
    );
    assert!(
        r["reason"].as_str().unwrap_or("").contains("HTTP 503"),
        "{r}"
    );
    assert_eq!(canary_weight(&w.haproxy).await, 5);
    assert_eq!(weights(&w.receiver.calls()), vec![5]);
    w.canary.set_ready(200);
    let r = w.daemon.wait_ended(&id, Duration::from_secs(60)).await;
    assert_eq!(r["phase"], "succeeded", "{r}");
    assert_eq!(weights(&w.receiver.calls()), vec![5, 25, 50, 100]);
}

const MIGRATION_HOOKS: &str =
    "  migrate_down: { url: \"{receiver}/migrate_down\", timeout: 2s, retries: 1 }\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rolling_back_a_non_reversible_release_never_migrates_down_and_alerts() {
    let am = AlertmanagerProcess::start(AlertmanagerOptions::default())
        .await
        .expect("alertmanager");
    let am_url = am.url();
    let reports = tempfile::tempdir().expect("reports dir");
    let config = reports.path().join("canaryd.yaml");
    std::fs::write(
        &config,
        format!("reports_dir: {}\n", reports.path().display()),
    )
    .expect("config");
    let w = world(
        "lc-irrev",
        RuleOpts {
            hold: "60s",
            ..RuleOpts::default()
        },
        MIGRATION_HOOKS,
        &[
            "--alertmanager-url",
            &am_url,
            "--alertmanager-resend-interval",
            "1s",
            "--alertmanager-rollback-keep-firing-for",
            "60s",
            "--config",
            config.to_str().expect("utf-8"),
        ],
    )
    .await;
    let (status, body) = w
        .daemon
        .post(
            "/api/v1/rollouts",
            Some(serde_json::json!({"rule": "lc-irrev", "version": "v2",
                "migration": {"reversible": false, "id": "0042_drop_column"}})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().expect("id").to_string();
    wait_weight(&w.daemon, &id, 5).await;
    w.daemon
        .post(
            &format!("/api/v1/rollouts/{id}/abort"),
            Some(serde_json::json!({"reason": "bad canary"})),
        )
        .await;
    let r = w
        .daemon
        .wait_phase(&id, &["rolled_back", "failed"], Duration::from_secs(20))
        .await;
    assert_eq!(r["phase"], "rolled_back", "{r}");
    assert_eq!(r["restore_decision_needed"], true, "{r}");
    assert_eq!(canary_weight(&w.haproxy).await, 0);
    let alerts = wait_alerts(&am, &id, Duration::from_secs(20), |a| {
        named(a, "CanaryRestoreDecisionNeeded").is_some()
    })
    .await;
    let alert = named(&alerts, "CanaryRestoreDecisionNeeded").expect("alert");
    assert!(
        alert["annotations"]["description"]
            .as_str()
            .unwrap_or("")
            .contains("0042_drop_column"),
        "{alert}"
    );
    assert!(
        calls_to(&w.receiver.calls(), "/migrate_down").is_empty(),
        "migrate_down was called for a non-reversible migration"
    );
    let (_, report) = w.daemon.get(&format!("/api/v1/rollouts/{id}/report")).await;
    let path = report["rollback"]["migration"].as_str().unwrap_or("");
    assert!(
        path.contains("non-reversible") && path.contains("not run"),
        "report: {report}"
    );
    let day = &report["started_at"].as_str().unwrap_or_default()[..10];
    let md = std::fs::read_to_string(reports.path().join(format!("{day}-lc-irrev-{id}.md")))
        .expect("markdown report");
    assert!(
        md.contains("- Migration: non-reversible migration \"0042_drop_column\""),
        "{md}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rolling_back_a_reversible_release_migrates_down_after_traffic_is_on_the_baseline() {
    let w = world(
        "lc-rev",
        RuleOpts {
            hold: "60s",
            ..RuleOpts::default()
        },
        MIGRATION_HOOKS,
        &[],
    )
    .await;
    let weight_at_migrate = std::sync::Arc::new(std::sync::Mutex::new(None::<String>));
    {
        let seen = weight_at_migrate.clone();
        let socket = w.haproxy.admin_socket();
        w.receiver.on_call(move |c| {
            if c.path == "/migrate_down" {
                use std::io::{Read, Write};
                let mut s = std::os::unix::net::UnixStream::connect(&socket).expect("socket");
                s.write_all(b"get weight app/canary\n").expect("write");
                let mut out = String::new();
                let _ = s.read_to_string(&mut out);
                *seen.lock().expect("lock") = Some(out);
            }
        });
    }
    let (status, body) = w
        .daemon
        .post(
            "/api/v1/rollouts",
            Some(serde_json::json!({"rule": "lc-rev", "version": "v2",
                "migration": {"reversible": true, "id": "0043_add_index"}})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().expect("id").to_string();
    wait_weight(&w.daemon, &id, 5).await;
    w.daemon
        .post(
            &format!("/api/v1/rollouts/{id}/abort"),
            Some(serde_json::json!({"reason": "bad canary"})),
        )
        .await;
    let r = w
        .daemon
        .wait_phase(&id, &["rolled_back", "failed"], Duration::from_secs(20))
        .await;
    assert_eq!(r["phase"], "rolled_back", "{r}");
    // The receiver records a call as it answers it, which may be after canaryd heard the answer.
    assert!(
        w.receiver
            .wait_for(
                |c| calls_to(c, "/migrate_down").len() == 1,
                Duration::from_secs(5)
            )
            .await,
        "migrate_down never recorded"
    );
    let calls = w.receiver.calls();
    let paths: Vec<&str> = calls
        .iter()
        .map(|c| c.path.as_str())
        .filter(|p| *p == "/rollback" || *p == "/migrate_down")
        .collect();
    assert_eq!(
        paths,
        vec!["/rollback", "/migrate_down"],
        "{r}\n{}",
        common::tail(&w.daemon.log_text(), 20)
    );
    let seen = weight_at_migrate
        .lock()
        .expect("lock")
        .clone()
        .expect("migrate_down called");
    assert!(
        seen.starts_with("0 "),
        "canary weight at migrate_down: {seen:?}"
    );
    assert!(
        r["migration_path"]
            .as_str()
            .unwrap_or("")
            .contains("migrate_down ran"),
        "{r}"
    );
}
