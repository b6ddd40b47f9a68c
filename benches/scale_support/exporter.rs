//! The synthetic exporter: N services × {baseline, canary} with the four signals of the shipped
//! rules, under the demo service's metric names so the shipped queries work unchanged.
//!
//! Why not N `DemoService`s: each runs its own ticker and RNG, and 10,000 of them would cost the
//! bench more CPU than the daemon it measures. Here every value is a closed form of the time
//! since start (counters grow linearly, gauges stay put), rendered only when Prometheus scrapes.
//! Services are split over shards of [`SHARD`], each its own loopback target, so no single
//! scrape body grows past a few MB and Prometheus parses the shards in parallel.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::task::JoinHandle;

/// Services per scrape target.
pub const SHARD: usize = 1000;

/// Latency bucket edges (the demo service's) and the cumulative share of requests under each:
/// a p95 of about 0.75 s, well under the rules' 5 s warn line.
const BUCKETS: [(&str, f64); 8] = [
    ("0.05", 0.30),
    ("0.1", 0.55),
    ("0.25", 0.80),
    ("0.5", 0.92),
    ("1", 0.97),
    ("2.5", 0.99),
    ("5", 0.995),
    ("10", 0.999),
];

/// Errors are 0.2 % of requests on both tracks: under every warn line, ratio 1 to the baseline.
const ERROR_SHARE: f64 = 0.002;

/// The name of service `i`, as the rule files and the rollouts use it.
pub fn service_name(i: usize) -> String {
    format!("svc-{i:05}")
}

struct Series {
    /// `service="…",track="…"`, rendered once.
    labels: String,
    requests_per_second: f64,
    pool_in_use: u32,
}

struct Shard {
    series: Vec<Series>,
    started: Instant,
}

/// The running exporter; dropping it stops every shard's server.
pub struct Exporter {
    targets: Vec<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
}

impl Exporter {
    /// Serves services `0..n` on `ceil(n / SHARD)` loopback listeners.
    pub async fn start(n: usize) -> std::io::Result<Exporter> {
        let started = Instant::now();
        let mut targets = Vec::new();
        let mut tasks = Vec::new();
        for first in (0..n).step_by(SHARD) {
            let mut series = Vec::new();
            for i in first..(first + SHARD).min(n) {
                for track in ["baseline", "canary"] {
                    series.push(Series {
                        labels: format!("service=\"{}\",track=\"{track}\"", service_name(i)),
                        requests_per_second: 5.0 + (i % 20) as f64,
                        pool_in_use: 10 + (i % 7) as u32,
                    });
                }
            }
            let shard = Arc::new(Shard { series, started });
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            targets.push(listener.local_addr()?);
            let app = Router::new()
                .route("/metrics", get(metrics))
                .with_state(shard);
            tasks.push(tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app).await {
                    eprintln!("scale exporter shard stopped: {e}");
                }
            }));
        }
        Ok(Exporter { targets, tasks })
    }

    /// Scrape targets as `host:port`.
    pub fn targets(&self) -> Vec<String> {
        self.targets.iter().map(ToString::to_string).collect()
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn metrics(State(shard): State<Arc<Shard>>) -> impl IntoResponse {
    let body = render(&shard, shard.started.elapsed().as_secs_f64());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

/// The exposition of one shard at `t` seconds after start.
fn render(shard: &Shard, t: f64) -> String {
    // About 16 lines of 80 bytes per series: one allocation for the whole body.
    let mut out = String::with_capacity(shard.series.len() * 16 * 90);
    out.push_str("# TYPE http_requests_total counter\n");
    for s in &shard.series {
        let requests = s.requests_per_second * t;
        let errors = requests * ERROR_SHARE;
        let _ = writeln!(
            out,
            "http_requests_total{{{l},code=\"200\"}} {ok:.3}\n\
             http_requests_total{{{l},code=\"500\"}} {errors:.3}",
            l = s.labels,
            ok = requests - errors,
        );
    }
    out.push_str("# TYPE http_request_duration_seconds histogram\n");
    for s in &shard.series {
        let requests = s.requests_per_second * t;
        for (le, share) in BUCKETS {
            let _ = writeln!(
                out,
                "http_request_duration_seconds_bucket{{{},le=\"{le}\"}} {:.3}",
                s.labels,
                requests * share
            );
        }
        let _ = writeln!(
            out,
            "http_request_duration_seconds_bucket{{{l},le=\"+Inf\"}} {requests:.3}\n\
             http_request_duration_seconds_sum{{{l}}} {sum:.3}\n\
             http_request_duration_seconds_count{{{l}}} {requests:.3}",
            l = s.labels,
            sum = requests * 0.3,
        );
    }
    out.push_str("# TYPE db_pool_connections_in_use gauge\n");
    for s in &shard.series {
        let _ = writeln!(
            out,
            "db_pool_connections_in_use{{{}}} {}",
            s.labels, s.pool_in_use
        );
    }
    out.push_str("# TYPE db_pool_connections_max gauge\n");
    for s in &shard.series {
        let _ = writeln!(out, "db_pool_connections_max{{{}}} 50", s.labels);
    }
    out.push_str("# TYPE process_cpu_seconds_total counter\n");
    for s in &shard.series {
        let _ = writeln!(
            out,
            "process_cpu_seconds_total{{{}}} {:.3}",
            s.labels,
            0.25 * t
        );
    }
    out
}
