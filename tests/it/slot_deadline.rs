//! A slot whose ticks reach their deadline judges what arrived. On a real Prometheus behind a
//! loopback proxy that delays one metric's whole-window queries past the tick's deadline: that
//! metric is `error` for every rollout (named as missing the deadline), the others are judged
//! with their values, and the tick does not advance the step. The whole window, asked to fill
//! the window cache with its own longer bound, finishes in the background, so the next tick
//! asks only the rest and has every metric. Without batching (one rollout's own queries), the
//! late metric alone is `error` too.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crate::batch_support;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use batch_support::{rollout, scraped_services};
use canaryd::controller::analysis::{Fetched, Gathered, judge_gathered};
use canaryd::controller::gather::{SlotGathering, gather_slot};
use canaryd::controller::gather_many::fetch_many_by;
use canaryd::judge::observation::Series;
use canaryd::rollout::machine::{Action, Event, handle};
use canaryd::rollout::plan::Plan;
use canaryd::rollout::{Rollout, Tick};
use canaryd::rules::Rule;
use canaryd::source::batch::Limits;
use canaryd::source::{PrometheusConfig, PrometheusSource};
use canaryd::verdict::Verdict;

const SERVICES: &[(&str, f64, f64)] = &[
    ("svc-a", 0.0005, 0.12),
    ("svc-b", 0.0005, 0.12),
    ("svc-c", 0.0005, 0.12),
];
/// The metric whose whole windows answer late.
const SLOW: &str = "process_cpu_seconds_total";
const WINDOW_S: f64 = 10.0;
/// How late: past the tick's deadline, within the fill's bound.
const DELAY: Duration = Duration::from_secs(5);
const DEADLINE: Duration = Duration::from_secs(2);

/// Three metrics; the last reads [`SLOW`]'s series.
const METRICS: &str = r#"
  - name: error_rate
    query: |
      sum(rate(http_requests_total{ {{selector}}, code=~"5.." }[4s]))
        / sum(rate(http_requests_total{ {{selector}} }[4s]))
    rollback_above: 0.05
  - name: p95_latency
    query: histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket{ {{selector}} }[4s])))
    rollback_above: 0.5
  - name: cpu_utilization
    query: avg(rate(process_cpu_seconds_total{ {{selector}} }[4s]))
    rollback_above: 100
"#;

fn rule(index: usize, service: &str) -> Rule {
    assert!(
        METRICS.contains(SLOW),
        "the slow metric is one of the rule's"
    );
    batch_support::service_rule("slot_deadline.yaml", index, service, "30s", METRICS)
}

#[derive(Clone)]
struct Proxy {
    upstream: String,
    http: reqwest::Client,
    delayed: Arc<AtomicUsize>,
}

/// Whether a form-encoded range query asks `SLOW` over a whole window.
fn whole_slow_window(uri: &Uri, body: &[u8]) -> bool {
    if !uri.path().ends_with("/query_range") {
        return false;
    }
    let Ok(parsed) = reqwest::Url::parse(&format!("http://x/?{}", String::from_utf8_lossy(body)))
    else {
        return false;
    };
    let form: Vec<(String, String)> = parsed.query_pairs().into_owned().collect();
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let num = |k: &str| get(k).and_then(|v| v.parse::<f64>().ok());
    let span = num("end").zip(num("start")).map(|(e, s)| e - s);
    get("query").is_some_and(|q| q.contains(SLOW)) && span.is_some_and(|s| s >= WINDOW_S)
}

async fn forward(
    State(p): State<Proxy>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, HeaderMap, Bytes) {
    if whole_slow_window(&uri, &body) {
        p.delayed.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(DELAY).await;
    }
    let path = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let mut req = p.http.request(method, format!("{}{path}", p.upstream));
    if let Some(ct) = headers.get("content-type") {
        req = req.header("content-type", ct);
    }
    let Ok(answer) = req.body(body).send().await else {
        return (StatusCode::BAD_GATEWAY, HeaderMap::new(), Bytes::new());
    };
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut out = HeaderMap::new();
    if let Some(ct) = answer.headers().get("content-type") {
        out.insert("content-type", ct.clone());
    }
    (status, out, answer.bytes().await.unwrap_or_default())
}

/// A proxy to `upstream` on a free loopback port; counts the queries it delayed.
async fn delaying_proxy(upstream: String) -> (String, Arc<AtomicUsize>) {
    let delayed = Arc::new(AtomicUsize::new(0));
    let state = Proxy {
        upstream,
        http: reqwest::Client::new(),
        delayed: delayed.clone(),
    };
    let app = axum::Router::new().fallback(forward).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, delayed)
}

fn source(url: &str) -> PrometheusSource {
    PrometheusSource::new(&PrometheusConfig {
        url: url.to_string(),
        timeout: Duration::from_secs(2),
        bearer_token: None,
        basic_auth: None,
    })
    .expect("source")
    .with_fill_timeout(Duration::from_secs(20))
    .with_incremental_windows(Some(Duration::from_secs(2)))
}

fn points(s: &Series) -> usize {
    match s {
        Series::Points { points } => points.len(),
        _ => 0,
    }
}

/// Until every service has a full window of every metric (a condition, not a sleep).
async fn warm(url: &str, pairs: &[(&Rule, &Rollout)]) -> SystemTime {
    let direct = source(url).with_incremental_windows(None);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let end = SystemTime::now() - Duration::from_secs(3);
        let window = Duration::from_secs(10);
        let g = fetch_many_by(&direct, pairs, end, window, true, &Limits::default(), None).await;
        let full = g.iter().all(|g| {
            g.metrics.values().all(|f| match f {
                Fetched::Window { canary, baseline } => {
                    points(canary) >= 8 && points(baseline) >= 8
                }
                Fetched::Counters(c) => c.is_ok(),
            })
        });
        if full {
            return end;
        }
        assert!(Instant::now() < deadline, "no full window in 60 s: {g:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn judged(rule: &Rule, r: &Rollout, g: &Gathered) -> Tick {
    judge_gathered(rule, r, g)
}

/// The late metric is `error` with the deadline named; every other one judged with values.
fn assert_only_the_slow_metric_missed(tick: &Tick, what: &str) {
    assert_eq!(tick.checks.len(), 3, "{what}: {tick:?}");
    for c in &tick.checks {
        if &*c.metric == "cpu_utilization" {
            assert_eq!(c.verdict, Verdict::Error, "{what}: {c:?}");
            assert!(
                c.reason.contains("tick's deadline of 2s"),
                "{what}: {}",
                c.reason
            );
        } else {
            assert_eq!(c.verdict, Verdict::Pass, "{what}: {c:?}");
            assert!(c.canary.is_some() && c.baseline.is_some(), "{what}: {c:?}");
        }
    }
    assert!(!tick.all_healthy(), "{what}");
}

fn advances(r: &Rollout, plan: &Plan, tick: Tick) -> bool {
    let decided = handle(r, plan, Event::Tick(tick), chrono::Utc::now());
    decided.rollout.step != r.step
        || decided
            .actions
            .iter()
            .any(|a| matches!(a, Action::SetWeight { .. } | Action::Promote))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_metric_is_error_alone_and_its_whole_window_still_fills_the_cache() {
    let (_services, prometheus) = scraped_services(SERVICES.iter().copied()).await;
    let rules: Vec<Rule> = SERVICES
        .iter()
        .enumerate()
        .map(|(i, (name, _, _))| rule(i, name))
        .collect();
    let rollouts: Vec<Rollout> = rules.iter().map(rollout).collect();
    let pairs: Vec<(&Rule, &Rollout)> = rules.iter().zip(&rollouts).collect();
    let end = warm(&prometheus.url(), &pairs).await;
    let upstream = prometheus.url().trim_end_matches('/').to_string();
    let (url, delayed) = delaying_proxy(upstream).await;
    let src = source(&url);
    let limits = Limits::default();

    let started = tokio::time::Instant::now();
    let first = gather_slot(
        &src,
        &pairs,
        end,
        &SlotGathering {
            limits,
            started,
            deadline: DEADLINE,
        },
    )
    .await;
    // The slot-wide safety net would have left every rollout without an answer.
    assert_eq!(first.len(), pairs.len(), "every rollout has an answer");
    assert_eq!(
        delayed.load(Ordering::SeqCst),
        1,
        "one batch of the slow shape"
    );
    for ((rule, r), g) in pairs.iter().zip(&first) {
        let tick = judged(rule, r, g);
        assert_only_the_slow_metric_missed(&tick, "first tick");
        let plan = Plan::from_rule(rule);
        assert!(
            !advances(r, &plan, tick),
            "a tick with a late metric advanced"
        );
    }

    // The whole window was not cut with the tick: it fills the cache in the background.
    let deadline = Instant::now() + DELAY * 3;
    while src.fills_in_flight() != Some(0) {
        assert!(Instant::now() < deadline, "the fill never ended");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let next = end + Duration::from_secs(1);
    let started = tokio::time::Instant::now();
    let second = gather_slot(
        &src,
        &pairs,
        next,
        &SlotGathering {
            limits,
            started,
            deadline: DEADLINE,
        },
    )
    .await;
    assert_eq!(delayed.load(Ordering::SeqCst), 1, "only the rest was asked");
    let (whole, in_part) = src.windows_asked().expect("incremental windows on");
    assert_eq!((whole, in_part), (3, 3), "three shapes, whole then in part");
    for ((rule, r), g) in pairs.iter().zip(&second) {
        let tick = judged(rule, r, g);
        for c in &tick.checks {
            assert_eq!(c.verdict, Verdict::Pass, "second tick: {c:?}");
        }
        let plan = Plan::from_rule(rule);
        assert!(
            advances(r, &plan, tick),
            "a tick with every metric healthy advances"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_batching_the_late_metric_alone_is_error() {
    let (_services, prometheus) = scraped_services(SERVICES[..2].iter().copied()).await;
    let rules: Vec<Rule> = SERVICES[..2]
        .iter()
        .enumerate()
        .map(|(i, (name, _, _))| rule(i, name))
        .collect();
    let rollouts: Vec<Rollout> = rules.iter().map(rollout).collect();
    let pairs: Vec<(&Rule, &Rollout)> = rules.iter().zip(&rollouts).collect();
    let end = warm(&prometheus.url(), &pairs).await;
    let upstream = prometheus.url().trim_end_matches('/').to_string();
    let (url, delayed) = delaying_proxy(upstream).await;
    let src = source(&url).with_batching(false);

    let started = tokio::time::Instant::now();
    let got = gather_slot(
        &src,
        &pairs,
        end,
        &SlotGathering {
            limits: Limits::default(),
            started,
            deadline: DEADLINE,
        },
    )
    .await;
    assert_eq!(got.len(), pairs.len(), "every rollout has an answer");
    // Canary and baseline of each rollout, asked alone.
    assert_eq!(delayed.load(Ordering::SeqCst), 2 * pairs.len());
    for ((rule, r), g) in pairs.iter().zip(&got) {
        let tick = judged(rule, r, g);
        assert_only_the_slow_metric_missed(&tick, "unbatched");
        assert!(!advances(r, &Plan::from_rule(rule), tick));
    }
}
