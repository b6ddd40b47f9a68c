//! Incremental windows on a real Prometheus: a source that reuses the settled points of its
//! last batch answers (`prometheus.incremental_windows`) and one that asks every window whole
//! must give every rollout the same series and the same verdicts, tick after tick, for regex
//! batches and wide ones — while the first asks most windows only in part.

use std::time::{Duration, Instant, SystemTime};

use crate::batch_support;

use batch_support::{rollout, scraped_services};
use canaryd::controller::analysis::{Fetched, Gathered, judge_gathered};
use canaryd::controller::gather_many::fetch_many_by;
use canaryd::judge::observation::Series;
use canaryd::rollout::Rollout;
use canaryd::rules::Rule;
use canaryd::source::batch::Limits;
use canaryd::source::{PrometheusConfig, PrometheusSource};

/// Names with regex metacharacters and a quote, canary error rate, canary median latency.
const SERVICES: &[(&str, f64, f64)] = &[
    ("svc-a", 0.0005, 0.12),
    ("x|y(z)", 0.09, 0.12),
    ("quo\"te", 0.0005, 0.9),
    ("pay.ments", 0.02, 0.3),
];

const METRICS: &str = r#"
  - name: error_rate
    query: |
      sum(rate(http_requests_total{ {{selector}}, code=~"5.." }[4s]))
        / sum(rate(http_requests_total{ {{selector}} }[4s]))
    rollback_above: 0.05
    warn_above: 0.01
  - name: p95_latency
    query: histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket{ {{selector}} }[4s])))
    rollback_above: 0.5
  - name: cpu_utilization
    query: avg(rate(process_cpu_seconds_total{ {{selector}} }[4s]))
    rollback_above: 0.9
"#;

fn rule(index: usize, service: &str) -> Rule {
    batch_support::service_rule("incremental.yaml", index, service, "1h", METRICS)
}

fn source(url: &str, settled_after: Option<Duration>) -> PrometheusSource {
    PrometheusSource::new(&PrometheusConfig {
        url: url.to_string(),
        timeout: Duration::from_secs(10),
        bearer_token: None,
        basic_auth: None,
    })
    .expect("source")
    .with_incremental_windows(settled_after)
}

fn points(s: &Series) -> usize {
    match s {
        Series::Points { points } => points.len(),
        _ => 0,
    }
}

/// Exactly equal: the reused points are the ones Prometheus computed before, bit for bit.
fn assert_same(incremental: &[Gathered], whole: &[Gathered], what: &str) {
    assert_eq!(incremental.len(), whole.len());
    for (a, b) in incremental.iter().zip(whole) {
        assert_eq!(a.metrics, b.metrics, "{what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reused_points_give_the_series_and_verdicts_of_whole_windows() {
    let (_services, prometheus) = scraped_services(SERVICES.iter().copied()).await;
    let rules: Vec<Rule> = SERVICES
        .iter()
        .enumerate()
        .map(|(i, (name, _, _))| rule(i, name))
        .collect();
    let rollouts: Vec<Rollout> = rules.iter().map(rollout).collect();
    let pairs: Vec<(&Rule, &Rollout)> = rules.iter().zip(&rollouts).collect();
    let whole = source(&prometheus.url(), None);
    let window = Duration::from_secs(10);
    let regex = Limits::default();
    // Two members per regex batch: the 8 (service, track) members of a shape are asked wide.
    let wide = Limits {
        max_members: 2,
        ..Limits::default()
    };

    // Until every service has a full window of rates (a condition, not a sleep).
    let deadline = Instant::now() + Duration::from_secs(60);
    let start = loop {
        let end = SystemTime::now() - Duration::from_secs(3);
        let g = fetch_many_by(&whole, &pairs, end, window, true, &regex, None).await;
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

    for (limits, what) in [(regex, "regex batches"), (wide, "wide batches")] {
        let incremental = source(&prometheus.url(), Some(Duration::from_secs(2)));
        // Ticks a second apart, as the rules' interval; ends 3 s in the past so a scrape
        // landing between the two sources' queries cannot make them differ at the newest point.
        let mut judged = Vec::new();
        for tick in 0..8u64 {
            let end = start + Duration::from_secs(tick);
            while SystemTime::now() < end + Duration::from_secs(3) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let a = fetch_many_by(&incremental, &pairs, end, window, true, &limits, None).await;
            let b = fetch_many_by(&whole, &pairs, end, window, true, &limits, None).await;
            assert_same(&a, &b, &format!("{what}, tick {tick}"));
            for ((r, o), (ga, gb)) in pairs.iter().zip(a.iter().zip(&b)) {
                let (ta, tb) = (judge_gathered(r, o, ga), judge_gathered(r, o, gb));
                assert_eq!(ta.checks, tb.checks, "{what}, tick {tick}");
                judged.push(ta);
            }
        }
        let (full, partial) = incremental.windows_asked().expect("incremental windows on");
        // One batch per metric shape and tick (3 shapes): whole on the first tick, in part after.
        assert!(
            partial >= 3 * 6 && full <= 3 * 2,
            "{what}: {full} windows asked whole, {partial} in part"
        );
        // Not vacuous: the rollouts saw data and the failing canary failed.
        assert!(
            judged
                .iter()
                .flat_map(|t| &t.checks)
                .any(|c| &*c.metric == "error_rate" && c.verdict == canaryd::verdict::Verdict::Fail),
            "{what}: x|y(z) at 9 % errors never failed"
        );
        assert!(
            judged
                .iter()
                .flat_map(|t| &t.checks)
                .filter(|c| c.verdict == canaryd::verdict::Verdict::Pass)
                .count()
                > 20,
            "{what}: too few passes to have compared anything"
        );
    }
    assert_eq!(whole.windows_asked(), None);
}
