//! A fake Prometheus for the tests of what a real one never sends (`gzip_answers`,
//! `prometheus_limits`, `answer_encoding`): a loopback HTTP/1.1 server that reads each request's
//! head, keeps the last one, and writes one canned answer — a fixed body, or a JSON body that
//! never ends or is longer than announced — counting the body bytes it got written.
#![allow(dead_code)] // each test module uses part of it

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use canaryd::judge::observation::Series;
use canaryd::source::{PrometheusConfig, PrometheusSource};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The body of every answer.
#[derive(Clone, Debug)]
pub enum Body {
    /// These bytes, with their `content-length`, then the connection closes.
    Fixed(Vec<u8>),
    /// A chunked matrix answer that never ends.
    Endless,
    /// Announces this many bytes in `content-length`, then streams the matrix without end.
    Announced(u64),
}

/// What the server answers every request with.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    /// The `content-encoding` header, when one is sent.
    pub encoding: Option<String>,
    pub body: Body,
}

impl Answer {
    /// `200` with `body` as it is (no `content-encoding`).
    pub fn plain(body: impl Into<Vec<u8>>) -> Answer {
        Answer {
            status: 200,
            encoding: None,
            body: Body::Fixed(body.into()),
        }
    }

    /// `200` with `body` sent as `content-encoding: {encoding}` (not encoded here).
    pub fn encoded(encoding: &str, body: impl Into<Vec<u8>>) -> Answer {
        Answer {
            encoding: Some(encoding.to_string()),
            ..Answer::plain(body)
        }
    }

    pub fn with_status(self, status: u16) -> Answer {
        Answer { status, ..self }
    }

    pub fn streaming(body: Body) -> Answer {
        Answer {
            status: 200,
            encoding: None,
            body,
        }
    }
}

/// A running fake; its tasks end with the test's runtime.
pub struct FakeHttp {
    pub addr: SocketAddr,
    last_head: Arc<Mutex<String>>,
    written: Arc<AtomicU64>,
}

impl FakeHttp {
    pub async fn start(answer: Answer) -> FakeHttp {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let fake = FakeHttp {
            addr,
            last_head: Arc::default(),
            written: Arc::default(),
        };
        let (head, written) = (fake.last_head.clone(), fake.written.clone());
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let (head, written, answer) = (head.clone(), written.clone(), answer.clone());
                tokio::spawn(serve(conn, answer, head, written));
            }
        });
        fake
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The last request's head, lowercased (empty before the first request).
    pub fn last_head(&self) -> String {
        self.last_head.lock().expect("lock").clone()
    }

    /// Body bytes written to every connection so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }
}

async fn serve(
    mut conn: TcpStream,
    answer: Answer,
    last_head: Arc<Mutex<String>>,
    written: Arc<AtomicU64>,
) {
    // Read the request head; the body (the query form) does not matter.
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    *last_head.lock().expect("lock") = String::from_utf8_lossy(&head).to_lowercase();
    let encoding = answer
        .encoding
        .map(|e| format!("content-encoding: {e}\r\n"))
        .unwrap_or_default();
    let framing = match &answer.body {
        Body::Fixed(b) => format!("content-length: {}\r\nconnection: close", b.len()),
        Body::Endless => "transfer-encoding: chunked".to_string(),
        Body::Announced(n) => format!("content-length: {n}"),
    };
    let start = format!(
        "HTTP/1.1 {} X\r\ncontent-type: application/json\r\n{encoding}{framing}\r\n\r\n",
        answer.status
    );
    if conn.write_all(start.as_bytes()).await.is_err() {
        return;
    }
    let chunked = matches!(answer.body, Body::Endless);
    let send = |data: &[u8]| -> Vec<u8> {
        written.fetch_add(data.len() as u64, Ordering::Relaxed);
        if !chunked {
            return data.to_vec();
        }
        let mut c = format!("{:x}\r\n", data.len()).into_bytes();
        c.extend_from_slice(data);
        c.extend_from_slice(b"\r\n");
        c
    };
    if let Body::Fixed(body) = &answer.body {
        let _ = conn.write_all(&send(body)).await;
        let _ = conn.shutdown().await;
        return;
    }
    let prefix =
        br#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":["#;
    let piece = br#"[1,"1"],"#.repeat(8192);
    if conn.write_all(&send(prefix)).await.is_err() {
        return;
    }
    while conn.write_all(&send(&piece)).await.is_ok() {}
}

/// A source on `url` without credentials, as every test of a fake server asks through. The
/// timeout is the caller's: a test of a size cap wants it long, so the cap is what stops a read.
pub fn source_at(url: &str, timeout: Duration) -> PrometheusSource {
    PrometheusSource::new(&PrometheusConfig {
        url: url.to_string(),
        timeout,
        bearer_token: None,
        basic_auth: None,
    })
    .expect("source")
}

/// `bytes` gzip-compressed, as Prometheus sends an answer asked with `Accept-Encoding: gzip`.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).expect("compress");
    e.finish().expect("compress")
}

/// The last minute of `query` at 10 s steps: one range query, whatever the server answers.
pub async fn last_minute(src: &PrometheusSource, query: &str) -> Series {
    src.range_series(
        query,
        SystemTime::now(),
        Duration::from_secs(60),
        Duration::from_secs(10),
    )
    .await
}

/// The process's peak resident memory so far (VmHWM), in KiB: its growth over a query is the
/// most the query ever held, not what happens to be left after it.
pub fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
