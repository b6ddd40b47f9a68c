//! A version is data, never PromQL (issue 9, finding 1). Started with the version
//! `x"}[10s])) * 0 or vector(0) #`, a rule matching `service="{{version}}"` used to read the
//! canary as 0 and promote it at 50 % errors. The API now refuses such a version with 400, and
//! should one arrive some other way (a rollout stored before the check existed), the query
//! escapes it: Prometheus reads it as one label value, and the bad canary is rolled back.

use crate::common;

use std::path::Path;
use std::time::{Duration, SystemTime};

use canaryd::demo::prometheus::{PrometheusOptions, PrometheusProcess};
use canaryd::demo::service::{DemoService, Track};
use canaryd::rollout::{Action, Event, HookKind, Plan, Rollout, handle};
use canaryd::rules::parse_rule;
use canaryd::source::{PrometheusConfig, PrometheusSource};
use canaryd::verdict::Verdict;
use chrono::Utc;
use common::Daemon;
use serde_json::json;

/// The version from the issue.
const INJECTED: &str = r#"x"}[10s])) * 0 or vector(0) #"#;
/// The same as the content of a PromQL string, written out by hand.
const INJECTED_ESCAPED: &str = r#"x\"}[10s])) * 0 or vector(0) #"#;

/// Steps straight to 100 % after one healthy tick: a canary read as healthy is promoted at once.
fn rule_yaml() -> String {
    r#"name: injected
selector:
  canary: 'track="canary"'
  baseline: 'track="baseline"'
steps:
  - { weight: 50, hold: 0s }
  - { weight: 100 }
analysis: { interval: 1s, window: 10s, step: 1s, warmup: 0s }
metrics:
  - name: error_rate
    query: 'sum(rate(http_requests_total{ {{selector}}, service="{{version}}", code=~"5.." }[4s])) / sum(rate(http_requests_total{ {{selector}}, service="{{version}}" }[4s]))'
    rollback_above: 0.05
    critical: true
"#
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_refuses_versions_that_are_not_names_with_400() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rule = dir.path().join("injected.yaml");
    std::fs::write(&rule, rule_yaml()).expect("rule");
    let port = canaryd::demo::free_loopback_port().expect("port");
    let d = Daemon::start(
        &format!("http://127.0.0.1:{port}"),
        &[rule],
        dir.path(),
        &[],
    )
    .await;

    let too_long = "v".repeat(129);
    for version in [
        INJECTED,
        "",
        "   ",
        "v1\nforged log line",
        "v1\u{1b}[31m",
        &too_long,
    ] {
        let (status, body) = d
            .post(
                "/api/v1/rollouts",
                Some(json!({"rule": "injected", "version": version})),
            )
            .await;
        assert_eq!(status, 400, "version {version:?}: {body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(error.contains("version"), "{version:?}: {error}");
        assert!(
            !error.contains('\n') && !error.contains('\u{1b}'),
            "the error echoes no control character: {error:?}"
        );
    }
    let (_, listed) = d.get("/api/v1/rollouts").await;
    assert_eq!(listed["rollouts"], json!([]), "nothing was started");
    // A name-shaped version still starts.
    d.start_rollout("injected", "v1.2.3+build.7").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_injected_version_is_one_label_value_and_the_bad_canary_rolls_back() {
    // The demo service's `service` label stands in for the label a deploy stamps with the
    // version; it carries the hostile version verbatim.
    let service = DemoService::start(INJECTED, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("demo service");
    service.update(Track::Canary, |p| p.error_rate = 0.5);
    let prometheus = PrometheusProcess::start(PrometheusOptions {
        targets: vec![service.addr().to_string()],
        ..PrometheusOptions::default()
    })
    .await
    .expect("prometheus");
    // Three seconds back, so the tick's range (ending at a whole second) holds enough points.
    prometheus
        .wait_for_series(
            &format!(
                r#"sum(rate(http_requests_total{{service="{INJECTED_ESCAPED}", track="canary", code="500"}}[4s] offset 3s)) > 0.2"#
            ),
            Duration::from_secs(30),
        )
        .await
        .expect("canary errors in prometheus");

    let rule = parse_rule(Path::new("injected.yaml"), &rule_yaml()).expect("rule loads");
    let plan = Plan::from_rule(&rule);
    let source = PrometheusSource::new(&PrometheusConfig {
        url: prometheus.url(),
        timeout: Duration::from_secs(5),
        bearer_token: None,
        basic_auth: None,
    })
    .expect("source");
    // As a rollout recovered from a store written before the API checked versions, whose weight
    // was confirmed a window ago: every point in the window was taken at this weight (only
    // those count, see "Fresh data at the current weight").
    let t0 = Utc::now() - rule.spec.analysis.window;
    let r = Rollout::new("ro-injected".into(), "injected".into(), INJECTED.into(), t0);
    let r = handle(&r, &plan, Event::Start, t0).rollout;
    let hook = HookKind::SetWeight;
    let r = handle(&r, &plan, Event::HookSucceeded { hook }, t0).rollout;

    let tick = canaryd::controller::analysis::gather(
        &source,
        &rule,
        &r,
        SystemTime::now(),
        rule.spec.analysis.window,
    )
    .await;
    let check = tick
        .checks
        .iter()
        .find(|c| &*c.metric == "error_rate")
        .cloned()
        .expect("error_rate check");
    let canary = check.canary.unwrap_or(0.0);
    assert!(
        (0.35..0.65).contains(&canary),
        "the canary's error rate is read as it is (0.5), not forged to 0: {check:?}"
    );
    assert_eq!(check.verdict, Verdict::Fail, "{check:?}");

    let decided = handle(&r, &plan, Event::Tick(tick), Utc::now());
    assert!(
        matches!(decided.actions.as_slice(), [Action::Rollback { .. }]),
        "a canary at 50 % errors is rolled back, not shifted or promoted: {:?}",
        decided.actions
    );
}
