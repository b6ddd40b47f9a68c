//! Real traffic for `canaryd demo`: when HAProxy is installed, a load generator sends requests
//! through a real HAProxy to a baseline and a canary process, and canaryd's `haproxy` provider
//! moves the weights. The two processes count the requests they really serve (by code, and
//! their latency) for Prometheus to scrape, so the verdicts judge the traffic HAProxy split;
//! the demo prints the canary's measured share beside the weight it set. Without HAProxy the
//! demo keeps its simulated traffic and says so.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::DemoError;
use super::process::find_binary;
use super::traffic_stack::{Backend, HaproxyProcess, background_load};
use crate::rules::traffic::HaproxySpec;
use crate::rules::traffic::TrafficSpec;

/// Connections of the demo's steady load: with [`WORK`] per request, a few hundred requests a
/// second, enough for a 5 % share to be judged within a step without spinning the CPU.
const LOAD_CONNECTIONS: usize = 12;

/// The median time each backend works on a request.
const WORK: Duration = Duration::from_millis(20);

pub struct RealTraffic {
    canary: Backend,
    baseline: Backend,
    haproxy: HaproxyProcess,
    stop: Arc<AtomicBool>,
    /// (canary, baseline) hits when the current weight was confirmed.
    mark: Mutex<(u64, u64)>,
}

impl RealTraffic {
    /// `None` when HAProxy is not installed. The backends' metrics carry `service`.
    pub async fn start_if_installed(service: &str) -> Result<Option<RealTraffic>, DemoError> {
        if !find_binary("haproxy", "/usr/sbin/haproxy").is_file() {
            return Ok(None);
        }
        let canary = Backend::start_for(service, "canary").await?;
        let baseline = Backend::start_for(service, "baseline").await?;
        canary.set_work(WORK);
        baseline.set_work(WORK);
        let haproxy = HaproxyProcess::start(canary.addr(), baseline.addr()).await?;
        let stop = background_load(&haproxy.url(), LOAD_CONNECTIONS);
        Ok(Some(RealTraffic {
            canary,
            baseline,
            haproxy,
            stop,
            mark: Mutex::new((0, 0)),
        }))
    }

    pub fn url(&self) -> String {
        self.haproxy.url()
    }

    /// The two backends' `host:port`, for Prometheus to scrape `/metrics` on.
    pub fn metric_targets(&self) -> Vec<String> {
        vec![
            self.canary.addr().to_string(),
            self.baseline.addr().to_string(),
        ]
    }

    /// The canary process answers this share of the requests it serves with 500.
    pub fn set_canary_error_rate(&self, rate: f64) {
        self.canary.set_error_rate(rate);
    }

    /// Requests the canary process served, and how many of them it answered 500.
    pub fn canary_served(&self) -> (u64, u64) {
        (self.canary.hits(), self.canary.errors())
    }

    /// HAProxy's admin socket (the runtime API canaryd's provider talks to).
    pub fn admin_socket(&self) -> std::path::PathBuf {
        self.haproxy.admin_socket()
    }

    /// The rule's `traffic:` for this HAProxy.
    pub fn spec(&self) -> TrafficSpec {
        TrafficSpec::Haproxy(HaproxySpec {
            socket: Some(self.admin_socket()),
            address: None,
            backend: "app".into(),
            canary: "canary".into(),
            baseline: "baseline".into(),
            timeout: Duration::from_secs(2),
        })
    }

    /// Starts counting anew (a new weight was confirmed).
    pub fn mark(&self) {
        *self.mark.lock().unwrap_or_else(|p| p.into_inner()) =
            (self.canary.hits(), self.baseline.hits());
    }

    /// The canary's share in percent of the requests since the last mark, and their number.
    pub fn share(&self) -> (f64, u64) {
        let (c0, b0) = *self.mark.lock().unwrap_or_else(|p| p.into_inner());
        let c = self.canary.hits().saturating_sub(c0);
        let b = self.baseline.hits().saturating_sub(b0);
        let total = c + b;
        let pct = if total == 0 {
            0.0
        } else {
            c as f64 * 100.0 / total as f64
        };
        (pct, total)
    }
}

impl Drop for RealTraffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
