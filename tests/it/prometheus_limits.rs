//! Prometheus answers are bounded (issue 9, finding 10): an endpoint that streams an endless
//! body as fast as it can grew canaryd's memory to 1.5 GB. Now the answer is read up to a cap,
//! the query fails at once with an error that names the cap, and the judge calls it `error`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use canaryd::judge::observation::Series;
use canaryd::rollout::Rollout;
use canaryd::source::PrometheusSource;
use canaryd::source::batch::Members;
use canaryd::source::batch_split::Extra;
use canaryd::source::prometheus::{DEFAULT_MAX_RESPONSE_BYTES, QueryFailure};
use canaryd::verdict::Verdict;

use crate::fake_http::{Answer, Body, FakeHttp, peak_rss_kib, source_at};

/// A fake Prometheus answering every request with `body`, a matrix answer without end.
async fn fake_prometheus(body: Body) -> FakeHttp {
    FakeHttp::start(Answer::streaming(body)).await
}

fn source(addr: SocketAddr) -> PrometheusSource {
    // Long: the cap, not the timeout, must be what stops the read.
    source_at(&format!("http://{addr}"), Duration::from_secs(30))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_prometheus_body_fails_the_query_fast_with_bounded_memory() {
    let fake = fake_prometheus(Body::Endless).await;
    let before = peak_rss_kib();
    let started = Instant::now();
    let answer = source(fake.addr)
        .range_series(
            "up",
            SystemTime::now(),
            Duration::from_secs(60),
            Duration::from_secs(1),
        )
        .await;
    let took = started.elapsed();
    let grew_mib = peak_rss_kib().saturating_sub(before) / 1024;
    let sent_mib = fake.written() / (1024 * 1024);
    println!(
        "endless body: failed after {took:?}, server wrote {sent_mib} MiB, peak RSS grew {grew_mib} MiB"
    );
    let Series::Failed { message } = answer else {
        panic!("an endless body must fail the query: {answer:?}")
    };
    assert!(message.contains("max_response_bytes"), "{message}");
    assert!(
        message.contains(&DEFAULT_MAX_RESPONSE_BYTES.to_string()),
        "{message}"
    );
    assert!(
        took < Duration::from_secs(10),
        "took {took:?}: the cap must stop the read"
    );
    // The cap (16 MiB) plus what sits in socket buffers, not the gigabytes a timeout would allow.
    assert!(
        sent_mib < 96,
        "server wrote {sent_mib} MiB before canaryd stopped reading"
    );
    assert!(grew_mib < 128, "peak RSS grew {grew_mib} MiB");
}

#[tokio::test]
async fn an_endless_batch_answer_is_split_never_and_is_an_unusable_answer() {
    let fake = fake_prometheus(Body::Endless).await;
    let labels = vec!["service".to_string()];
    let keys = vec![vec!["a".to_string()]];
    let answer = source(fake.addr)
        .with_max_response_bytes(256 * 1024)
        .range_split(
            "sum by (service) (up)",
            SystemTime::now(),
            Duration::from_secs(60),
            Duration::from_secs(1),
            Members {
                labels: labels.into(),
                keys: keys.into(),
                extra: Extra::Unlabelled,
            },
        )
        .await;
    // Unusable, not "no answer": the batch is asked again in smaller pieces, never passed.
    let Err(QueryFailure::Unusable(message)) = answer else {
        panic!("an endless body must fail the batch as unusable: {answer:?}")
    };
    assert!(
        message.contains("max_response_bytes (262144 bytes"),
        "{message}"
    );
}

#[tokio::test]
async fn an_announced_oversized_body_is_refused_before_it_is_read() {
    let fake = fake_prometheus(Body::Announced(5 * 1024 * 1024)).await;
    let answer = source(fake.addr)
        .with_max_response_bytes(1024 * 1024)
        .instant_series("up", SystemTime::now())
        .await;
    let message = answer.expect_err("over the cap is an error");
    assert!(
        message.contains("max_response_bytes (1048576 bytes"),
        "{message}"
    );
    assert!(message.contains("5242880 bytes announced"), "{message}");
    // Refused on the header: the body was never read to the end.
    assert!(fake.written() < 5 * 1024 * 1024);
}

#[tokio::test]
async fn a_capped_answer_is_an_error_verdict_never_a_pass() {
    let fake = fake_prometheus(Body::Endless).await;
    let rule = canaryd::rules::parse_rule(
        Path::new("api.yaml"),
        r#"name: api
selector:
  canary: 'track="canary"'
  baseline: 'track="baseline"'
steps:
  - { weight: 5, hold: 30s }
  - { weight: 100 }
metrics:
  - name: error_rate
    query: 'sum(rate(errors{ {{selector}} }[1m]))'
    rollback_above: 0.05
"#,
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    let mut r = Rollout::new("ro".into(), "api".into(), "v2".into(), chrono::Utc::now());
    r.step_started_at = Some(chrono::Utc::now() - chrono::Duration::hours(1));
    let source = source(fake.addr).with_max_response_bytes(256 * 1024);
    let tick = canaryd::controller::analysis::gather(
        &source,
        &rule,
        &r,
        SystemTime::now(),
        Duration::from_secs(600),
    )
    .await;
    let c = &tick.checks[0];
    assert_eq!(c.verdict, Verdict::Error, "{c:?}");
    assert!(c.reason.contains("max_response_bytes"), "{}", c.reason);
    assert!(!tick.all_healthy());
}
