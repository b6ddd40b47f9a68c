//! Reading one answer off the wire (a child of `prometheus.rs`, for its client's settings):
//! the body within the size cap, parsed by the caller's reader, the query's duration recorded,
//! and a failure sorted into "no answer" or "unusable" ([`QueryFailure`]) and counted by kind,
//! its message free of secrets.

use std::time::Instant;

use prometheus_http_query::Error as PromError;
use prometheus_http_query::response::Data;

use super::body::{Body, read_capped};
use super::{PrometheusSource, QueryFailure, parse_response};

impl PrometheusSource {
    /// Reads one answer within the size cap and parses it, recording the query's duration and
    /// counting a failure by kind. The error describes what failed without secrets.
    pub(super) async fn read(
        &self,
        started: Instant,
        response: Result<reqwest::Response, PromError>,
    ) -> Result<Data, String> {
        self.answer(started, response)
            .await
            .map_err(QueryFailure::into_message)
    }

    /// [`Self::read`], telling an answer that never came from one that came unusable.
    pub(super) async fn answer(
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
    pub(super) async fn answer_with<T>(
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
