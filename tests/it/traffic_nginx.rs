//! The nginx provider against a real nginx (Debian `nginx`) in front of two real backends: the
//! canary's measured share follows each weight, a rollback leaves it nothing, a sticky split
//! never moves a user back, a template nginx rejects leaves the old configuration serving
//! while the rollout pauses with nginx's error, and an include gone missing is drift.

use crate::common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use canaryd::demo::prometheus::PrometheusOptions;
use canaryd::demo::receiver::HookReceiver;
use canaryd::demo::traffic_stack::{Backend, NginxProcess, send_requests};
use canaryd::rules::traffic::NginxSpec;
use canaryd::traffic::nginx::{Nginx, parse};
use canaryd::traffic::{TrafficProvider, Weights, set_confirmed};
use common::alerting::{service_and_prometheus, write_rule};
use common::{Daemon, RuleOpts, rule_yaml};

fn spec(
    canary: &Backend,
    baseline: &Backend,
    include: std::path::PathBuf,
    sticky: Option<&str>,
) -> NginxSpec {
    NginxSpec {
        include,
        upstream: "app".into(),
        canary: canary.addr().to_string(),
        baseline: baseline.addr().to_string(),
        sticky_key: sticky.map(String::from),
        template: None,
        test_command: vec![],
        reload_command: vec![],
        pid_file: None,
        timeout: Duration::from_secs(10),
    }
}

/// Backends, and nginx started on the provider's own rendering of 0 % canary.
async fn proxy(sticky: Option<&str>) -> (Backend, Backend, NginxProcess, Nginx) {
    let canary = Backend::start("canary").await.expect("canary backend");
    let baseline = Backend::start("baseline").await.expect("baseline backend");
    let first = Nginx::new(spec(&canary, &baseline, "unused".into(), sticky))
        .render(Weights::for_canary_pct(0))
        .expect("render");
    let nginx = NginxProcess::start(&first, sticky.is_some())
        .await
        .expect("nginx");
    let mut s = spec(&canary, &baseline, nginx.include(), sticky);
    s.test_command = nginx.command(&["-t"]);
    s.reload_command = nginx.command(&["-s", "reload"]);
    s.pid_file = Some(nginx.pid_file());
    (canary, baseline, nginx, Nginx::new(s))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn canary_share_of_real_requests_follows_each_weight_and_is_zero_after_rollback() {
    let (canary, _baseline, nginx, p) = proxy(None).await;
    common::traffic::assert_share_follows_each_weight_then_none(&p, &nginx.url(), &canary).await;
}

/// Which of users 0..n nginx sends to the canary (16 connections at once).
async fn canary_users(url: &str, n: usize) -> BTreeSet<usize> {
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..16 {
        let url = url.to_string();
        tasks.spawn(async move {
            let client = reqwest::Client::new();
            let mut out = Vec::new();
            for u in (w..n).step_by(16) {
                let body = client
                    .get(format!("{url}?user={u}"))
                    .send()
                    .await
                    .expect("request")
                    .text()
                    .await
                    .expect("body");
                if body == "canary" {
                    out.push(u);
                }
            }
            out
        });
    }
    let mut all = BTreeSet::new();
    while let Some(part) = tasks.join_next().await {
        all.extend(part.expect("task"));
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sticky_split_only_ever_adds_users_to_the_canary() {
    let (_c, _b, nginx, p) = proxy(Some("$arg_user")).await;
    let users = 1_000;
    let mut previous = BTreeSet::new();
    for pct in [5u32, 25, 50] {
        set_confirmed(&p, pct).await.expect("set");
        let now = canary_users(&nginx.url(), users).await;
        assert!(
            previous.is_subset(&now),
            "at {pct} % users left the canary: {:?}",
            previous.difference(&now).collect::<Vec<_>>()
        );
        let share = now.len() as f64 * 100.0 / users as f64;
        assert!(
            (share - f64::from(pct)).abs() <= 5.0,
            "{pct} %: {share} % of users"
        );
        // The same user gets the same answer every time.
        assert_eq!(canary_users(&nginx.url(), users).await, now);
        previous = now;
    }
    p.zero_canary().await.expect("zero");
    assert!(canary_users(&nginx.url(), users).await.is_empty());
}

const BAD_TEMPLATE: &str = "upstream {{ upstream }} {\n    server {{ canary }} weight={{ canary_weight }};\n    server {{ baseline }} weight={{ baseline_weight }};\n    no_such_directive on;\n}\n";
const GOOD_TEMPLATE: &str = "upstream {{ upstream }} {\n    server {{ canary }} {% if canary_weight == \"0\" %}down{% else %}weight={{ canary_weight }}{% endif %};\n    server {{ baseline }} {% if baseline_weight == \"0\" %}down{% else %}weight={{ baseline_weight }}{% endif %};\n}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_template_nginx_rejects_keeps_the_old_config_and_pauses_the_rollout() {
    let (canary, _b, nginx, _p) = proxy(None).await;
    let name = "traffic-nginx";
    let (_service, prometheus) = service_and_prometheus(name, PrometheusOptions::default()).await;
    let receiver = HookReceiver::start().await.expect("receiver");
    let dir = tempfile::tempdir().expect("dir");
    let template = dir.path().join("upstream.j2");
    std::fs::write(&template, BAD_TEMPLATE).expect("template");
    let argv = |tail: &[&str]| serde_json::to_string(&nginx.command(tail)).expect("json");
    let traffic = format!(
        "traffic:\n  provider: nginx\n  include: {}\n  upstream: app\n  canary: {}\n  baseline: {}\n  template: {}\n  test_command: {}\n  reload_command: {}\n  pid_file: {}\n",
        nginx.include().display(),
        canary.addr(),
        _b.addr(),
        template.display(),
        argv(&["-t"]),
        argv(&["-s", "reload"]),
        nginx.pid_file().display(),
    );
    let rule = write_rule(
        dir.path(),
        name,
        &(rule_yaml(
            name,
            &receiver,
            &RuleOpts {
                hold: "60s",
                ..RuleOpts::default()
            },
        ) + &traffic),
    );
    let old = std::fs::read_to_string(nginx.include()).expect("include");
    let daemon = Daemon::start(&prometheus.url(), &[rule], dir.path(), &[]).await;
    let id = daemon.start_rollout(name, "v2").await;
    let r = daemon
        .wait_phase(
            &id,
            &["paused", "rolling_back", "rolled_back", "failed"],
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(r["phase"], "paused", "{r}");
    assert_eq!(r["pause_reason"], "traffic", "{r}");
    let reason = r["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("no_such_directive"),
        "nginx's error is in the reason: {reason}"
    );
    assert_eq!(r["weight"], 0, "{r}");
    assert_eq!(
        std::fs::read_to_string(nginx.include()).expect("include"),
        old,
        "the rejected include stayed in place"
    );
    let counts = send_requests(&nginx.url(), 200, 8).await;
    assert_eq!(
        counts.get("baseline").copied(),
        Some(200),
        "old config no longer serving: {counts:?}"
    );
    assert!(
        receiver.calls().is_empty(),
        "no set_weight hook after a refused weight"
    );
    // Fixed template, resume: the weight goes through.
    std::fs::write(&template, GOOD_TEMPLATE).expect("template");
    let (status, body) = daemon
        .post(&format!("/api/v1/rollouts/{id}/resume"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while daemon.rollout(&id).await["weight"] != 5 {
        assert!(
            Instant::now() < deadline,
            "never reached 5 % after the fix: {}",
            daemon.rollout(&id).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (w, edited) =
        parse(&std::fs::read_to_string(nginx.include()).expect("include")).expect("marker");
    assert_eq!((w.canary, edited), (5, None));
    // The include canaryd owns is gone (moved away by hand): canaryd can no longer say where
    // traffic goes, so this is drift the rollout pauses on, not a line in the log.
    std::fs::rename(nginx.include(), dir.path().join("moved.conf")).expect("move");
    let r = daemon
        .wait_phase(&id, &["paused"], Duration::from_secs(15))
        .await;
    assert_eq!(r["pause_reason"], "drift", "{r}");
    assert!(
        r["reason"].as_str().unwrap_or("").contains("upstream.conf"),
        "{r}"
    );
}
