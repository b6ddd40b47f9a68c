//! Health endpoints: one GET with a timeout, answered as healthy or as the reason it is not.
//!
//! Architecture Invariant: knows HTTP and nothing about rollouts; counting consecutive failures
//! and deciding what they mean is the probe supervisor's job (`controller::probes`).

use std::time::Duration;

/// Probes health endpoints through one shared connection pool.
#[derive(Clone)]
pub struct HealthProbe {
    http: reqwest::Client,
}

impl HealthProbe {
    pub fn new() -> Result<HealthProbe, reqwest::Error> {
        Ok(HealthProbe {
            http: crate::outbound::client_builder()
                .connect_timeout(Duration::from_secs(5))
                .build()?,
        })
    }

    /// `Ok` on a 2xx answer within `timeout`; otherwise why not, in words for the rollback
    /// reason ("HTTP 503", "timed out after 2s", "connection refused"). A redirect is a
    /// failure: a probe that followed one would report the health of whatever it points to.
    pub async fn check(&self, url: &str, timeout: Duration) -> Result<(), String> {
        match self.http.get(url).timeout(timeout).send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(match crate::outbound::Redirect::of(&r) {
                Some(redirect) => redirect.to_string(),
                None => format!("HTTP {}", r.status().as_u16()),
            }),
            Err(e) if e.is_timeout() => Err(format!(
                "timed out after {}",
                humantime::format_duration(timeout)
            )),
            Err(e) => Err(format!(
                "unreachable: {}",
                crate::redact::text(&root_cause(&e))
            )),
        }
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
