//! `canaryd serve` as a child process for the scale bench.
//!
//! Not the tests' `Daemon`: that one gives a daemon 20 s to answer, and loading thousands of rule
//! files takes longer than that (a debug build needs over 20 s for 1,000 on the shared machine).
//! Here the wait grows with the number of rules.
//!
//! `SCALE_CANARYD` runs another binary than the one cargo built with the bench: a release
//! build under a debug harness, or an older build's daemon under this harness ("before" numbers),
//! or a wrapper script that runs it (a profiler). The daemon leads its own process group, killed
//! whole on drop, so a wrapper's child goes with it; and it dies with the bench
//! ([`canaryd::demo::die_with_parent`]) when the bench is killed before any drop runs.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::watchdog::Watchdog;

/// The daemon binary: `SCALE_CANARYD`, else the one built with this bench.
pub fn binary() -> PathBuf {
    std::env::var_os("SCALE_CANARYD")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_canaryd")))
}

/// A running `canaryd serve`, killed and reaped on drop.
pub struct ScaleDaemon {
    child: tokio::process::Child,
    pub url: String,
    log: PathBuf,
    /// Kills the daemon's process group if the bench dies before dropping this.
    _watchdog: Option<Watchdog>,
}

impl ScaleDaemon {
    /// Starts canaryd on a free loopback port (another one if the port was taken meanwhile)
    /// and waits until it answers, at most 60 s plus 100 ms per rule file (a debug build under
    /// load needs about 100 ms of wall time per rule).
    pub async fn start(
        prometheus_url: &str,
        rules: &Path,
        rule_count: usize,
        state: &Path,
        extra: &[String],
    ) -> Result<ScaleDaemon> {
        let wait = Duration::from_secs(60) + Duration::from_millis(100) * rule_count as u32;
        let mut last = String::new();
        for _ in 0..5 {
            let port = canaryd::demo::free_loopback_port()?;
            let log = state.join(format!("canaryd-{port}.log"));
            let mut command = tokio::process::Command::new(binary());
            command
                .arg("serve")
                .arg("--listen")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--prometheus-url")
                .arg(prometheus_url)
                .arg("--state-dir")
                .arg(state)
                .arg("--rules")
                .arg(rules)
                .args(extra)
                .env_remove("CANARYD_API_TOKEN")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).context("canaryd's log file")?)
                .kill_on_drop(true)
                .process_group(0);
            canaryd::demo::die_with_parent(&mut command);
            let child = command.spawn().context("spawning canaryd")?;
            let watchdog = child.id().map(Watchdog::start).transpose();
            let mut d = ScaleDaemon {
                child,
                url: format!("http://127.0.0.1:{port}"),
                log,
                _watchdog: None,
            };
            d._watchdog = watchdog?;
            match d.wait_live(wait).await {
                Ok(()) => return Ok(d),
                Err(log) if log.contains("cannot listen on") => last = log,
                Err(log) => bail!("canaryd did not start within {wait:?}; log tail:\n{log}"),
            }
        }
        bail!("canaryd found no free port in 5 tries; last log:\n{last}")
    }

    /// `Err` with the log's tail when the daemon exited or did not answer within `wait`.
    async fn wait_live(&mut self, wait: Duration) -> Result<(), String> {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if http
                .get(format!("{}/health/live", self.url))
                .send()
                .await
                .is_ok()
            {
                return Ok(());
            }
            if let Ok(Some(_)) = self.child.try_wait() {
                return Err(self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        canaryd::demo::kill_group(&self.child);
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        Err(self.log_tail())
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// The daemon's stderr (its log), in the state dir.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}

impl Drop for ScaleDaemon {
    fn drop(&mut self) {
        canaryd::demo::kill_group(&self.child);
        let _ = self.child.start_kill();
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
