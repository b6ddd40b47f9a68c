//! Range queries against Prometheus through one shared, timed-out HTTP client.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus_http_query::response::Data;
use prometheus_http_query::{Client, Error as PromError};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};

use crate::judge::Observation;

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

/// One series of an instant query: its labels (sorted) and its value.
pub type LabeledValue = (std::collections::BTreeMap<String, String>, f64);

/// A Prometheus-compatible query endpoint (Prometheus, Thanos, Mimir, VictoriaMetrics).
#[derive(Clone)]
pub struct PrometheusSource {
    client: Client,
    url: String,
    timeout: Duration,
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
        let http = reqwest::Client::builder()
            .connect_timeout(cfg.timeout.min(Duration::from_secs(5)))
            .timeout(cfg.timeout)
            .default_headers(headers)
            .build()
            .map_err(|e| SourceError::Client(e.to_string()))?;
        let client = Client::from(http, &cfg.url).map_err(|e| SourceError::Url {
            url: crate::redact::url(&cfg.url),
            message: crate::redact::text(&e.to_string()),
        })?;
        Ok(Self {
            client,
            url: cfg.url.clone(),
            timeout: cfg.timeout,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// How long one query may take; a rollout's tick never waits longer than this.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// One range query, folded into an [`Observation`]. Never fails: a failure is an outcome.
    pub async fn range(
        &self,
        query: &str,
        end: SystemTime,
        window: Duration,
        step: Duration,
    ) -> Observation {
        let end_s = end
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let start_s = end_s - window.as_secs_f64();
        let started = Instant::now();
        let result = self
            .client
            .query_range(
                query,
                start_s as i64,
                end_s as i64,
                step.as_secs_f64().max(0.001),
            )
            .timeout(self.timeout.as_millis() as i64)
            .post()
            .await;
        match measured(started, result) {
            Ok(response) => observe(response.data()),
            Err(message) => Observation::Failed { message },
        }
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
        let result = self
            .client
            .query(query)
            .at(at_s)
            .timeout(self.timeout.as_millis() as i64)
            .post()
            .await;
        let response = measured(started, result)?;
        match response.data() {
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
        self.client
            .query("vector(1)")
            .get()
            .await
            .map(|_| ())
            .map_err(|e| describe(&e))
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

/// Records the query's duration and, on failure, counts it and describes it without secrets.
fn measured<T>(started: Instant, result: Result<T, PromError>) -> Result<T, String> {
    metrics::histogram!("canaryd_prometheus_query_duration_seconds")
        .record(started.elapsed().as_secs_f64());
    result.map_err(|e| {
        metrics::counter!("canaryd_prometheus_errors_total", "kind" => error_kind(&e)).increment(1);
        describe(&e)
    })
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
