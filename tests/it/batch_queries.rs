//! Batched range queries on a real Prometheus: seven services (some with regex metacharacters
//! and quotes in their names) with different error rates and latencies, one rollout each of
//! rules written alike. Batched and unbatched `fetch_many` must give the same series and, judged,
//! the same verdicts; shapes that cannot be batched are asked alone, ambiguous or failed batches
//! per member, and a batch that cannot be answered never passes. Prometheus's own request
//! counter says how many range queries each way cost.

use std::time::{Duration, Instant, SystemTime};

use crate::batch_support;

use batch_support::{rollout, scraped_services};
use canaryd::controller::analysis::{Fetched, Gathered, judge_gathered};
use canaryd::controller::gather_many::{fetch_many, fetch_many_by};
use canaryd::demo::prometheus::PrometheusProcess;
use canaryd::judge::observation::Series;
use canaryd::rollout::{Rollout, Tick};
use canaryd::rules::Rule;
use canaryd::source::batch::Limits;
use canaryd::source::{PrometheusConfig, PrometheusSource};
use canaryd::verdict::Verdict;

/// Service name (as Prometheus stores it), canary error rate, canary median latency.
const SERVICES: &[(&str, f64, f64)] = &[
    ("svc-a", 0.0005, 0.12),
    ("pay.ments", 0.02, 0.12),
    ("x|y(z)", 0.09, 0.12),
    ("quo\"te", 0.0005, 0.9),
    ("brace{1,2}", 0.03, 0.3),
    ("back\\slash", 0.0005, 2.0),
    ("^anchored$", 0.2, 0.12),
];

/// Four window metrics as the shipped rules write them, and a sequential one whose counters
/// `fetch_many` still reads per rollout.
const METRICS: &str = r#"
  - name: error_rate
    query: |
      sum(rate(http_requests_total{ {{selector}}, code=~"5.." }[4s]))
        / sum(rate(http_requests_total{ {{selector}} }[4s]))
    rollback_above: 0.05
    warn_above: 0.01
  - name: p95_latency
    query: histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket{ {{selector}} }[4s])))
    rollback_above: 1.5
    warn_above: 0.5
  - name: db_pool_utilization
    query: sum(db_pool_connections_in_use{ {{selector}} }) / sum(db_pool_connections_max{ {{selector}} })
    rollback_above: 0.95
  - name: cpu_utilization
    query: avg(rate(process_cpu_seconds_total{ {{selector}} }[4s]))
    rollback_above: 0.9
  - name: errors_vs_baseline
    test: sequential
    events: 'http_requests_total{ {{selector}}, code=~"5.." }'
    requests: 'http_requests_total{ {{selector}} }'
"#;

/// `without` is never batched (asked alone); `by (code)` answers two series per member, so its
/// batch cannot be split and falls back per member (each then sees its own ambiguity).
const HOSTILE_METRICS: &str = r#"
  - name: errors_without
    query: sum without (instance, job, code) (rate(http_requests_total{ {{selector}} }[4s]))
    rollback_above: 1000
  - name: by_code
    query: sum by (code) (rate(http_requests_total{ {{selector}} }[4s]))
    rollback_above: 1000
"#;

fn rule(index: usize, service: &str, metrics: &str) -> Rule {
    batch_support::service_rule("batch.yaml", index, service, "1h", metrics)
}

/// Range queries Prometheus has answered so far (every status code).
async fn range_queries(prometheus: &PrometheusProcess) -> u64 {
    let text = reqwest::get(format!("{}/metrics", prometheus.url()))
        .await
        .expect("prometheus /metrics")
        .text()
        .await
        .expect("body");
    text.lines()
        .filter(|l| l.starts_with("prometheus_http_requests_total{"))
        .filter(|l| l.contains("handler=\"/api/v1/query_range\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Runs `f` and returns its result with the range queries it cost and how long it took, waiting (bounded) for
/// Prometheus to count the last ones: it counts a request after the answer is written.
async fn counted<T>(
    prometheus: &PrometheusProcess,
    expected: u64,
    f: impl std::future::Future<Output = T>,
) -> (T, u64, Duration) {
    let before = range_queries(prometheus).await;
    let started = Instant::now();
    let out = f.await;
    let took = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let cost = range_queries(prometheus).await - before;
        if cost >= expected || Instant::now() > deadline {
            return (out, cost, took);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn close(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

fn same_series(a: &Series, b: &Series) -> bool {
    match (a, b) {
        (Series::Points { points: a }, Series::Points { points: b }) => {
            a.len() == b.len()
                && a.iter()
                    .zip(b)
                    .all(|(p, q)| p.at == q.at && close(p.value, q.value))
        }
        (Series::Failed { .. }, Series::Failed { .. }) => true,
        _ => a == b,
    }
}

fn assert_same(batched: &[Gathered], single: &[Gathered]) {
    assert_eq!(batched.len(), single.len());
    for (b, s) in batched.iter().zip(single) {
        assert_eq!(
            b.metrics.keys().collect::<Vec<_>>(),
            s.metrics.keys().collect::<Vec<_>>()
        );
        for (name, fb) in &b.metrics {
            if let Fetched::Counters(counters) = fb {
                // Instant queries at the same `end`: read per rollout either way.
                assert_eq!(Some(fb), s.metrics.get(name), "{name}");
                assert!(counters.is_ok(), "{name}: {counters:?}");
                continue;
            }
            let (
                Fetched::Window {
                    canary: bc,
                    baseline: bb,
                },
                Some(Fetched::Window {
                    canary: sc,
                    baseline: sb,
                }),
            ) = (fb, s.metrics.get(name))
            else {
                panic!("{name}: not window data");
            };
            assert!(
                same_series(bc, sc),
                "{name} canary\nbatched {bc:?}\nsingle {sc:?}"
            );
            assert!(
                same_series(bb, sb),
                "{name} baseline\nbatched {bb:?}\nsingle {sb:?}"
            );
        }
    }
}

fn assert_same_ticks(a: &[Tick], b: &[Tick]) {
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.score.outcome, y.score.outcome);
        assert!(close(x.score.value, y.score.value));
        for (c, d) in x.checks.iter().zip(&y.checks) {
            assert_eq!(
                (&c.metric, c.verdict),
                (&d.metric, d.verdict),
                "{c:?}\n{d:?}"
            );
            let opt = |p: Option<f64>, q: Option<f64>| match (p, q) {
                (Some(p), Some(q)) => close(p, q),
                (p, q) => p == q,
            };
            assert!(
                opt(c.canary, d.canary) && opt(c.baseline, d.baseline),
                "{c:?}\n{d:?}"
            );
        }
    }
}

fn judged(rules: &[Rule], rollouts: &[Rollout], gathered: &[Gathered]) -> Vec<Tick> {
    rules
        .iter()
        .zip(rollouts)
        .zip(gathered)
        .map(|((r, o), g)| judge_gathered(r, o, g))
        .collect()
}

fn source(url: &str, cap: Option<usize>) -> PrometheusSource {
    let s = PrometheusSource::new(&PrometheusConfig {
        url: url.to_string(),
        timeout: Duration::from_secs(10),
        bearer_token: None,
        basic_auth: None,
    })
    .expect("source");
    match cap {
        Some(bytes) => s.with_max_response_bytes(bytes),
        None => s,
    }
}

fn points(s: &Series) -> usize {
    match s {
        Series::Points { points } => points.len(),
        _ => 0,
    }
}

/// The named services, then (with `CANARYD_BATCH_SERVICES=N` above 7, for measuring) plain ones
/// up to N, their error rates spread between healthy and failing.
fn services() -> Vec<(String, f64, f64)> {
    let n: usize = std::env::var("CANARYD_BATCH_SERVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(SERVICES.len());
    let mut all: Vec<(String, f64, f64)> = SERVICES
        .iter()
        .map(|(n, e, l)| (n.to_string(), *e, *l))
        .collect();
    for i in SERVICES.len()..n {
        all.push((format!("extra-{i}"), 0.001 * (i % 100) as f64, 0.12));
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_and_single_queries_judge_alike_on_a_real_prometheus() {
    let all = services();
    let (_services, prometheus) =
        scraped_services(all.iter().map(|(n, e, l)| (n.as_str(), *e, *l))).await;
    let rules: Vec<Rule> = all
        .iter()
        .enumerate()
        .map(|(i, (name, _, _))| rule(i, name, METRICS))
        .collect();
    let rollouts: Vec<Rollout> = rules.iter().map(rollout).collect();
    let pairs: Vec<(&Rule, &Rollout)> = rules.iter().zip(&rollouts).collect();
    let src = source(&prometheus.url(), None);
    let window = Duration::from_secs(10);

    // Until every service has a full window of rates (a condition, not a sleep).
    let deadline = Instant::now() + Duration::from_secs(60);
    let end = loop {
        let end = SystemTime::now() - Duration::from_secs(3);
        let g = fetch_many(&src, &pairs, end, window, false).await;
        let full = g.iter().all(|g| {
            g.metrics.values().all(|f| match f {
                Fetched::Window { canary, baseline } => {
                    points(canary) >= 8 && points(baseline) >= 8
                }
                Fetched::Counters(c) => c.is_ok(),
            })
        });
        if full {
            break end;
        }
        assert!(Instant::now() < deadline, "no full window in 60 s: {g:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };

    // 1. Alike rules: one query per metric shape instead of two per metric per rollout.
    let n = all.len() as u64;
    // One query per metric shape: a regex batch up to the member cap, a wide one above it.
    let per_shape = 1;
    // What a shape costs before its members are asked alone: the wide query, then its regex
    // batches (one when the group fits the cap, and then there is no wide query).
    let regex_batches = (2 * n).div_ceil(Limits::default().max_members as u64);
    let before_members = if regex_batches > 1 {
        1 + regex_batches
    } else {
        1
    };
    let (single, single_cost, single_time) = counted(
        &prometheus,
        8 * n,
        fetch_many(&src, &pairs, end, window, false),
    )
    .await;
    let (batched, batched_cost, batched_time) = counted(
        &prometheus,
        4 * per_shape,
        fetch_many(&src, &pairs, end, window, true),
    )
    .await;
    // Again, as on the next tick: the shapes and rewrites are remembered.
    let (again, again_cost, again_time) = counted(
        &prometheus,
        4 * per_shape,
        fetch_many(&src, &pairs, end, window, true),
    )
    .await;
    println!(
        "range queries for {n} rollouts x 4 metrics: unbatched {single_cost} in {single_time:?}, batched {batched_cost} in {batched_time:?} (first tick, parsing every query), {again_cost} in {again_time:?} (next tick)"
    );
    assert_eq!(
        (single_cost, batched_cost, again_cost),
        (8 * n, 4 * per_shape, 4 * per_shape)
    );
    assert_same(&again, &single);
    assert_same(&batched, &single);
    let (tb, ts) = (
        judged(&rules, &rollouts, &batched),
        judged(&rules, &rollouts, &single),
    );
    assert_same_ticks(&tb, &ts);
    let verdicts: Vec<Verdict> = tb
        .iter()
        .flat_map(|t| t.checks.iter().map(|c| c.verdict))
        .collect();
    assert!(
        verdicts.contains(&Verdict::Pass) && verdicts.contains(&Verdict::Fail),
        "the services must judge differently for the comparison to mean something: {verdicts:?}"
    );

    // 2. A batch Prometheus cannot answer (larger than the cap) falls back per member.
    let capped = source(&prometheus.url(), Some(2500));
    let (fallback, cost, _) = counted(
        &prometheus,
        4 * before_members + 8 * n,
        fetch_many(&capped, &pairs, end, window, true),
    )
    .await;
    assert_eq!(
        cost,
        4 * before_members + 8 * n,
        "every batch failed and each member was asked alone"
    );
    assert_same(&fallback, &single);
    assert_same_ticks(&judged(&rules, &rollouts, &fallback), &ts);

    // 3. Shapes that cannot be batched, and a batch answer that cannot be split.
    let hostile: Vec<Rule> = all
        .iter()
        .enumerate()
        .map(|(i, (name, _, _))| rule(i, name, HOSTILE_METRICS))
        .collect();
    let hostile_pairs: Vec<(&Rule, &Rollout)> = hostile.iter().zip(&rollouts).collect();
    let (single, _, _) = counted(
        &prometheus,
        4 * n,
        fetch_many(&src, &hostile_pairs, end, window, false),
    )
    .await;
    let (batched, cost, _) = counted(
        &prometheus,
        before_members + 4 * n,
        fetch_many(&src, &hostile_pairs, end, window, true),
    )
    .await;
    assert_eq!(
        cost,
        2 * n + before_members + 2 * n,
        "without: alone; by (code): one batch, then per member"
    );
    assert_same(&batched, &single);
    for g in &batched {
        assert!(matches!(
            g.metrics.get("by_code"),
            Some(Fetched::Window {
                canary: Series::Ambiguous { series: 2 },
                ..
            })
        ));
    }
    assert_same_ticks(
        &judged(&hostile, &rollouts, &batched),
        &judged(&hostile, &rollouts, &single),
    );

    // 5. The wide mode on a real Prometheus: with a member cap of 4, every shape is one query
    // with the varying matchers dropped, whose answer also carries the services not under
    // rollout (the last two are left out); each member still gets exactly its own series.
    let narrow = Limits {
        max_members: 4,
        ..Limits::default()
    };
    let some = &pairs[..pairs.len() - 2];
    let (single_some, _, _) = counted(
        &prometheus,
        8 * (n - 2),
        fetch_many(&src, some, end, window, false),
    )
    .await;
    let (wide, wide_cost, _) = counted(
        &prometheus,
        4,
        fetch_many_by(&src, some, end, window, true, &narrow, None),
    )
    .await;
    assert_eq!(wide_cost, 4, "one wide query per metric shape");
    assert_same(&wide, &single_some);
    assert_same_ticks(
        &judged(&rules[..some.len()], &rollouts[..some.len()], &wide),
        &judged(&rules[..some.len()], &rollouts[..some.len()], &single_some),
    );
    // A wide answer over the cap falls back to the regex batches (then per member).
    let capped_some = source(&prometheus.url(), Some(2500));
    let fallback = fetch_many_by(&capped_some, some, end, window, true, &narrow, None).await;
    assert_same(&fallback, &single_some);

    // 4. Nothing can be read: batch and fallback fail, and no metric passes.
    let starved = source(&prometheus.url(), Some(64));
    let failed = fetch_many(&starved, &pairs, end, window, true).await;
    for t in judged(&rules, &rollouts, &failed) {
        assert!(!t.all_healthy(), "{t:?}");
        assert!(
            t.checks.iter().all(|c| c.verdict == Verdict::Error),
            "{:?}",
            t.checks
        );
    }
}
