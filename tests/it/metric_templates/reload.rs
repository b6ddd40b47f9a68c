//! A running rollout keeps the rule it started with when a template file changes, across a
//! reload and a restart; new rollouts get the new template; a broken template file keeps the
//! running rules. Real daemon, real Prometheus, the demo service.

use super::common;

/// Requests per second: always well above 0.001 and far below 10⁹ on the demo service.
fn reload_templates(rollback_below: &str) -> String {
    format!(
        "kind: metric_templates\nvars: {{ svc: null }}\ntemplates:\n  - name: request_rate\n    query: 'sum(rate(http_requests_total{{ {{{{selector}}}}, service=\"{{{{svc}}}}\" }}[4s]))'\n    direction: decrease\n    rollback_below: {rollback_below}\n    critical: true\n"
    )
}

fn reload_rule(name: &str, receiver: &canaryd::demo::receiver::HookReceiver) -> String {
    format!(
        "name: {name}\n\
         selector: {{ canary: 'service=\"tpl\", track=\"canary\"', baseline: 'service=\"tpl\", track=\"baseline\"' }}\n\
         vars: {{ svc: tpl }}\n\
         steps: [{{ weight: 5, hold: 1h }}, {{ weight: 100 }}]\n\
         analysis: {{ interval: 1s, step: 1s, window: 10s, warmup: 1s, min_samples: 3 }}\n\
         metrics:\n  - {{ name: requests, template: request_rate }}\n\
         hooks:\n  set_weight: {{ url: \"{}\", timeout: 2s }}\n  promote: {{ url: \"{}\", timeout: 2s }}\n  rollback: {{ url: \"{}\", timeout: 2s }}\n",
        receiver.url("/weight"),
        receiver.url("/promote"),
        receiver.url("/rollback"),
    )
}

/// Waits until `id` has passed `requests` at `n` ticks after `since` (RFC 3339) while staying
/// at its first step; panics on a failed check or any other phase.
async fn passes_ticks_after(d: &common::Daemon, id: &str, since: &str, n: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < n {
        let r = d.rollout(id).await;
        assert_eq!(r["phase"], "progressing", "{r}");
        let at = r["last_tick"]["at"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if at.as_str() > since {
            // No data yet (fewer than min_samples) proves nothing either way; a fail would.
            let check = common::check_of(&r, "requests").expect("requests check");
            assert_ne!(check["verdict"], "fail", "{check}");
            if check["verdict"] == "pass" {
                seen.insert(at);
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{n} ticks after {since} never came: {r}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_templates_reload_keeps_running_rollouts_on_their_snapshot() {
    use canaryd::demo::prometheus::{PrometheusOptions, PrometheusProcess};
    let dir = tempfile::tempdir().expect("tempdir");
    let service =
        canaryd::demo::service::DemoService::start("tpl", "127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("demo service");
    let prometheus = PrometheusProcess::start(PrometheusOptions {
        targets: vec![service.addr().to_string()],
        ..PrometheusOptions::default()
    })
    .await
    .expect("prometheus");
    let receiver = canaryd::demo::receiver::HookReceiver::start()
        .await
        .expect("receiver");
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(&rules).expect("rules dir");
    let templates = rules.join("templates.yaml");
    std::fs::write(&templates, reload_templates("0.001")).expect("templates");
    for name in ["alpha", "beta"] {
        std::fs::write(
            rules.join(format!("{name}.yaml")),
            reload_rule(name, &receiver),
        )
        .expect("rule");
    }
    prometheus
        .wait_for_series(
            r#"sum(rate(http_requests_total{service="tpl", track="canary"}[4s]))"#,
            std::time::Duration::from_secs(30),
        )
        .await
        .expect("series");
    let mut d = common::Daemon::start(
        &prometheus.url(),
        std::slice::from_ref(&rules),
        dir.path(),
        &[],
    )
    .await;
    let alpha = d.start_rollout("alpha", "v1").await;
    passes_ticks_after(&d, &alpha, "", 1).await;

    // The template now fails every healthy canary: only rollouts started from here on see it.
    std::fs::write(&templates, reload_templates("1000000000")).expect("edit");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !d
        .get("/api/v1/rules")
        .await
        .1
        .to_string()
        .contains("1000000000")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "template change never reloaded:\n{}",
            common::tail(&d.log_text(), 20)
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let reloaded = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let beta = d.start_rollout("beta", "v1").await;
    let ended = d
        .wait_ended(&beta, std::time::Duration::from_secs(30))
        .await;
    assert_eq!(ended["phase"], "rolled_back", "{ended}");
    passes_ticks_after(&d, &alpha, &reloaded, 3).await;

    // kill -9 and restart: the recovered rollout runs the rule text it stored, not the files.
    d.kill_and_wait().await;
    d = common::Daemon::start(
        &prometheus.url(),
        std::slice::from_ref(&rules),
        dir.path(),
        &[],
    )
    .await;
    let restarted = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    passes_ticks_after(&d, &alpha, &restarted, 3).await;

    // A broken template file keeps the running rules and names the file, line and column.
    std::fs::write(
        &templates,
        reload_templates("1000000000").replace("[4s]", "[{{windw}}]"),
    )
    .expect("break");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !d.metrics().await.contains("canaryd_rules_reload_success 0") {
        assert!(
            std::time::Instant::now() < deadline,
            "broken template accepted:\n{}",
            common::tail(&d.log_text(), 20)
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let log = d.log_text();
    assert!(
        log.contains("templates.yaml:5:12") && log.contains("windw"),
        "{}",
        common::tail(&log, 20)
    );
    assert!(
        log.contains("alpha.yaml:7:33") && log.contains("templates.yaml:4:5)"),
        "{}",
        common::tail(&log, 20)
    );
    let listed = d.get("/api/v1/rules").await.1;
    assert_eq!(
        listed["rules"].as_array().map(Vec::len),
        Some(2),
        "{listed}"
    );
    drop(receiver);
}
