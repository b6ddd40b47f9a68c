//! Range and instant queries against Prometheus through one shared, timed-out HTTP client.
//!
//! Every answer is read with a size cap ([`DEFAULT_MAX_RESPONSE_BYTES`] unless configured): a
//! broken or hostile endpoint streaming an endless body must cost a failed query, never the
//! daemon's memory. Answers are asked gzip-compressed and kept so until read
//! (`answer_body.rs`); the cap bounds them both as read and as inflated.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus_http_query::error::PrometheusError;
use prometheus_http_query::response::Data;
use prometheus_http_query::{Client, Error as PromError};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use serde::Deserialize;

use super::batch_split::{Members, Split};
use super::window_cache::{Bound, WindowCache};
use crate::judge::Observation;
use crate::judge::observation::{Point, Series};

/// Largest Prometheus answer read, by default. A range query of one aggregated series over a
/// day at 15 s steps is ~200 KiB; 16 MiB leaves room for wide instant queries of per-series
/// counters and still bounds what a runaway answer can take.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

#[path = "answer_body.rs"]
mod body;
use body::{Body, read_capped};
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
                self.range_split_whole(query, end, window, step, members.wanted(), Bound::Tick)
                    .await
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
        let started = Instant::now();
        let response = client
            .query_range(query, start_s, end_s, step.as_secs_f64().max(0.001))
            .timeout(timeout.as_millis() as i64)
            .post_raw()
            .await;
        (started, response)
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
        let started = Instant::now();
        let response = self
            .client
            .query(query)
            .at(at_s)
            .timeout(self.timeout.as_millis() as i64)
            .post_raw()
            .await;
        match self.read(started, response).await? {
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
        let response = self.client.query("vector(1)").get_raw().await;
        self.read(Instant::now(), response).await.map(|_| ())
    }

    /// Reads one answer within the size cap and parses it, recording the query's duration and
    /// counting a failure by kind. The error describes what failed without secrets.
    async fn read(
        &self,
        started: Instant,
        response: Result<reqwest::Response, PromError>,
    ) -> Result<Data, String> {
        self.answer(started, response)
            .await
            .map_err(QueryFailure::into_message)
    }

    /// [`Self::read`], telling an answer that never came from one that came unusable.
    async fn answer(
        &self,
        started: Instant,
        response: Result<reqwest::Response, PromError>,
    ) -> Result<Data, QueryFailure> {
        let cap = self.max_response_bytes;
        self.answer_with(started, response, |status, body| {
            parse_response(status, &body.inflated(cap)?)
        })
        .await
    }

    /// [`Self::answer`] with the body read by `parse` (status, body as it came) instead of
    /// into `Data`.
    async fn answer_with<T>(
        &self,
        started: Instant,
        response: Result<reqwest::Response, PromError>,
        parse: impl FnOnce(u16, &Body) -> Result<T, (&'static str, String)>,
    ) -> Result<T, QueryFailure> {
        let result = match response {
            Ok(r) => {
                let status = r.status().as_u16();
                read_capped(r, self.max_response_bytes)
                    .await
                    .and_then(|body| parse(status, &body))
                    .map_err(|(kind, message)| {
                        let none = no_answer(kind, status, &message);
                        (kind, none, message)
                    })
            }
            // The request never got an answer (connect, reset, timeout before the headers).
            Err(e) => Err((error_kind(&e), true, describe(&e))),
        };
        metrics::histogram!("canaryd_prometheus_query_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        result.map_err(|(kind, none, message)| {
            metrics::counter!("canaryd_prometheus_errors_total", "kind" => kind).increment(1);
            if none {
                QueryFailure::NoAnswer(message)
            } else {
                QueryFailure::Unusable(message)
            }
        })
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

/// Whether a failed read means Prometheus gave no answer (down, overloaded, too slow) rather
/// than an unusable one: the body broke off, a 5xx (Prometheus answers its own query timeout
/// and cancellation with 503), or an execution error that is its deadline passing (422
/// "context deadline exceeded" while expanding series).
fn no_answer(kind: &str, status: u16, message: &str) -> bool {
    kind == "transport"
        || status >= 500
        || (status == 422
            && (message.contains("deadline exceeded") || message.contains("context canceled")))
}

#[derive(Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
enum Envelope {
    Success { data: Data },
    Error(PrometheusError),
}

/// Parses one answer of the Prometheus HTTP API (`{"status": ..., "data": ...}`): public so the
/// parser can be fuzzed and recorded answers tested without a server.
pub fn parse_response(http_status: u16, body: &[u8]) -> Result<Data, (&'static str, String)> {
    match serde_json::from_slice::<Envelope>(body) {
        Ok(Envelope::Success { data }) => Ok(data),
        Ok(Envelope::Error(e)) => Err(("query", format!("Prometheus rejected the query: {e}"))),
        Err(e) => {
            let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
            let text: String = text.chars().filter(|c| !c.is_control()).collect();
            Err((
                "other",
                format!(
                    "Prometheus answered HTTP {http_status} with no usable JSON ({e}): {text:?}"
                ),
            ))
        }
    }
}

/// The points of a range query's single series, with their times.
pub fn series(data: &Data) -> Series {
    let point = |s: &prometheus_http_query::response::Sample| Point {
        at: s.timestamp(),
        value: s.value(),
    };
    match data {
        Data::Matrix(m) => match m.len() {
            0 => Series::Points { points: Vec::new() },
            1 => Series::Points {
                points: m[0].samples().iter().map(point).collect(),
            },
            n => Series::Ambiguous { series: n },
        },
        Data::Vector(v) => match v.len() {
            0 => Series::Points { points: Vec::new() },
            1 => Series::Points {
                points: vec![point(v[0].sample())],
            },
            n => Series::Ambiguous { series: n },
        },
        Data::Scalar(s) => Series::Points {
            points: vec![point(s)],
        },
    }
}

/// Turns a query result into an observation; public so recorded JSON can be tested offline.
pub fn observe(data: &Data) -> Observation {
    match data {
        Data::Matrix(series) => match series.len() {
            0 => Observation::Empty { dropped: 0 },
            1 => Observation::from_values(series[0].samples().iter().map(|s| s.value())),
            n => Observation::Ambiguous { series: n },
        },
        Data::Vector(series) => match series.len() {
            0 => Observation::Empty { dropped: 0 },
            1 => Observation::from_values([series[0].sample().value()]),
            n => Observation::Ambiguous { series: n },
        },
        Data::Scalar(s) => Observation::from_values([s.value()]),
    }
}

fn error_kind(e: &PromError) -> &'static str {
    match e {
        PromError::Prometheus(_) => "query",
        PromError::Client(_) => "transport",
        _ => "other",
    }
}

/// A message that names what failed without echoing headers or URL credentials.
fn describe(e: &PromError) -> String {
    crate::redact::text(&describe_raw(e))
}

fn describe_raw(e: &PromError) -> String {
    match e {
        PromError::Prometheus(p) => format!("Prometheus rejected the query: {p}"),
        PromError::Client(c) => {
            let inner = std::error::Error::source(c)
                .map(|s| s.to_string())
                .unwrap_or_default();
            format!("Prometheus unreachable or bad answer: {c} {inner}")
                .trim()
                .to_string()
        }
        other => format!("Prometheus request failed: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Data {
        #[derive(serde::Deserialize)]
        struct Body {
            data: Data,
        }
        serde_json::from_str::<Body>(json).unwrap().data
    }

    #[test]
    fn one_series_gives_its_finite_values_in_order() {
        let d = parse(
            r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1,"0.1"],[2,"NaN"],[3,"0.3"],[4,"+Inf"]]}]}}"#,
        );
        assert_eq!(
            observe(&d),
            Observation::Samples {
                values: vec![0.1, 0.3],
                dropped: 2
            }
        );
    }

    #[test]
    fn empty_result_is_empty_not_zero() {
        let d = parse(r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#);
        assert_eq!(observe(&d), Observation::Empty { dropped: 0 });
    }

    #[test]
    fn all_nan_is_empty() {
        let d = parse(
            r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1,"NaN"],[2,"NaN"]]}]}}"#,
        );
        assert_eq!(observe(&d), Observation::Empty { dropped: 2 });
    }

    #[test]
    fn several_series_are_ambiguous() {
        let d = parse(
            r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"a":"1"},"values":[[1,"1"]]},{"metric":{"a":"2"},"values":[[1,"2"]]}]}}"#,
        );
        assert_eq!(observe(&d), Observation::Ambiguous { series: 2 });
    }
}
