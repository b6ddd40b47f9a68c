//! The demo's real traffic judges itself: the two processes behind a real HAProxy count the
//! requests they really serve, Prometheus scrapes them, and a canary that starts answering
//! errors once it has 25 % of HAProxy's traffic is rolled back on those counts alone (no
//! simulated service runs here).

use crate::common;

use std::time::{Duration, Instant};

use canaryd::demo::prometheus::{PrometheusOptions, PrometheusProcess};
use canaryd::demo::real_traffic::RealTraffic;
use common::Daemon;
use common::alerting::write_rule;

fn rule(name: &str, rt: &RealTraffic) -> String {
    format!(
        r#"name: {name}
selector:
  canary: 'service="{name}", track="canary"'
  baseline: 'service="{name}", track="baseline"'
steps:
  - {{ weight: 5, hold: 3s }}
  - {{ weight: 25, hold: 120s }}
  - {{ weight: 100 }}
analysis:
  interval: 1s
  step: 1s
  window: 10s
  warmup: 2s
  failure_limit: 2
  nodata_limit: 10
metrics:
  - name: error_rate
    query: |
      sum(rate(http_requests_total{{ {{{{selector}}}}, code=~"5.." }}[4s]))
        / sum(rate(http_requests_total{{ {{{{selector}}}} }}[4s]))
    rollback_above: 0.05
    critical: true
hooks: {{}}
traffic:
  provider: haproxy
  socket: {socket}
  backend: app
  canary: canary
  baseline: baseline
"#,
        socket = rt.admin_socket().display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bad_canary_behind_haproxy_is_rolled_back_on_the_requests_it_really_served() {
    let name = "real-traffic";
    let rt = RealTraffic::start_if_installed(name)
        .await
        .expect("start")
        .expect("haproxy is installed (scripts/setup.sh)");
    let prometheus = PrometheusProcess::start(PrometheusOptions {
        targets: rt.metric_targets(),
        ..PrometheusOptions::default()
    })
    .await
    .expect("prometheus");
    let served = |track: &str, code: &str| {
        format!(r#"sum(http_requests_total{{service="{name}",track="{track}",code="{code}"}})"#)
    };
    prometheus
        .wait_for_series(&served("canary", "500"), Duration::from_secs(20))
        .await
        .expect("the backends export their counts");
    let dir = tempfile::tempdir().expect("dir");
    let rule = write_rule(dir.path(), name, &rule(name, &rt));
    let daemon = Daemon::start(&prometheus.url(), &[rule], dir.path(), &[]).await;
    let id = daemon.start_rollout(name, "v2").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while daemon.rollout(&id).await["weight"] != 25 {
        let r = daemon.rollout(&id).await;
        assert!(Instant::now() < deadline, "never reached 25 %: {r}");
        assert_eq!(r["phase"], "progressing", "a healthy canary at 5 %: {r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (before, no_errors) = rt.canary_served();
    assert!(before > 0, "the canary served requests at 5 %");
    assert_eq!(no_errors, 0);
    rt.set_canary_error_rate(0.3);
    let r = daemon
        .wait_phase(
            &id,
            &["rolled_back", "failed", "succeeded", "paused"],
            Duration::from_secs(40),
        )
        .await;
    assert_eq!(r["phase"], "rolled_back", "{r}");
    assert!(
        r["reason"].as_str().unwrap_or("").contains("error_rate"),
        "{r}"
    );
    // What Prometheus judged is what the canary process served: errors it really answered.
    let (_, errors) = rt.canary_served();
    let seen = prometheus
        .query_value(&served("canary", "500"))
        .await
        .expect("query")
        .unwrap_or(0.0);
    assert!(
        seen > 0.0 && seen <= errors as f64,
        "Prometheus saw {seen} canary errors, the process answered {errors}"
    );
    let baseline_errors = prometheus
        .query_value(&served("baseline", "500"))
        .await
        .expect("query");
    assert_eq!(baseline_errors, Some(0.0));
}
