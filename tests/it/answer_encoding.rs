//! `prometheus.compress` and `canaryd_prometheus_answer_bytes_total{encoding}` (BENCHMARKS.md,
//! "Scale — session 12"): with compression off canaryd sends no `Accept-Encoding`, a real
//! Prometheus answers plain, and every series and verdict is the one the compressed answer
//! gave; the bytes read are counted by the encoding they came in, so a proxy that strips the
//! compression shows up as `identity`.

use std::time::{Duration, Instant, SystemTime};

use canaryd::controller::analysis::{Fetched, Gathered, judge_gathered};
use canaryd::controller::gather_many::fetch_many;
use canaryd::judge::observation::Series;
use canaryd::rollout::Rollout;
use canaryd::rules::Rule;
use canaryd::source::PrometheusSource;
use canaryd::verdict::Verdict;

use crate::batch_support::{rollout, scraped_services};
use crate::common::{self, Daemon, RuleOpts, Stack, check_of};
use crate::fake_http::{Answer, FakeHttp, gzip, last_minute, source_at};

const MATRIX: &str = r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1,"0.5"],[2,"0.25"]]}]}}"#;
const BYTES: &str = "canaryd_prometheus_answer_bytes_total";

fn source(url: &str) -> PrometheusSource {
    source_at(url, Duration::from_secs(10))
}

/// `(gzip, identity)` bytes in an exposition (0 for a series not there yet).
fn answer_bytes(exposition: &str) -> (f64, f64) {
    let of = |encoding: &str| {
        let series = format!("{BYTES}{{encoding=\"{encoding}\"}} ");
        exposition
            .lines()
            .find_map(|l| l.strip_prefix(series.as_str())?.trim().parse().ok())
            .unwrap_or(0.0)
    };
    (of("gzip"), of("identity"))
}

async fn one_range(src: &PrometheusSource) -> Series {
    last_minute(src, "x").await
}

#[tokio::test]
async fn answer_bytes_are_counted_by_the_encoding_they_came_in() {
    let metrics = canaryd::telemetry::install_metrics().expect("recorder");
    let gz = gzip(MATRIX.as_bytes());
    let plain = FakeHttp::start(Answer::plain(MATRIX)).await;
    let compressed = FakeHttp::start(Answer::encoded("gzip", gz.clone())).await;

    // Compression off: no Accept-Encoding; the plain answer is read and counted as identity.
    let before = answer_bytes(&metrics.render());
    let off = one_range(&source(&plain.url()).with_compression(false)).await;
    assert!(
        matches!(off, Series::Points { ref points } if points.len() == 2),
        "{off:?}"
    );
    let head = plain.last_head();
    assert!(head.contains("post /api/v1/query_range"), "{head}");
    assert!(!head.contains("accept-encoding"), "{head}");
    let after = answer_bytes(&metrics.render());
    // At least: other tests sharing this process (`cargo test`) only add.
    assert!(
        after.1 - before.1 >= MATRIX.len() as f64,
        "{before:?} {after:?}"
    );

    // On (the default): asked gzip, counted as gzip by its bytes on the wire.
    let on = one_range(&source(&compressed.url())).await;
    assert_eq!(format!("{on:?}"), format!("{off:?}"));
    assert!(compressed.last_head().contains("accept-encoding: gzip"));
    let last = answer_bytes(&metrics.render());
    assert!(last.0 - after.0 >= gz.len() as f64, "{after:?} {last:?}");

    // A plain answer to a gzip request (a proxy that strips the encoding) is identity bytes.
    let stripped = one_range(&source(&plain.url())).await;
    assert!(plain.last_head().contains("accept-encoding: gzip"));
    assert_eq!(format!("{stripped:?}"), format!("{off:?}"));
    let end = answer_bytes(&metrics.render());
    assert!(end.1 - last.1 >= MATRIX.len() as f64, "{last:?} {end:?}");
}

/// Window metrics and a sequential one (counters, read by instant queries).
const METRICS: &str = r#"
  - name: error_rate
    query: |
      sum(rate(http_requests_total{ {{selector}}, code=~"5.." }[4s]))
        / sum(rate(http_requests_total{ {{selector}} }[4s]))
    rollback_above: 0.05
  - name: p95_latency
    query: histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket{ {{selector}} }[4s])))
    rollback_above: 1.5
  - name: errors_vs_baseline
    test: sequential
    events: 'http_requests_total{ {{selector}}, code=~"5.." }'
    requests: 'http_requests_total{ {{selector}} }'
"#;

fn rule(index: usize, service: &str) -> Rule {
    crate::batch_support::service_rule("encoding.yaml", index, service, "1h", METRICS)
}

fn full(g: &[Gathered]) -> bool {
    g.iter().all(|g| {
        g.metrics.values().all(|f| match f {
            Fetched::Window { canary, baseline } => [canary, baseline]
                .iter()
                .all(|s| matches!(s, Series::Points { points } if points.len() >= 8)),
            Fetched::Counters(c) => c.is_ok(),
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_and_compressed_answers_judge_alike_on_a_real_prometheus() {
    let services = [
        ("enc-ok", 0.0005, 0.12),
        ("enc-errors", 0.2, 0.12),
        ("enc-slow", 0.0005, 2.0),
    ];
    let (_services, prometheus) = scraped_services(services).await;
    let rules: Vec<Rule> = services
        .iter()
        .enumerate()
        .map(|(i, s)| rule(i, s.0))
        .collect();
    let rollouts: Vec<Rollout> = rules.iter().map(rollout).collect();
    let pairs: Vec<(&Rule, &Rollout)> = rules.iter().zip(&rollouts).collect();
    let (on, off) = (
        source(&prometheus.url()),
        source(&prometheus.url()).with_compression(false),
    );
    let window = Duration::from_secs(10);
    let deadline = Instant::now() + Duration::from_secs(60);
    let end = loop {
        let end = SystemTime::now() - Duration::from_secs(3);
        let g = fetch_many(&on, &pairs, end, window, false).await;
        if full(&g) {
            break end;
        }
        assert!(Instant::now() < deadline, "no full window in 60 s: {g:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // Batched (the split read as it streams) and per rollout (the plain parser), both ways.
    for batched in [true, false] {
        let plain = fetch_many(&off, &pairs, end, window, batched).await;
        let compressed = fetch_many(&on, &pairs, end, window, batched).await;
        assert!(full(&plain), "{plain:?}");
        // Debug, not ==: a NaN point is the same NaN either way.
        assert_eq!(
            format!("{plain:?}"),
            format!("{compressed:?}"),
            "batched {batched}"
        );
        let verdicts = |g: &[Gathered]| -> Vec<Verdict> {
            let ticks = rules.iter().zip(&rollouts).zip(g);
            ticks
                .flat_map(|((r, o), g)| judge_gathered(r, o, g).checks)
                .map(|c| c.verdict)
                .collect()
        };
        let (vp, vc) = (verdicts(&plain), verdicts(&compressed));
        assert_eq!(vp, vc);
        assert!(
            vp.contains(&Verdict::Pass) && vp.contains(&Verdict::Fail),
            "the services must judge differently for the comparison to mean something: {vp:?}"
        );
    }
}

/// Polls `daemon`'s metrics until `rollout` has a verdict for every metric and answer bytes were
/// read; returns `(gzip, identity)`.
async fn ticked(daemon: &Daemon, rollout: &str) -> (f64, f64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = daemon.rollout(rollout).await;
        let bytes = answer_bytes(&daemon.metrics().await);
        let judged = ["error_rate", "p95_latency"]
            .iter()
            .all(|m| check_of(&r, m).is_some_and(|c| c["verdict"] == "pass"));
        if judged && bytes.0 + bytes.1 > 0.0 {
            return bytes;
        }
        assert!(
            Instant::now() < deadline,
            "no judged tick in 30 s: {r}\n{}",
            common::tail(&daemon.log_text(), 20)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_reads_gzip_by_default_and_plain_with_compress_off() {
    let opts = RuleOpts {
        hold: "1h",
        ..RuleOpts::default()
    };
    let stack = Stack::start("encoding", opts).await;
    let id = stack.start_at_first_step("v2").await;
    let (gzip, identity) = ticked(&stack.daemon, &id).await;
    assert!(
        gzip > 0.0 && identity == 0.0,
        "gzip {gzip}, identity {identity}"
    );

    // A second daemon on the same Prometheus and rule, its own state, compression off.
    let dir = tempfile::tempdir().expect("tempdir");
    let off = Daemon::start(
        &stack.prometheus.url(),
        &[stack.rule_path()],
        dir.path(),
        &["--prometheus-compress", "false"],
    )
    .await;
    let id = off.start_rollout("encoding", "v2").await;
    let (gzip, identity) = ticked(&off, &id).await;
    assert!(
        gzip == 0.0 && identity > 0.0,
        "gzip {gzip}, identity {identity}"
    );
}
