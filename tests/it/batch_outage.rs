//! Prometheus stopped mid-run: a batch that gets no answer must not turn into one query per
//! rollout (a storm against a server that is already down or overloaded). Every rollout's tick
//! is `error` instead, never a pass, and the next tick asks again. Queries are counted by a
//! loopback proxy in front of a real Prometheus: each request made while Prometheus is down
//! opens a connection of its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use crate::batch_support;

use batch_support::rollout;
use canaryd::controller::analysis::{Fetched, judge_gathered};
use canaryd::controller::gather_many::fetch_many_by;
use canaryd::demo::prometheus::{PrometheusOptions, PrometheusProcess};
use canaryd::judge::observation::Series;
use canaryd::rollout::Rollout;
use canaryd::rules::Rule;
use canaryd::source::batch::Limits;
use canaryd::source::{PrometheusConfig, PrometheusSource};
use canaryd::verdict::Verdict;

const ROLLOUTS: usize = 30;

fn rule(i: usize) -> Rule {
    let yaml = format!(
        r#"name: svc-{i}
selector:
  canary: 'service="svc-{i}", track="canary"'
  baseline: 'service="svc-{i}", track="baseline"'
steps:
  - {{ weight: 5, hold: 1h }}
  - {{ weight: 100 }}
analysis: {{ interval: 1s, step: 1s, window: 10s, warmup: 0s }}
metrics:
  - name: error_rate
    query: sum(rate(http_requests_total{{ {{{{selector}}}}, code=~"5.." }}[4s])) / sum(rate(http_requests_total{{ {{{{selector}}}} }}[4s]))
    rollback_above: 0.05
hooks:
  set_weight: {{ url: "http://127.0.0.1:9/weight" }}
"#
    );
    canaryd::rules::parse_rule(std::path::Path::new("outage.yaml"), &yaml)
        .unwrap_or_else(|e| panic!("rule {i}: {e:?}\n{yaml}"))
}

/// A TCP proxy to `upstream` on a free loopback port; counts the connections it accepts and
/// closes those it cannot pass on (what a client sees of a Prometheus that is down).
async fn counting_proxy(upstream: String, accepted: Arc<AtomicUsize>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            accepted.fetch_add(1, Ordering::SeqCst);
            let upstream = upstream.clone();
            tokio::spawn(async move {
                if let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_down_costs_one_query_per_shape_and_every_tick_is_error() {
    let mut prometheus = PrometheusProcess::start(PrometheusOptions::default())
        .await
        .expect("prometheus");
    let accepted = Arc::new(AtomicUsize::new(0));
    let upstream = prometheus.url().trim_start_matches("http://").to_string();
    let url = counting_proxy(upstream, accepted.clone()).await;
    let source = PrometheusSource::new(&PrometheusConfig {
        url,
        timeout: Duration::from_secs(10),
        bearer_token: None,
        basic_auth: None,
    })
    .expect("source");
    let rules: Vec<Rule> = (0..ROLLOUTS).map(rule).collect();
    let rollouts: Vec<Rollout> = rules.iter().map(rollout).collect();
    let items: Vec<(&Rule, &Rollout)> = rules.iter().zip(&rollouts).collect();
    // 60 queries of one shape, more than one regex batch of 10: one wide query.
    let limits = Limits {
        max_members: 10,
        ..Limits::default()
    };
    let window = Duration::from_secs(10);

    // Up: answered (no such series yet: empty, not failed).
    let up = fetch_many_by(
        &source,
        &items,
        SystemTime::now(),
        window,
        true,
        &limits,
        None,
    )
    .await;
    for g in &up {
        let Some(Fetched::Window { canary, baseline }) = g.metrics.get("error_rate") else {
            panic!("no error_rate: {g:?}");
        };
        assert!(
            !matches!(canary, Series::Failed { .. }) && !matches!(baseline, Series::Failed { .. }),
            "{g:?}"
        );
    }

    prometheus.stop().await;
    accepted.store(0, Ordering::SeqCst);
    let down = fetch_many_by(
        &source,
        &items,
        SystemTime::now(),
        window,
        true,
        &limits,
        None,
    )
    .await;
    // One wide query, not 6 regex batches and then 60 single queries.
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    assert_eq!(down.len(), ROLLOUTS);
    for ((rule, rollout), g) in items.iter().zip(&down) {
        let Some(Fetched::Window { canary, baseline }) = g.metrics.get("error_rate") else {
            panic!("no error_rate: {g:?}");
        };
        assert!(
            matches!(canary, Series::Failed { .. }) && matches!(baseline, Series::Failed { .. }),
            "{g:?}"
        );
        let tick = judge_gathered(rule, rollout, g);
        assert!(
            tick.checks.iter().all(|c| c.verdict == Verdict::Error),
            "{:?}",
            tick.checks
        );
    }
}
