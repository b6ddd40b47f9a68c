//! Range and instant queries against Prometheus through one shared, timed-out HTTP client.
//!
//! Every answer is read with a size cap ([`DEFAULT_MAX_RESPONSE_BYTES`] unless configured): a
//! broken or hostile endpoint streaming an endless body must cost a failed query, never the
//! daemon's memory. Answers are asked gzip-compressed (unless `prometheus.compress` is off) and
//! kept so until read (`answer_body.rs`); the cap bounds them both as read and as inflated.
//! Reading an answer and sorting its failures is `answer_read.rs`; its JSON, `answer_parse.rs`.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus_http_query::response::Data;
use prometheus_http_query::{Client, Error as PromError};
use reqwest::header::{ACCEPT_ENCODING, AUTHORIZATION, HeaderMap, HeaderValue};

use super::batch_split::{Members, Split};
use super::window_cache::{self, Bound, WindowCache};
use crate::judge::observation::Series;

/// Largest Prometheus answer read, by default. A range query of one aggregated series over a
/// day at 15 s steps is ~200 KiB; 16 MiB leaves room for wide instant queries of per-series
/// counters and still bounds what a runaway answer can take.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

#[path = "answer_body.rs"]
mod body;
#[path = "answer_read.rs"]
mod read;
pub use super::answer_parse::{observe, parse_response, series};
#[path = "prometheus_fill.rs"]
mod fill;
use fill::build_client;
pub use fill::{DEFAULT_FILL_TIMEOUT, MAX_FILL_TIMEOUT};

/// How to reach Prometheus. Credentials live here only long enough to build the client.
#[derive(Debug, Clone)]
pub struct PrometheusConfig {
    pub url: String,
    pub timeout: Duration,
    pub bearer_token: Option<String>,
    pub basic_auth: Option<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("invalid Prometheus URL {url:?}: {message}")]
    Url { url: String, message: String },
    #[error("cannot build HTTP client: {0}")]
    Client(String),
    #[error("credentials contain characters not allowed in an HTTP header")]
    Credentials,
}

/// Why a query gave no data, split by what asking again in smaller pieces could change.
#[derive(Debug, Clone, PartialEq)]
pub enum QueryFailure {
    /// No usable answer came back: Prometheus unreachable, the connection refused or reset, the
    /// answer broken off, the query timed out (ours or Prometheus's own), or a 5xx. The server
    /// is down or overloaded; the same work asked in more, smaller queries would only add load.
    NoAnswer(String),
    /// An answer arrived but is no use for this query: larger than `max_response_bytes`, the
    /// query rejected as written, or not the API's JSON. A smaller or plainer query may work.
    Unusable(String),
}

impl QueryFailure {
    pub fn message(&self) -> &str {
        match self {
            QueryFailure::NoAnswer(m) | QueryFailure::Unusable(m) => m,
        }
    }

    pub fn into_message(self) -> String {
        match self {
            QueryFailure::NoAnswer(m) | QueryFailure::Unusable(m) => m,
        }
    }
}

/// One series of an instant query: its labels (sorted) and its value.
pub type LabeledValue = (std::collections::BTreeMap<String, String>, f64);

/// A Prometheus-compatible query endpoint (Prometheus, Thanos, Mimir, VictoriaMetrics).
#[derive(Clone)]
pub struct PrometheusSource {
    client: Client,
    /// The same endpoint and credentials without the client's timeout: whole-window fills are
    /// bounded by `fill_timeout` instead ([`super::window_cache_fill`]).
    fill_client: Client,
    fill_timeout: Duration,
    url: String,
    timeout: Duration,
    max_response_bytes: usize,
    batching: bool,
    /// Whether answers are asked gzip-compressed (`prometheus.compress`).
    compress: bool,
    /// Settled points of batch answers, reused by the next tick ([`super::window_cache`]).
    windows: Option<std::sync::Arc<WindowCache>>,
}

impl std::fmt::Debug for PrometheusSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Deliberately omits the client: its default headers hold credentials.
        f.debug_struct("PrometheusSource")
            .field("url", &crate::redact::url(&self.url))
            .finish()
    }
}

impl PrometheusSource {
    pub fn new(cfg: &PrometheusConfig) -> Result<Self, SourceError> {
        let mut headers = HeaderMap::new();
        if let Some(token) = &cfg.bearer_token {
            let mut v = HeaderValue::from_str(&format!("Bearer {}", token.trim()))
                .map_err(|_| SourceError::Credentials)?;
            v.set_sensitive(true);
            headers.insert(AUTHORIZATION, v);
        } else if let Some((user, pass)) = &cfg.basic_auth {
            use base64::Engine as _;
            let encoded =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
            let mut v = HeaderValue::from_str(&format!("Basic {encoded}"))
                .map_err(|_| SourceError::Credentials)?;
            v.set_sensitive(true);
            headers.insert(AUTHORIZATION, v);
        }
        // A redirect would carry the credentials' query to another origin: a Prometheus that
        // answers 3xx is an error, like every other unexpected answer.
        let client = build_client(cfg, headers.clone(), Some(cfg.timeout))?;
        let fill_client = build_client(cfg, headers, None)?;
        Ok(Self {
            client,
            fill_client,
            fill_timeout: DEFAULT_FILL_TIMEOUT.max(cfg.timeout),
            url: cfg.url.clone(),
            timeout: cfg.timeout,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            batching: true,
            compress: true,
            windows: None,
        })
    }

    /// Batch queries ask only the points of their window not settled at the last tick
    /// (`prometheus.incremental_windows`, [`super::window_cache`]); `None` asks every window
    /// whole.
    pub fn with_incremental_windows(mut self, settled_after: Option<Duration>) -> Self {
        self.windows = settled_after.map(|d| std::sync::Arc::new(WindowCache::new(d)));
        self
    }

    /// Batch windows asked so far, `(whole, in part)`; `None` when incremental windows are off.
    pub fn windows_asked(&self) -> Option<(u64, u64)> {
        self.windows.as_ref().map(|c| c.asked())
    }

    /// Caps the size of every answer read (`prometheus.max_response_bytes`); larger answers
    /// fail the query, which the judge reports as `error`, never as a pass.
    pub fn with_max_response_bytes(mut self, bytes: usize) -> Self {
        self.max_response_bytes = bytes.max(1);
        self
    }

    /// Whether a slot's window queries are asked together ([`super::batch`]); on by default,
    /// off for comparison (`prometheus.batch_queries: false`).
    pub fn with_batching(mut self, on: bool) -> Self {
        self.batching = on;
        self
    }

    pub fn batching(&self) -> bool {
        self.batching
    }

    /// Whether answers are asked gzip-compressed (`prometheus.compress`, on by default): smaller
    /// to read and hold for canaryd, more CPU for Prometheus (BENCHMARKS.md, "Scale —
    /// session 12"). Off, no `Accept-Encoding` is sent and every answer comes plain.
    pub fn with_compression(mut self, on: bool) -> Self {
        self.compress = on;
        self
    }

    /// The `Accept-Encoding` every request carries, if any.
    fn accept_encoding(&self) -> Option<HeaderValue> {
        self.compress.then(|| HeaderValue::from_static("gzip"))
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// How long one query may take; a rollout's tick never waits longer than this.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// One range query, every point with its time, so the judge can tell which points belong
    /// to the current step and how old the newest is. Never fails: a failure is an outcome.
    pub async fn range_series(
        &self,
        query: &str,
        end: SystemTime,
        window: Duration,
        step: Duration,
    ) -> Series {
        match self.range_data(query, end, window, step).await {
            Ok(data) => series(&data),
            Err(message) => Series::Failed { message },
        }
    }

    /// One range query's whole answer, every series with its labels: what a batched query
    /// (`source::batch`) splits back per member. `range_series` is this plus [`series`].
    pub async fn range_data(
        &self,
        query: &str,
        end: SystemTime,
        window: Duration,
        step: Duration,
    ) -> Result<Data, String> {
        self.range_answer(query, end, window, step)
            .await
            .map_err(QueryFailure::into_message)
    }

    /// [`Self::range_data`], saying whether Prometheus answered at all ([`QueryFailure`]): a
    /// batch that got no answer is not asked again per member ([`super::batch`]).
    pub async fn range_answer(
        &self,
        query: &str,
        end: SystemTime,
        window: Duration,
        step: Duration,
    ) -> Result<Data, QueryFailure> {
        let (started, response) = self.send_range(query, end, window, step, Bound::Tick).await;
        self.answer(started, response).await
    }

    /// One batch range query split back per member as its JSON is read
    /// ([`super::answer_split`]): only members' points are kept, never the whole answer. The
    /// outcome is the one [`Self::range_answer`] then [`batch_split::split`] would give.
    pub async fn range_split(
        &self,
        query: &str,
        end: SystemTime,
        window: Duration,
        step: Duration,
        members: Members,
    ) -> Result<Split, QueryFailure> {
        match &self.windows {
            Some(cache) => {
                // Owned: the query outlives this tick when the tick gives up first.
                let this = self.clone();
                let q = query.to_string();
                cache
                    .range_split(query, end, window, step, members, move |f| async move {
                        this.range_split_whole(&q, end, f.window, step, f.members.wanted(), f.bound)
                            .await
                    })
                    .await
            }
            None => {
                let answer = self
                    .range_split_whole(query, end, window, step, members.wanted(), Bound::Tick)
                    .await;
                window_cache::share_whole(answer, end, window, step)
            }
        }
    }

    /// Sends one range query over `window` back from `end`; when it was sent, and what came.
    async fn send_range(
        &self,
        query: &str,
        end: SystemTime,
        window: Duration,
        step: Duration,
        bound: Bound,
    ) -> (Instant, Result<reqwest::Response, PromError>) {
        let (start_s, end_s) = range_bounds(end, window);
        let (client, timeout) = match bound {
            Bound::Tick => (&self.client, self.timeout),
            Bound::Fill => (&self.fill_client, self.fill_timeout),
        };
        let mut ask = client
            .query_range(query, start_s, end_s, step.as_secs_f64().max(0.001))
            .timeout(timeout.as_millis() as i64);
        if let Some(encoding) = self.accept_encoding() {
            ask = ask.header(ACCEPT_ENCODING, encoding);
        }
        let started = Instant::now();
        (started, ask.post_raw().await)
    }

    /// One instant query at `at`, every series with its labels: counters for the sequential
    /// test, which takes increases per series itself so counter resets are handled.
    pub async fn instant_series(
        &self,
        query: &str,
        at: SystemTime,
    ) -> Result<Vec<LabeledValue>, String> {
        let at_s = at
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let mut ask = self
            .client
            .query(query)
            .at(at_s)
            .timeout(self.timeout.as_millis() as i64);
        if let Some(encoding) = self.accept_encoding() {
            ask = ask.header(ACCEPT_ENCODING, encoding);
        }
        let started = Instant::now();
        match self.read(started, ask.post_raw().await).await? {
            Data::Vector(v) => Ok(v
                .iter()
                .map(|s| (s.metric().clone().into_iter().collect(), s.sample().value()))
                .collect()),
            Data::Scalar(s) => Ok(vec![(Default::default(), s.value())]),
            Data::Matrix(_) => {
                Err("counter query returned a range vector; give an instant selector".into())
            }
        }
    }

    /// Readiness probe: the cheapest query every compatible backend answers.
    pub async fn ping(&self) -> Result<(), String> {
        let mut ask = self.client.query("vector(1)");
        if let Some(encoding) = self.accept_encoding() {
            ask = ask.header(ACCEPT_ENCODING, encoding);
        }
        self.read(Instant::now(), ask.get_raw().await)
            .await
            .map(|_| ())
    }
}

/// The seconds since the epoch a range query over `window` up to `end` starts and ends at.
fn range_bounds(end: SystemTime, window: Duration) -> (i64, i64) {
    let end_s = end
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let start_s = end_s - window.as_secs_f64();
    (start_s as i64, end_s as i64)
}
