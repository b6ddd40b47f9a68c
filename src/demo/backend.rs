//! The real backend processes behind the demo's and the tests' proxies: each answers every path
//! with its track's name and counts the requests it really served — by status code, and in a
//! latency histogram — at `/metrics`, for the Prometheus the demo starts. So canaryd judges the
//! traffic the proxy really split, not a simulation beside it.
//!
//! The metric names and labels are the simulated service's (`http_requests_total{service,
//! track, code}`, `http_request_duration_seconds`), so the shipped policies' queries read both.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::task::JoinHandle;

use super::DemoError;
use super::simulation::escape;

/// The metric families a backend exports.
pub const BACKEND_FAMILIES: [&str; 2] = ["http_requests_total", "http_request_duration_seconds"];

/// Upper bounds of the latency histogram in seconds: fine at the bottom, where a loopback
/// request lands, and up to the 10 s edge the shipped policies' `slower_than_10s` reads.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

struct Counts {
    ok: AtomicU64,
    errors: AtomicU64,
    /// Per bucket, not cumulative; the last slot is above the top edge.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    latency_ns: AtomicU64,
}

#[derive(Clone)]
struct BackendState {
    name: &'static str,
    service: Arc<str>,
    hits: Arc<AtomicU64>,
    counts: Arc<Counts>,
    /// Share of requests answered 500, in parts per million (the demo's error injection).
    error_ppm: Arc<AtomicU32>,
    /// Median of each request's work in microseconds (0: answer at once); lognormal, sigma 0.5.
    work_us: Arc<AtomicU32>,
    ready: Arc<AtomicU16>,
    ready_asked: Arc<AtomicU64>,
    /// When the last counted request arrived, in nanoseconds after `born` (0: none yet).
    last_hit_ns: Arc<AtomicU64>,
    born: Instant,
}

/// An HTTP server that answers every path with its name and counts the requests; `/ready`
/// answers the status a test sets (200 by default) and `/metrics` the counts, neither counted.
pub struct Backend {
    state: BackendState,
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Backend {
    /// A backend whose metrics carry `service="app"` and `track=<name>`.
    pub async fn start(name: &'static str) -> Result<Backend, DemoError> {
        Backend::start_for("app", name).await
    }

    /// A backend for `service`'s `track` (`canary` or `baseline`).
    pub async fn start_for(service: &str, track: &'static str) -> Result<Backend, DemoError> {
        let state = BackendState {
            name: track,
            service: Arc::from(escape(service)),
            hits: Arc::new(AtomicU64::new(0)),
            counts: Arc::new(Counts {
                ok: AtomicU64::new(0),
                errors: AtomicU64::new(0),
                buckets: std::array::from_fn(|_| AtomicU64::new(0)),
                latency_ns: AtomicU64::new(0),
            }),
            error_ppm: Arc::new(AtomicU32::new(0)),
            work_us: Arc::new(AtomicU32::new(0)),
            ready: Arc::new(AtomicU16::new(200)),
            ready_asked: Arc::new(AtomicU64::new(0)),
            last_hit_ns: Arc::new(AtomicU64::new(0)),
            born: Instant::now(),
        };
        let app = Router::new()
            .route("/ready", get(ready))
            .route("/metrics", get(metrics))
            .fallback(answer)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| DemoError::io("binding a backend", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| DemoError::io("reading a backend's address", e))?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Backend { state, addr, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests served (every answer, 200 or 500).
    pub fn hits(&self) -> u64 {
        self.state.hits.load(Ordering::Relaxed)
    }

    /// Requests answered 500.
    pub fn errors(&self) -> u64 {
        self.state.counts.errors.load(Ordering::Relaxed)
    }

    /// From now on, answers this share of requests (0-1, clamped) with 500, spread evenly.
    pub fn set_error_rate(&self, rate: f64) {
        let ppm = (rate.clamp(0.0, 1.0) * 1e6).round() as u32;
        self.state.error_ppm.store(ppm, Ordering::Relaxed);
    }

    /// From now on each request works for a lognormal time around `median` before it answers,
    /// as a real handler does: the latency histogram then has a shape a comparison can use (a
    /// loopback answer alone lands every request in the first bucket).
    pub fn set_work(&self, median: Duration) {
        let us = u32::try_from(median.as_micros()).unwrap_or(u32::MAX);
        self.state.work_us.store(us, Ordering::Relaxed);
    }

    /// When the last counted request arrived.
    pub fn last_hit(&self) -> Option<Instant> {
        match self.state.last_hit_ns.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(self.state.born + Duration::from_nanos(ns)),
        }
    }

    /// How many times `/ready` was asked.
    pub fn ready_asked(&self) -> u64 {
        self.state.ready_asked.load(Ordering::Relaxed)
    }

    pub fn ready_url(&self) -> String {
        format!("http://{}/ready", self.addr)
    }

    /// What `/ready` answers from now on.
    pub fn set_ready(&self, status: u16) {
        self.state.ready.store(status, Ordering::Relaxed);
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Whether request number `n` (from 0) is an error at `ppm`: the errors are spread evenly, so
/// any stretch of requests holds the injected share, with no random run of luck.
fn is_error(n: u64, ppm: u32) -> bool {
    let ppm = u128::from(ppm);
    let n = u128::from(n);
    (n + 1) * ppm / 1_000_000 > n * ppm / 1_000_000
}

/// One request's work: lognormal around the median (sigma 0.5), capped at 20 medians.
fn work_time(median_us: u32) -> Option<Duration> {
    use rand_distr::{Distribution, LogNormal};
    if median_us == 0 {
        return None;
    }
    let median = f64::from(median_us);
    let us = LogNormal::new(median.ln(), 0.5)
        .map(|d| d.sample(&mut rand::rng()))
        .unwrap_or(median)
        .min(median * 20.0);
    Some(Duration::from_micros(us as u64))
}

async fn answer(State(s): State<BackendState>) -> (StatusCode, &'static str) {
    let started = Instant::now();
    let n = s.hits.fetch_add(1, Ordering::Relaxed);
    let ns = u64::try_from(s.born.elapsed().as_nanos()).unwrap_or(u64::MAX);
    s.last_hit_ns.fetch_max(ns.max(1), Ordering::Relaxed);
    if let Some(work) = work_time(s.work_us.load(Ordering::Relaxed)) {
        tokio::time::sleep(work).await;
    }
    let status = if is_error(n, s.error_ppm.load(Ordering::Relaxed)) {
        s.counts.errors.fetch_add(1, Ordering::Relaxed);
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        s.counts.ok.fetch_add(1, Ordering::Relaxed);
        StatusCode::OK
    };
    let took = started.elapsed();
    let slot = BUCKETS
        .iter()
        .position(|le| took.as_secs_f64() <= *le)
        .unwrap_or(BUCKETS.len());
    s.counts.buckets[slot].fetch_add(1, Ordering::Relaxed);
    let took_ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
    s.counts.latency_ns.fetch_add(took_ns, Ordering::Relaxed);
    (status, s.name)
}

async fn ready(State(s): State<BackendState>) -> StatusCode {
    s.ready_asked.fetch_add(1, Ordering::Relaxed);
    StatusCode::from_u16(s.ready.load(Ordering::Relaxed)).unwrap_or(StatusCode::OK)
}

/// The counts in the Prometheus text format. Both codes are always present, so an error ratio
/// has a numerator from the first scrape on (0, not "no data").
async fn metrics(State(s): State<BackendState>) -> impl IntoResponse {
    let c = &s.counts;
    let labels = format!("service=\"{}\",track=\"{}\"", s.service, s.name);
    let mut out = String::from(
        "# HELP http_requests_total Requests served, by status code.\n\
         # TYPE http_requests_total counter\n",
    );
    for (code, n) in [("200", &c.ok), ("500", &c.errors)] {
        let _ = writeln!(
            out,
            "http_requests_total{{{labels},code=\"{code}\"}} {}",
            n.load(Ordering::Relaxed)
        );
    }
    out.push_str(
        "# HELP http_request_duration_seconds Time to answer a request.\n\
         # TYPE http_request_duration_seconds histogram\n",
    );
    let mut cumulative = 0u64;
    for (i, le) in BUCKETS.iter().enumerate() {
        cumulative += c.buckets[i].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "http_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {cumulative}"
        );
    }
    cumulative += c.buckets[BUCKETS.len()].load(Ordering::Relaxed);
    let sum = c.latency_ns.load(Ordering::Relaxed) as f64 / 1e9;
    let _ = writeln!(
        out,
        "http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {cumulative}\n\
         http_request_duration_seconds_sum{{{labels}}} {sum}\n\
         http_request_duration_seconds_count{{{labels}}} {cumulative}"
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn injected_errors_are_the_share_asked_in_any_stretch() {
        for ppm in [0, 1, 50_000, 120_000, 500_000, 1_000_000] {
            for start in [0u64, 7, 1_000] {
                let errors = (start..start + 1_000).filter(|n| is_error(*n, ppm)).count() as u64;
                let want = 1_000 * u64::from(ppm) / 1_000_000;
                assert!(
                    errors.abs_diff(want) <= 1,
                    "{ppm} ppm from {start}: {errors}"
                );
            }
        }
    }

    #[test]
    fn work_is_around_its_median_and_none_when_off() {
        assert_eq!(work_time(0), None);
        let times: Vec<Duration> = (0..200).filter_map(|_| work_time(20_000)).collect();
        assert!(times.iter().all(|t| *t <= Duration::from_millis(400)));
        let below = times
            .iter()
            .filter(|t| **t < Duration::from_millis(20))
            .count();
        assert!(
            (40..=160).contains(&below),
            "{below} of 200 below the median"
        );
    }

    #[tokio::test]
    async fn metrics_count_what_was_served_by_code() {
        let b = Backend::start_for("shop \"x\"", "canary")
            .await
            .expect("backend");
        b.set_error_rate(0.25);
        let client = reqwest::Client::new();
        let url = format!("http://{}/", b.addr());
        for _ in 0..8 {
            client.get(&url).send().await.expect("request");
        }
        let text = client
            .get(format!("http://{}/metrics", b.addr()))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("body");
        let labels = r#"service="shop \"x\"",track="canary""#;
        assert!(
            text.contains(&format!("http_requests_total{{{labels},code=\"200\"}} 6")),
            "{text}"
        );
        assert!(
            text.contains(&format!("http_requests_total{{{labels},code=\"500\"}} 2")),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "http_request_duration_seconds_count{{{labels}}} 8"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "http_request_duration_seconds_bucket{{{labels},le=\"10\"}} 8"
            )),
            "{text}"
        );
        assert_eq!((b.hits(), b.errors()), (8, 2));
    }
}
