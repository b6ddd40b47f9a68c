//! A real Alertmanager for the demo and the integration tests.
//!
//! canaryd rolls back on alerts (`alerts.rollback_on` in a rule file), which reach it as
//! Alertmanager webhooks. Testing that path against the real Alertmanager catches what a fake
//! would not: grouping delays, the webhook payload shape, `send_resolved`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;
use tempfile::TempDir;

use super::DemoError;
use super::process::{ChildProcess, find_binary, local_client, post_reload};

/// How to run Alertmanager. `Default` uses short grouping intervals so tests see alerts fast.
#[derive(Clone, Debug)]
pub struct AlertmanagerOptions {
    /// The binary: by default `prometheus-alertmanager` on `PATH`, else
    /// `/usr/bin/prometheus-alertmanager`.
    pub binary: PathBuf,
    /// Every alert group is posted to each of these URLs (`send_resolved: true`).
    pub webhook_urls: Vec<String>,
    /// Delay before the first notification of a new group.
    pub group_wait: Duration,
    /// Delay before notifying about changes to an existing group.
    pub group_interval: Duration,
    /// Delay before re-sending a notification that has not changed.
    pub repeat_interval: Duration,
}

impl Default for AlertmanagerOptions {
    fn default() -> Self {
        AlertmanagerOptions {
            binary: find_binary(
                "prometheus-alertmanager",
                "/usr/bin/prometheus-alertmanager",
            ),
            webhook_urls: Vec::new(),
            group_wait: Duration::from_secs(1),
            group_interval: Duration::from_secs(1),
            repeat_interval: Duration::from_secs(60),
        }
    }
}

/// A running Alertmanager that is killed when dropped.
pub struct AlertmanagerProcess {
    process: ChildProcess,
    port: u16,
    opts: AlertmanagerOptions,
    config_path: PathBuf,
    // Dropped last: the storage and the log live here until the process is gone.
    dir: TempDir,
}

impl AlertmanagerProcess {
    /// Writes `alertmanager.yml` into a fresh temporary directory and starts Alertmanager on a
    /// free loopback port, clustering disabled, waiting (at most 30 s) until `/-/ready` answers.
    pub async fn start(opts: AlertmanagerOptions) -> Result<Self, DemoError> {
        let dir = tempfile::Builder::new()
            .prefix("canaryd-alertmanager-")
            .tempdir()
            .map_err(|e| DemoError::io("creating a temporary directory for Alertmanager", e))?;
        let config_path = dir.path().join("alertmanager.yml");
        std::fs::write(&config_path, render_config(&opts)?)
            .map_err(|e| DemoError::io(format!("writing {}", config_path.display()), e))?;
        let storage = dir.path().join("data");
        let log = dir.path().join("alertmanager.log");
        let (process, port) = ChildProcess::start_on_free_port(
            "prometheus-alertmanager",
            "prometheus-alertmanager",
            &opts.binary,
            log,
            "/-/ready",
            |port| {
                let mut config = OsString::from("--config.file=");
                config.push(&config_path);
                let mut storage_flag = OsString::from("--storage.path=");
                storage_flag.push(&storage);
                vec![
                    config,
                    storage_flag,
                    format!("--web.listen-address=127.0.0.1:{port}").into(),
                    // Empty disables gossip, so parallel tests never find each other.
                    "--cluster.listen-address=".into(),
                ]
            },
        )
        .await?;
        Ok(AlertmanagerProcess {
            process,
            port,
            opts,
            config_path,
            dir,
        })
    }

    /// Points the webhook at new URLs and makes Alertmanager re-read its configuration
    /// (`POST /-/reload`).
    ///
    /// Why: a peer that must be named in `alertmanager.yml` (canaryd's own API) may only know its
    /// port once it has bound one. Choosing the port first and binding it seconds later, after
    /// Alertmanager and Prometheus started, lets a parallel test take it in between.
    pub async fn set_webhook_urls(&mut self, urls: Vec<String>) -> Result<(), DemoError> {
        self.opts.webhook_urls = urls;
        std::fs::write(&self.config_path, render_config(&self.opts)?)
            .map_err(|e| DemoError::io(format!("writing {}", self.config_path.display()), e))?;
        post_reload(&local_client(Duration::from_secs(10))?, &self.url()).await
    }

    /// The base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The `host:port` to put in [`super::prometheus::PrometheusOptions::alertmanagers`].
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The temporary directory holding `alertmanager.yml`, `data/` and `alertmanager.log`.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Kills Alertmanager and reaps it.
    pub async fn stop(&mut self) {
        self.process.stop().await;
    }
}

fn duration(d: Duration) -> String {
    format!("{}ms", d.as_millis().max(1))
}

/// The configuration as JSON, which is valid YAML and spares us quoting rules.
fn render_config(opts: &AlertmanagerOptions) -> Result<String, DemoError> {
    let webhooks: Vec<_> = opts
        .webhook_urls
        .iter()
        .map(|url| json!({ "url": url, "send_resolved": true }))
        .collect();
    let config = json!({
        "route": {
            "receiver": "hooks",
            "group_by": ["alertname"],
            "group_wait": duration(opts.group_wait),
            "group_interval": duration(opts.group_interval),
            "repeat_interval": duration(opts.repeat_interval),
        },
        "receivers": [{ "name": "hooks", "webhook_configs": webhooks }],
    });
    serde_json::to_string_pretty(&config)
        .map_err(|e| DemoError::Unexpected(format!("rendering alertmanager.yml: {e}")))
}
