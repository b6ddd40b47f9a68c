//! HTTP clients for everything canaryd sends out or probes: hooks, notifications, alerts to
//! Alertmanager, health probes.
//!
//! A delivery that follows a redirect lies twice: a 302 turns a `POST` into a body-less `GET` to
//! another origin, whose 200 then reads as "delivered" although the receiver got nothing; a 307
//! replays the body, its signature and its `Idempotency-Key` to whoever the Location names. So
//! every such client is built here, with redirects off, and a 3xx answer is a failed delivery
//! that names its status and (redacted) Location.
//!
//! Architecture Invariant: no client that delivers something is built anywhere else.

use std::fmt;

use reqwest::redirect::Policy;

/// The builder every delivering client starts from: redirects are never followed.
pub fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder().redirect(Policy::none())
}

/// A 3xx answer to a delivery: not followed, so not delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    pub status: u16,
    /// Where it pointed, redacted ([`crate::redact::url`]); `None` if the answer named no place.
    pub location: Option<String>,
}

impl Redirect {
    /// `Some` when `response` is a redirection.
    pub fn of(response: &reqwest::Response) -> Option<Redirect> {
        let status = response.status();
        if !status.is_redirection() {
            return None;
        }
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .map(|v| crate::redact::url(&String::from_utf8_lossy(v.as_bytes())));
        Some(Redirect {
            status: status.as_u16(),
            location,
        })
    }
}

impl fmt::Display for Redirect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {} redirect", self.status)?;
        if let Some(l) = &self.location {
            write!(f, " to {l}")?;
        }
        f.write_str(", not followed (canaryd follows no redirects)")
    }
}
