//! A batch range query split as it is read, bounded by the tick's Prometheus timeout or, for a
//! whole window filling the window cache, by `prometheus.fill_timeout` (a child of
//! `prometheus.rs`, for its private client and answer reader).

use std::time::{Duration, Instant, SystemTime};

use prometheus_http_query::Client;
use reqwest::header::HeaderMap;

use super::{PrometheusConfig, PrometheusSource, QueryFailure, SourceError, parse_response};
use crate::source::answer_split::Wanted;
use crate::source::batch_split::{self, Split};
use crate::source::window_cache::Bound;

/// How long a whole window that fills the window cache may take, by default: three default
/// tick deadlines. At 10,000 services the first whole wide window took 10–25 s on this
/// project's machine (BENCHMARKS.md, "Scale"); it is asked once per batch, not every tick.
pub const DEFAULT_FILL_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest `prometheus.fill_timeout` accepted: Prometheus's own default query timeout.
pub const MAX_FILL_TIMEOUT: Duration = Duration::from_secs(120);

/// A client for `cfg`'s endpoint with `headers`; `timeout` bounds every request (connect to
/// last byte) when given, else the caller bounds it.
pub(super) fn build_client(
    cfg: &PrometheusConfig,
    headers: HeaderMap,
    timeout: Option<Duration>,
) -> Result<Client, SourceError> {
    // A redirect would carry the credentials' query to another origin: a Prometheus that
    // answers 3xx is an error, like every other unexpected answer.
    // No `Accept-Encoding` here: each request asks gzip itself when `prometheus.compress` is on
    // (`PrometheusSource::with_compression`). reqwest has no `gzip` feature here, so the header
    // is ours and so is the decoding (`answer_body.rs`).
    let mut http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(cfg.timeout.min(Duration::from_secs(5)))
        .default_headers(headers);
    if let Some(t) = timeout {
        http = http.timeout(t);
    }
    let http = http
        .build()
        .map_err(|e| SourceError::Client(e.to_string()))?;
    Client::from(http, &cfg.url).map_err(|e| SourceError::Url {
        url: crate::redact::url(&cfg.url),
        message: crate::redact::text(&e.to_string()),
    })
}

impl PrometheusSource {
    /// Bounds whole-window fills of the window cache (`prometheus.fill_timeout`): never shorter
    /// than the Prometheus timeout, never longer than [`MAX_FILL_TIMEOUT`] unless the Prometheus timeout is.
    pub fn with_fill_timeout(mut self, timeout: Duration) -> Self {
        self.fill_timeout = timeout.min(MAX_FILL_TIMEOUT).max(self.timeout);
        self
    }

    /// Whole-window fills in flight; `None` when incremental windows are off.
    pub fn fills_in_flight(&self) -> Option<usize> {
        self.windows.as_ref().map(|c| c.fills_in_flight())
    }

    /// How long a whole-window fill may take.
    pub fn fill_timeout(&self) -> Duration {
        self.fill_timeout
    }

    /// [`Self::range_split`] over exactly `window`, nothing reused, by `bound`.
    pub(super) async fn range_split_whole(
        &self,
        query: &str,
        end: SystemTime,
        window: Duration,
        step: Duration,
        wanted: Wanted<'_>,
        bound: Bound,
    ) -> Result<Split, QueryFailure> {
        let ask = async {
            let (started, response) = self.send_range(query, end, window, step, bound).await;
            let cap = self.max_response_bytes;
            self.answer_with(started, response, |status, body| {
                match body.split(cap, wanted) {
                    Some(split) => Ok(split),
                    // Not the canonical answer (or a broken or oversized gzip stream): inflated
                    // and parsed as before, for the same error or split.
                    None => parse_response(status, &body.inflated(cap)?).map(|data| {
                        batch_split::split(&data, wanted.labels, wanted.keys, wanted.extra)
                    }),
                }
            })
            .await
        };
        if bound == Bound::Tick {
            return ask.await;
        }
        // The fill client has no timeout of its own: this is its bound, body included.
        let started = Instant::now();
        match tokio::time::timeout(self.fill_timeout, ask).await {
            Ok(answer) => answer,
            Err(_) => {
                metrics::histogram!("canaryd_prometheus_query_duration_seconds")
                    .record(started.elapsed().as_secs_f64());
                metrics::counter!("canaryd_prometheus_errors_total", "kind" => "transport")
                    .increment(1);
                Err(QueryFailure::NoAnswer(format!(
                    "the whole window got no answer within prometheus.fill_timeout ({})",
                    humantime::format_duration(self.fill_timeout)
                )))
            }
        }
    }
}
