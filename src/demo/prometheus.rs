//! A real Prometheus for the demo and the integration tests.
//!
//! canaryd's rule files are PromQL; the only faithful way to test them is to let a real
//! Prometheus scrape a real target and evaluate them, rate windows, extrapolation and staleness
//! included. [`PrometheusProcess`] starts one in its own temporary directory (config, TSDB, log),
//! on a free loopback port, and kills it on drop.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;
use tempfile::TempDir;

use super::DemoError;
use super::process::{ChildProcess, find_binary, local_client, post_reload};

/// How to run Prometheus. `Default` gives a 1 s scrape and evaluation interval and no targets.
#[derive(Clone, Debug)]
pub struct PrometheusOptions {
    /// The `prometheus` binary: by default the one on `PATH`, else `/usr/bin/prometheus`.
    pub binary: PathBuf,
    /// How often every target is scraped; 1 s keeps tests short.
    ///
    /// Give `rate()` a window of at least 4 intervals: measured on Prometheus 2.42 at 1 s,
    /// `[1s]` is always empty, `[2s]` and `[3s]` jump by up to 10 % between evaluations
    /// (extrapolation over one or two deltas), `[5s]` is exact to 0.1 %.
    pub scrape_interval: Duration,
    /// Targets as `host:port`, scraped at `/metrics` under `job="demo"`.
    pub targets: Vec<String>,
    /// Recording and alerting rule files to load.
    pub rule_files: Vec<PathBuf>,
    /// Alertmanagers as `host:port` that firing alerts are sent to.
    pub alertmanagers: Vec<String>,
    /// How often rules are evaluated.
    pub evaluation_interval: Duration,
}

impl Default for PrometheusOptions {
    fn default() -> Self {
        PrometheusOptions {
            binary: find_binary("prometheus", "/usr/bin/prometheus"),
            scrape_interval: Duration::from_secs(1),
            targets: Vec::new(),
            rule_files: Vec::new(),
            alertmanagers: Vec::new(),
            evaluation_interval: Duration::from_secs(1),
        }
    }
}

/// A running Prometheus that is killed when dropped.
pub struct PrometheusProcess {
    process: ChildProcess,
    port: u16,
    client: reqwest::Client,
    // Dropped last: the TSDB and the log live here until the process is gone.
    dir: TempDir,
}

impl PrometheusProcess {
    /// Writes `prometheus.yml` into a fresh temporary directory, starts Prometheus on a free
    /// loopback port with its TSDB there, and waits (at most 30 s) until `/-/ready` answers.
    pub async fn start(opts: PrometheusOptions) -> Result<Self, DemoError> {
        let dir = tempfile::Builder::new()
            .prefix("canaryd-prometheus-")
            .tempdir()
            .map_err(|e| DemoError::io("creating a temporary directory for Prometheus", e))?;
        let config_path = dir.path().join("prometheus.yml");
        let config = render_config(&opts)?;
        std::fs::write(&config_path, config)
            .map_err(|e| DemoError::io(format!("writing {}", config_path.display()), e))?;
        let data = dir.path().join("data");
        let log = dir.path().join("prometheus.log");
        let (process, port) = ChildProcess::start_on_free_port(
            "prometheus",
            "prometheus",
            &opts.binary,
            log,
            "/-/ready",
            |port| {
                vec![
                    flag("--config.file=", config_path.as_os_str()),
                    flag("--storage.tsdb.path=", data.as_os_str()),
                    format!("--web.listen-address=127.0.0.1:{port}").into(),
                    "--web.enable-lifecycle".into(),
                ]
            },
        )
        .await?;
        let client = local_client(Duration::from_secs(5))?;
        Ok(PrometheusProcess {
            process,
            port,
            client,
            dir,
        })
    }

    /// The base URL, `http://127.0.0.1:PORT`, to hand to canaryd.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The temporary directory holding `prometheus.yml`, `data/` and `prometheus.log`.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Kills Prometheus (SIGKILL, then reaps it), to test how canaryd rides out an outage.
    pub async fn stop(&mut self) {
        self.process.stop().await;
    }

    /// Starts Prometheus again on the same port with the same data, as after a crash.
    pub async fn restart(&mut self) -> Result<(), DemoError> {
        self.process.start().await
    }

    /// Asks Prometheus to re-read its configuration and rule files (`POST /-/reload`), so a
    /// test can change a rule file without losing the data scraped so far.
    pub async fn reload(&self) -> Result<(), DemoError> {
        post_reload(&self.client, &self.url()).await
    }

    /// Runs an instant query and returns the `data.result` vector.
    pub async fn query(&self, promql: &str) -> Result<Vec<serde_json::Value>, DemoError> {
        let mut url = reqwest::Url::parse(&format!("{}/api/v1/query", self.url()))
            .map_err(|e| DemoError::Unexpected(format!("building the query URL: {e}")))?;
        url.query_pairs_mut().append_pair("query", promql);
        let context = || format!("querying {} for {promql}", self.url());
        let body: serde_json::Value = self
            .client
            .get(url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| DemoError::http(context(), e))?
            .json()
            .await
            .map_err(|e| DemoError::http(context(), e))?;
        match body.pointer("/data/result") {
            Some(serde_json::Value::Array(result)) => Ok(result.clone()),
            _ => Err(DemoError::Unexpected(format!(
                "{}: expected an instant vector, got {body}",
                context()
            ))),
        }
    }

    /// The value of the first sample an instant query returns, `None` for an empty vector.
    pub async fn query_value(&self, promql: &str) -> Result<Option<f64>, DemoError> {
        let result = self.query(promql).await?;
        let Some(sample) = result.first() else {
            return Ok(None);
        };
        sample
            .pointer("/value/1")
            .and_then(|v| v.as_str())
            .and_then(|v| v.parse::<f64>().ok())
            .map(Some)
            .ok_or_else(|| DemoError::Unexpected(format!("{promql}: malformed sample {sample}")))
    }

    /// Polls the instant query `promql` until it returns a non-empty vector: the way to wait
    /// for the first scrapes without sleeping a guessed amount of time.
    pub async fn wait_for_series(&self, promql: &str, timeout: Duration) -> Result<(), DemoError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Errors are expected while Prometheus restarts; only the deadline ends the wait.
            if let Ok(result) = self.query(promql).await
                && !result.is_empty()
            {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(DemoError::Timeout {
                    what: format!("a series for `{promql}` in {}", self.url()),
                    after: timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn flag(name: &str, value: &std::ffi::OsStr) -> OsString {
    let mut flag = OsString::from(name);
    flag.push(value);
    flag
}

/// Prometheus durations in milliseconds, which its parser accepts for any value.
fn duration(d: Duration) -> String {
    format!("{}ms", d.as_millis().max(1))
}

/// The configuration as JSON, which is valid YAML and spares us quoting rules.
fn render_config(opts: &PrometheusOptions) -> Result<String, DemoError> {
    let rule_files: Vec<String> = opts
        .rule_files
        .iter()
        .map(|p| std::path::absolute(p).map(|p| p.display().to_string()))
        .collect::<Result<_, _>>()
        .map_err(|e| DemoError::io("resolving the rule file paths", e))?;
    let mut config = json!({
        "global": {
            "scrape_interval": duration(opts.scrape_interval),
            // Must not exceed the interval; Prometheus refuses the config otherwise.
            "scrape_timeout": duration(opts.scrape_interval),
            "evaluation_interval": duration(opts.evaluation_interval),
        },
        "rule_files": rule_files,
        "scrape_configs": [{
            "job_name": "demo",
            "static_configs": [{ "targets": opts.targets }],
        }],
    });
    if !opts.alertmanagers.is_empty() {
        config["alerting"] = json!({
            "alertmanagers": [{ "static_configs": [{ "targets": opts.alertmanagers }] }],
        });
    }
    serde_json::to_string_pretty(&config)
        .map_err(|e| DemoError::Unexpected(format!("rendering prometheus.yml: {e}")))
}
