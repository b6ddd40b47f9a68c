//! What the batch tests (`batch_queries`, `batch_outage`, `incremental_windows`,
//! `slot_deadline`) share: the rule and the rollout they gather for, and services scraped by a
//! real Prometheus.
#![allow(dead_code)] // each test binary uses part of it

use canaryd::demo::prometheus::{PrometheusOptions, PrometheusProcess};
use canaryd::demo::service::{DemoService, Track};
use canaryd::rollout::{Phase, Rollout};
use canaryd::rules::Rule;

/// One demo service per `(name, canary error rate, canary median latency)`, and a Prometheus
/// scraping them all. The services stop when the returned handles drop.
pub async fn scraped_services<'a>(
    services: impl IntoIterator<Item = (&'a str, f64, f64)>,
) -> (Vec<DemoService>, PrometheusProcess) {
    let mut started = Vec::new();
    for (name, errors, latency) in services {
        let s = DemoService::start(name, "127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("demo service");
        s.update(Track::Canary, |p| {
            p.error_rate = errors;
            p.latency_p50_s = latency;
        });
        started.push(s);
    }
    let prometheus = PrometheusProcess::start(PrometheusOptions {
        targets: started.iter().map(|s| s.addr().to_string()).collect(),
        ..PrometheusOptions::default()
    })
    .await
    .expect("prometheus");
    (started, prometheus)
}

/// A rollout of `rule` progressing at 5 % for two minutes: past any warmup, so its ticks are
/// gathered and judged.
pub fn rollout(rule: &Rule) -> Rollout {
    let now = chrono::Utc::now();
    let mut r = Rollout::new(
        format!("r-{}", rule.name()),
        rule.name().into(),
        "v2".into(),
        now,
    );
    r.phase = Phase::Progressing;
    r.weight = 5;
    r.step_started_at = Some(now - chrono::Duration::seconds(120));
    r
}

/// Rule `svc-{index}` of the batch tests for `service` (a label value, escaped here for PromQL),
/// from file `file`: 5 % held for `hold`, 1 s ticks over a 10 s window, the `metrics:` list
/// given as YAML (queries with `{{selector}}`), and a weight hook nobody answers.
pub fn service_rule(file: &str, index: usize, service: &str, hold: &str, metrics: &str) -> Rule {
    let promql = service.replace('\\', "\\\\").replace('"', "\\\"");
    let yaml = format!(
        r#"name: svc-{index}
selector:
  canary: 'service="{promql}", track="canary"'
  baseline: 'service="{promql}", track="baseline"'
steps:
  - {{ weight: 5, hold: {hold} }}
  - {{ weight: 100 }}
analysis:
  interval: 1s
  step: 1s
  window: 10s
  warmup: 0s
  min_samples: 3
metrics:{metrics}hooks:
  set_weight: {{ url: "http://127.0.0.1:9/weight" }}
"#
    );
    canaryd::rules::parse_rule(std::path::Path::new(file), &yaml)
        .unwrap_or_else(|e| panic!("rule for {service:?}: {e:?}\n{yaml}"))
}
