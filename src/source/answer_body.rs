//! One Prometheus answer's body as read, compressed when Prometheus compressed it (a child of
//! `prometheus.rs`, for its answer reader).
//!
//! The source asks for `Accept-Encoding: gzip`: a wide batch answer is ~10 MB of JSON at
//! 10,000 services and much smaller compressed (label names and digits repeat), and a slot
//! holds up to four at once. The body is kept as it came; the batch split reads it through
//! the decoder without ever holding the JSON ([`Body::split`]), every other reader gets the
//! JSON inflated first ([`Body::inflated`]) and parses it exactly as an uncompressed answer.
//! Both bound the inflated bytes by `max_response_bytes` as well as the bytes read: a small
//! answer that inflates without end (a gzip bomb) fails as `too_large` and never allocates
//! more.

use std::borrow::Cow;
use std::io::Read;

use reqwest::header::{CONTENT_ENCODING, HeaderValue};

use crate::source::answer_split::{self, Wanted};
use crate::source::batch_split::Split;

/// A failed read: the error kind counted by `canaryd_prometheus_errors_total`, and the message.
pub(super) type ReadError = (&'static str, String);

/// An answer's bytes as they arrived.
#[derive(Debug)]
pub(super) enum Body {
    /// No `Content-Encoding` (or `identity`): the JSON itself.
    Plain(Vec<u8>),
    /// `Content-Encoding: gzip`: inflated only by whoever reads it.
    Gzip(Vec<u8>),
}

impl Body {
    /// The JSON, inflated into memory when compressed, at most `cap` bytes either way.
    pub(super) fn inflated(&self, cap: usize) -> Result<Cow<'_, [u8]>, ReadError> {
        let gz = match self {
            Body::Plain(b) => return Ok(Cow::Borrowed(b)),
            Body::Gzip(gz) => gz,
        };
        let mut json = Vec::new();
        inflater(gz, cap)
            .read_to_end(&mut json)
            .map_err(|e| broken(gz.len(), &e))?;
        if json.len() > cap {
            return Err(too_large(cap, "more once inflated"));
        }
        Ok(Cow::Owned(json))
    }

    /// `wanted` split out of the answer as its JSON is read ([`answer_split`]), or `None` when
    /// the streaming split cannot read it (not the canonical answer, a broken gzip stream, over
    /// `cap` once inflated): then [`Self::inflated`] gives the error or the bytes to parse.
    pub(super) fn split(&self, cap: usize, wanted: Wanted<'_>) -> Option<Split> {
        match self {
            Body::Plain(json) => answer_split::split_json(json, wanted),
            Body::Gzip(gz) => {
                let mut limited = inflater(gz, cap);
                // serde_json reads a reader byte by byte: buffered, or each byte is one inflate.
                let split = answer_split::split_reader(
                    std::io::BufReader::with_capacity(32 * 1024, &mut limited),
                    wanted,
                )?;
                // Every byte up to the end was read (`split_reader` reads to EOF): any left of
                // the allowance means the JSON fit in `cap`.
                (limited.limit() > 0).then_some(split)
            }
        }
    }
}

/// `gz` inflated as it is read, ending one byte past `cap` at most: that byte tells "exactly
/// the cap" from "more", and nothing reading it ever holds more.
fn inflater(gz: &[u8], cap: usize) -> std::io::Take<flate2::bufread::GzDecoder<&[u8]>> {
    flate2::bufread::GzDecoder::new(gz).take((cap as u64).saturating_add(1))
}

/// Whether the body is gzip (`Content-Encoding`), or the error for an encoding not understood.
fn gzip_encoded(value: Option<&HeaderValue>) -> Result<bool, ReadError> {
    let Some(value) = value else {
        return Ok(false);
    };
    let text = value.to_str().unwrap_or("").trim();
    if text.eq_ignore_ascii_case("gzip") {
        Ok(true)
    } else if text.eq_ignore_ascii_case("identity") || text.is_empty() {
        Ok(false)
    } else {
        let shown: String = text.chars().filter(|c| !c.is_control()).take(40).collect();
        Err((
            "other",
            format!(
                "Prometheus answered with Content-Encoding {shown:?}; canaryd reads only gzip or uncompressed answers"
            ),
        ))
    }
}

/// The body of one answer, at most `cap` bytes as read. Stops reading the moment the cap is
/// passed, so an endless body costs `cap` bytes and no more. Every byte read, kept or not, is
/// counted by the encoding it came in (`canaryd_prometheus_answer_bytes_total`): what the
/// answers cost on the wire, and a proxy that strips the compression shows as `identity`.
pub(super) async fn read_capped(
    mut response: reqwest::Response,
    cap: usize,
) -> Result<Body, ReadError> {
    let gzip = gzip_encoded(response.headers().get(CONTENT_ENCODING))?;
    if let Some(len) = response.content_length()
        && len > cap as u64
    {
        return Err(too_large(cap, &format!("{len} bytes announced")));
    }
    let mut body = Vec::new();
    let mut read = 0u64;
    let outcome = read_chunks(&mut response, cap, &mut body, &mut read).await;
    let encoding = if gzip { "gzip" } else { "identity" };
    metrics::counter!(ANSWER_BYTES, "encoding" => encoding).increment(read);
    outcome?;
    Ok(if gzip {
        Body::Gzip(body)
    } else {
        Body::Plain(body)
    })
}

/// The metric of the bytes read from Prometheus, by `encoding` (`gzip` or `identity`).
const ANSWER_BYTES: &str = "canaryd_prometheus_answer_bytes_total";

/// Reads `response`'s chunks into `body` until its end or past `cap`, adding each chunk's
/// length to `read` as it arrives.
async fn read_chunks(
    response: &mut reqwest::Response,
    cap: usize,
    body: &mut Vec<u8>,
    read: &mut u64,
) -> Result<(), ReadError> {
    loop {
        let chunk = response.chunk().await.map_err(|e| {
            let inner = std::error::Error::source(&e)
                .map(|s| format!(" ({s})"))
                .unwrap_or_default();
            (
                "transport",
                format!(
                    "Prometheus answer broke off after {} bytes: {e}{inner}",
                    body.len()
                ),
            )
        })?;
        let Some(chunk) = chunk else {
            return Ok(());
        };
        *read = read.saturating_add(chunk.len() as u64);
        if body.len().saturating_add(chunk.len()) > cap {
            return Err(too_large(cap, "more"));
        }
        body.extend_from_slice(&chunk);
    }
}

fn too_large(cap: usize, got: &str) -> ReadError {
    (
        "too_large",
        format!(
            "Prometheus answer is larger than max_response_bytes ({cap} bytes, got {got}); aggregate the query or raise the limit"
        ),
    )
}

/// A gzip stream that does not inflate: the whole body came, but not a whole or valid stream.
fn broken(read: usize, e: &std::io::Error) -> ReadError {
    (
        "other",
        format!("Prometheus answered a gzip body that does not inflate ({read} bytes read): {e}"),
    )
}

#[cfg(test)]
#[path = "answer_body_tests.rs"]
mod tests;
