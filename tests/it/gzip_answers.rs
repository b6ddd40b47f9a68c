//! Prometheus answers asked gzip-compressed (BENCHMARKS.md, "Scale — session 11"): the source
//! sends `Accept-Encoding: gzip`, reads a compressed answer as the uncompressed one, and bounds
//! the inflated bytes by `max_response_bytes` too. A fake endpoint serves what a real
//! Prometheus never would: a gzip bomb, a truncated or false gzip body, an unknown encoding.
//! That real Prometheus answers compressed and the verdicts stay the same is what the batch,
//! window and rollout suites (`batch_queries`, `incremental_windows`, …) run against.

use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use canaryd::judge::observation::Series;
use canaryd::source::PrometheusSource;
use canaryd::source::batch::Members;
use canaryd::source::batch_split::{Extra, Split};
use canaryd::source::prometheus::QueryFailure;

use crate::fake_http::{Answer, FakeHttp, gzip, last_minute, peak_rss_kib, source_at};

const MATRIX: &str = r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"service":"a"},"values":[[1,"0.5"],[2,"0.25"]]},{"metric":{"service":"b"},"values":[[1,"9"]]}]}}"#;
const ERROR: &str = r#"{"status":"error","errorType":"bad_data","error":"invalid parameter \"query\": 1:5: parse error: unexpected <by>"}"#;

/// About `mib` MiB of spaces after a canonical empty answer, from ~1 KiB per MiB: a compressed
/// MiB of spaces after a sync flush is a byte-aligned run of blocks that can be repeated.
fn bomb(mib: usize) -> Vec<u8> {
    let spaces = vec![b' '; 1024 * 1024];
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(br#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#)
        .expect("compress");
    e.write_all(&spaces).expect("compress");
    e.flush().expect("flush");
    let head = e.get_ref().len();
    e.write_all(&spaces).expect("compress");
    e.flush().expect("flush");
    let out = e.get_ref();
    let mut gz = out[..head].to_vec();
    for _ in 1..mib {
        gz.extend_from_slice(&out[head..]);
    }
    gz
}

fn source(addr: SocketAddr, cap: usize) -> PrometheusSource {
    source_at(&format!("http://{addr}"), Duration::from_secs(20)).with_max_response_bytes(cap)
}

async fn split(src: &PrometheusSource) -> Result<Split, QueryFailure> {
    src.range_split(
        "sum by (service) (rate(x[1m]))",
        SystemTime::now(),
        Duration::from_secs(60),
        Duration::from_secs(10),
        Members {
            labels: vec!["service".to_string()].into(),
            keys: vec![vec!["b".to_string()], vec!["a".to_string()]].into(),
            extra: Extra::Unlabelled,
        },
    )
    .await
}

async fn range(src: &PrometheusSource) -> Series {
    last_minute(src, "x").await
}

#[tokio::test]
async fn the_source_asks_for_gzip_and_reads_a_compressed_answer_as_the_plain_one() {
    let gz_fake = FakeHttp::start(Answer::encoded("gzip", gzip(MATRIX.as_bytes()))).await;
    let plain = FakeHttp::start(Answer::plain(MATRIX)).await;
    let (gz, plain) = (source(gz_fake.addr, 1 << 20), source(plain.addr, 1 << 20));
    let got = split(&gz).await;
    assert!(gz_fake.last_head().contains("accept-encoding: gzip"));
    let want = split(&plain).await;
    assert!(matches!(want, Ok(Ok(ref s)) if s.len() == 2), "{want:?}");
    assert_eq!(format!("{got:?}"), format!("{want:?}"));
    // The plain parser's path: two series are ambiguous for one rollout's query, both ways.
    assert_eq!(range(&gz).await, range(&plain).await);
    assert_eq!(range(&gz).await, Series::Ambiguous { series: 2 });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gzip_bomb_fails_too_large_without_being_inflated() {
    let cap = 2 * 1024 * 1024;
    // ~1 MiB compressed, 1 GiB of JSON once inflated: under the cap as read, 512× over it after.
    let body = bomb(1024);
    assert!(body.len() < cap, "{} bytes compressed", body.len());
    let fake = FakeHttp::start(Answer::encoded("gzip", body)).await;
    let src = source(fake.addr, cap);
    let before = peak_rss_kib();
    let answer = split(&src).await;
    let Err(QueryFailure::Unusable(message)) = answer else {
        panic!("a bomb must fail the batch as unusable: {answer:?}")
    };
    assert!(
        message.contains("max_response_bytes (2097152 bytes"),
        "{message}"
    );
    let Series::Failed { message } = range(&src).await else {
        panic!("a bomb must fail the query")
    };
    assert!(message.contains("more once inflated"), "{message}");
    let grew_mib = peak_rss_kib().saturating_sub(before) / 1024;
    assert!(
        grew_mib < 256,
        "peak RSS grew {grew_mib} MiB: the bomb was inflated"
    );
}

#[tokio::test]
async fn a_truncated_or_false_gzip_body_is_an_unusable_answer() {
    let gz = gzip(MATRIX.as_bytes());
    for body in [
        gz[..gz.len() / 2].to_vec(),
        gz[..gz.len() - 4].to_vec(),
        MATRIX.as_bytes().to_vec(),
    ] {
        let fake = FakeHttp::start(Answer::encoded("gzip", body)).await;
        let src = source(fake.addr, 1 << 20);
        let answer = split(&src).await;
        let Err(QueryFailure::Unusable(message)) = answer else {
            panic!("a broken gzip body must fail the batch as unusable: {answer:?}")
        };
        assert!(
            message.contains("gzip body that does not inflate"),
            "{message}"
        );
        let Series::Failed { message } = range(&src).await else {
            panic!("a broken gzip body must fail the query")
        };
        assert!(message.contains("does not inflate"), "{message}");
    }
}

#[tokio::test]
async fn a_compressed_error_answer_keeps_its_message() {
    let gz =
        FakeHttp::start(Answer::encoded("gzip", gzip(ERROR.as_bytes())).with_status(400)).await;
    let plain = FakeHttp::start(Answer::plain(ERROR).with_status(400)).await;
    let (gz, plain) = (source(gz.addr, 1 << 20), source(plain.addr, 1 << 20));
    let got = gz.instant_series("x", SystemTime::now()).await;
    let want = plain.instant_series("x", SystemTime::now()).await;
    let message = want.clone().expect_err("an error answer");
    assert!(
        message.contains("parse error: unexpected <by>"),
        "{message}"
    );
    assert_eq!(got, want);
    assert_eq!(
        format!("{:?}", split(&gz).await),
        format!("{:?}", split(&plain).await)
    );
}

#[tokio::test]
async fn another_content_encoding_is_an_error_that_names_it() {
    let fake = FakeHttp::start(Answer::encoded("br", MATRIX)).await;
    let src = source(fake.addr, 1 << 20);
    let message = src
        .instant_series("x", SystemTime::now())
        .await
        .expect_err("br is not read");
    assert!(message.contains("Content-Encoding \"br\""), "{message}");
    assert!(matches!(split(&src).await, Err(QueryFailure::Unusable(_))));
}
