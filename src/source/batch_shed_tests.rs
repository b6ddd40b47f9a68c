//! Unit tests of shedding: a batch that got no answer (Prometheus down, overloaded, too slow)
//! fails its members for the tick and sends nothing more; an answer that came but is unusable
//! is still asked again in smaller pieces. The last test reads
//! real HTTP answers from a loopback stand-in to show how `PrometheusSource` tells them apart.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use prometheus_http_query::response::Data;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::judge::observation::{Point, Series};
use crate::source::PrometheusConfig;

fn request(query: &str) -> RangeRequest {
    RangeRequest {
        query: query.to_string(),
        end: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        window: Duration::from_secs(600),
        step: Duration::from_secs(60),
    }
}

/// Canary and baseline of `n` services, for each of `shapes` (`{sel}` stands for the selector).
fn fleet(n: usize, shapes: &[&str]) -> Vec<RangeRequest> {
    let mut out = Vec::new();
    for shape in shapes {
        for i in 0..n {
            for track in ["canary", "baseline"] {
                let sel = format!("service=\"s{i:03}\", track=\"{track}\"");
                out.push(request(&shape.replace("{sel}", &sel)));
            }
        }
    }
    out
}

const ERRORS: &str = "sum(rate(http_requests_total{ {sel}, code=~\"5..\" }[1m])) / sum(rate(http_requests_total{ {sel} }[1m]))";

fn small() -> Limits {
    Limits {
        max_members: 10,
        ..Limits::default()
    }
}

/// Fails every batched or wide query with `batch`; answers a member's own query with one
/// point. Records every query.
struct Source {
    batch: QueryFailure,
    asked: Mutex<Vec<String>>,
}

impl Source {
    fn failing(batch: QueryFailure) -> Source {
        Source {
            batch,
            asked: Mutex::default(),
        }
    }

    fn asked(&self) -> usize {
        self.asked.lock().expect("lock").len()
    }
}

impl RangeSource for Source {
    async fn range_data(
        &self,
        query: &str,
        _: SystemTime,
        _: Duration,
        _: Duration,
    ) -> Result<Data, QueryFailure> {
        self.asked.lock().expect("lock").push(query.to_string());
        if query.contains("service=\"") {
            return Ok(serde_json::from_value(serde_json::json!({
                "resultType": "matrix",
                "result": [{"metric": {}, "values": [[1.0, "7"]]}]
            }))
            .expect("matrix"));
        }
        Err(self.batch.clone())
    }
}

fn own_answer() -> Series {
    Series::Points {
        points: vec![Point {
            at: 1.0,
            value: 7.0,
        }]
        .into(),
    }
}

fn failed_with(got: &[Series], needle: &str) -> bool {
    got.iter()
        .all(|s| matches!(s, Series::Failed { message } if message.contains(needle)))
}

#[tokio::test]
async fn a_wide_query_without_an_answer_fails_its_members_and_sends_nothing_more() {
    let reqs = fleet(25, &[ERRORS]);
    let src = Source::failing(QueryFailure::NoAnswer("connection refused".into()));
    let got = range_many(&src, &reqs, &small()).await;
    assert_eq!(got.len(), 50);
    // Every member fails (judged `error`, never a pass) with the batch's reason...
    assert!(failed_with(&got, "connection refused"), "{got:?}");
    // ...and neither the 5 regex batches nor the 50 members' own queries were sent.
    assert_eq!(src.asked(), 1);
}

#[tokio::test]
async fn a_regex_batch_without_an_answer_is_not_asked_again_per_member() {
    let reqs = fleet(5, &[ERRORS]);
    let src = Source::failing(QueryFailure::NoAnswer("timed out".into()));
    let got = range_many(&src, &reqs, &small()).await;
    assert!(failed_with(&got, "timed out"), "{got:?}");
    assert_eq!(src.asked(), 1);
}

#[tokio::test]
async fn an_unusable_answer_is_still_asked_again_in_smaller_pieces() {
    // Wide unusable → 5 regex batches unusable → each of the 50 members alone.
    let reqs = fleet(25, &[ERRORS]);
    let src = Source::failing(QueryFailure::Unusable(
        "larger than max_response_bytes".into(),
    ));
    let got = range_many(&src, &reqs, &small()).await;
    assert_eq!(got, vec![own_answer(); 50]);
    assert_eq!(src.asked(), 1 + 5 + 50);
}

/// A loopback server that answers every request with `status` and `body`, or (None) closes the
/// connection without a word.
async fn stand_in(answer: Option<(u16, &'static str)>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let mut buf = vec![0u8; 64 * 1024];
            let _ = conn.read(&mut buf).await;
            if let Some((status, body)) = answer {
                let head = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(head.as_bytes()).await;
                let _ = conn.write_all(body.as_bytes()).await;
            }
        }
    });
    url
}

async fn ask(url: &str) -> Result<Data, QueryFailure> {
    let source = PrometheusSource::new(&PrometheusConfig {
        url: url.to_string(),
        timeout: Duration::from_secs(5),
        bearer_token: None,
        basic_auth: None,
    })
    .expect("source");
    source
        .range_answer(
            "sum(up)",
            SystemTime::now(),
            Duration::from_secs(60),
            Duration::from_secs(15),
        )
        .await
}

#[tokio::test]
async fn prometheus_down_overloaded_or_timed_out_is_no_answer_a_rejected_query_is_unusable() {
    let closed = format!(
        "http://127.0.0.1:{}",
        crate::demo::free_loopback_port().expect("port")
    );
    let hung_up = stand_in(None).await;
    let timeout = stand_in(Some((
        503,
        r#"{"status":"error","errorType":"timeout","error":"query timed out in expression evaluation"}"#,
    )))
    .await;
    let deadline = stand_in(Some((
        422,
        r#"{"status":"error","errorType":"execution","error":"expanding series: context deadline exceeded"}"#,
    )))
    .await;
    let proxy = stand_in(Some((502, "bad gateway"))).await;
    for url in [&closed, &hung_up, &timeout, &deadline, &proxy] {
        let got = ask(url).await;
        assert!(
            matches!(got, Err(QueryFailure::NoAnswer(_))),
            "{url}: {got:?}"
        );
    }
    let rejected = stand_in(Some((
        400,
        r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#,
    )))
    .await;
    let failed = stand_in(Some((
        422,
        r#"{"status":"error","errorType":"execution","error":"many-to-many matching not allowed"}"#,
    )))
    .await;
    for url in [&rejected, &failed] {
        let got = ask(url).await;
        assert!(
            matches!(got, Err(QueryFailure::Unusable(_))),
            "{url}: {got:?}"
        );
    }
}
