//! The daemon's own configuration (`canaryd.yaml`); every key is also a flag and a `CANARYD_*`
//! variable, merged flag > variable > file > default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::telemetry::LogFormat;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub listen: SocketAddr,
    pub prometheus: PrometheusSection,
    pub alertmanager: AlertmanagerSection,
    pub rules: Vec<String>,
    pub state_dir: PathBuf,
    pub api_token_file: Option<PathBuf>,
    /// `name:token` lines, so each control is recorded with who applied it (`api::tokens`).
    pub api_tokens_file: Option<PathBuf>,
    pub log_format: LogFormat,
    /// The URL people reach this daemon at; alerts link to `{external_url}/api/v1/rollouts/{id}`.
    /// Defaults to `http://{listen}`.
    pub external_url: Option<String>,
    /// Chat and webhook notifications (deploy scheduled, step completed, rollback, complete).
    pub notifications: Vec<NotificationSection>,
    /// A folder whose `*.j2` files replace the shipped templates of the same name.
    pub templates_dir: Option<PathBuf>,
    /// Where a deployment record (Markdown and JSON) is written when a rollout ends.
    pub reports_dir: Option<PathBuf>,
    /// The state store: the embedded SQLite in `state_dir` unless `postgres` is set.
    pub state: StateSection,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 9797)),
            prometheus: PrometheusSection::default(),
            alertmanager: AlertmanagerSection::default(),
            rules: vec!["rules/*.yaml".into()],
            state_dir: PathBuf::from("/var/lib/canaryd"),
            api_token_file: None,
            api_tokens_file: None,
            log_format: LogFormat::Text,
            external_url: None,
            notifications: Vec::new(),
            templates_dir: None,
            reports_dir: None,
            state: StateSection::default(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateSection {
    /// Shared PostgreSQL: two or more replicas, one leader at a time.
    pub postgres: Option<PostgresSection>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSection {
    /// A file holding the connection URL (it carries the password, so never the URL itself).
    pub url_file: PathBuf,
    /// How long a lease lasts without renewal: the longest a dead leader holds rollouts up.
    #[serde(default = "default_lease", with = "crate::rules::schema::duration")]
    pub lease: Duration,
    /// How often the leader renews and followers try to take an expired lease.
    #[serde(
        default = "default_renew_interval",
        with = "crate::rules::schema::duration"
    )]
    pub renew_interval: Duration,
    /// Where the other replicas reach this one (followers forward mutating calls to the
    /// leader's). Defaults to `external_url`; set it per replica (a pod IP) when `external_url`
    /// is a load balancer in front of all of them.
    #[serde(default)]
    pub advertise_url: Option<String>,
}

fn default_lease() -> Duration {
    crate::store::leadership::LeaseTiming::default().lease
}

fn default_renew_interval() -> Duration {
    crate::store::leadership::LeaseTiming::default().renew_interval
}

impl PostgresSection {
    /// A renewal must land well inside the lease, or the leader loses it between two renewals.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.renew_interval.is_zero() || self.renew_interval.saturating_mul(2) > self.lease {
            return Err(ConfigError::Unsafe(format!(
                "state.postgres.renew_interval ({:?}) must be above zero and at most half of \
                 lease ({:?})",
                self.renew_interval, self.lease
            )));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrometheusSection {
    pub url: String,
    #[serde(with = "crate::rules::schema::duration")]
    pub timeout: Duration,
    pub bearer_token_file: Option<PathBuf>,
    pub basic_auth: Option<BasicAuth>,
    /// Largest answer read from Prometheus; a larger one fails the query (`error`).
    pub max_response_bytes: usize,
    /// Ask the window queries of rollouts ticking in the same slot together (one query per
    /// metric shape, `source::batch`); off, each rollout asks its own.
    pub batch_queries: bool,
    /// Batch queries ask only the part of their window not yet settled and reuse the rest of
    /// the last tick's answer (`source::window_cache`); off, every tick asks whole windows.
    pub incremental_windows: bool,
    /// Ask Prometheus for gzip-compressed answers: far fewer bytes for canaryd to read and hold,
    /// more CPU for Prometheus to compress them (BENCHMARKS.md, "Scale — session 12"). Off,
    /// answers come plain.
    pub compress: bool,
    /// How old a point must have been when it was fetched to be reused: longer than the scrape
    /// interval plus the scrape timeout of what the rules read.
    #[serde(with = "crate::rules::schema::duration")]
    pub settled_after: Duration,
    /// How long a whole window asked to fill the window cache may take, past the tick that
    /// asked it (the tick itself still ends by its deadline). Unset: 30s, or `timeout` when
    /// that is longer.
    #[serde(default, with = "crate::rules::schema::opt_duration")]
    pub fill_timeout: Option<Duration>,
}

impl PrometheusSection {
    /// Points to reuse, if any: `None` when incremental windows are off.
    pub fn settled_after(&self) -> Result<Option<Duration>, ConfigError> {
        if !self.incremental_windows {
            return Ok(None);
        }
        if self.settled_after < Duration::from_secs(1)
            || self.settled_after > Duration::from_secs(3600)
        {
            return Err(ConfigError::Unsafe(format!(
                "prometheus.settled_after ({}) must be between 1s and 1h: points younger than \
                 a scrape interval plus its timeout can still change",
                humantime::format_duration(self.settled_after)
            )));
        }
        Ok(Some(self.settled_after))
    }

    /// The bound of a whole-window fill: refused below `timeout` (a fill must be able to
    /// outlive the tick) or above Prometheus's own default query timeout (2m, or `timeout`
    /// when that is longer).
    pub fn fill_timeout(&self) -> Result<Duration, ConfigError> {
        use crate::source::prometheus::{DEFAULT_FILL_TIMEOUT, MAX_FILL_TIMEOUT};
        let Some(fill) = self.fill_timeout else {
            return Ok(DEFAULT_FILL_TIMEOUT.max(self.timeout));
        };
        let max = MAX_FILL_TIMEOUT.max(self.timeout);
        if fill < self.timeout || fill > max {
            return Err(ConfigError::Unsafe(format!(
                "prometheus.fill_timeout ({}) must be between prometheus.timeout ({}) and {}",
                humantime::format_duration(fill),
                humantime::format_duration(self.timeout),
                humantime::format_duration(max)
            )));
        }
        Ok(fill)
    }
}

impl Default for PrometheusSection {
    fn default() -> Self {
        PrometheusSection {
            url: "http://127.0.0.1:9090".into(),
            timeout: Duration::from_secs(10),
            bearer_token_file: None,
            basic_auth: None,
            max_response_bytes: crate::source::prometheus::DEFAULT_MAX_RESPONSE_BYTES,
            batch_queries: true,
            incremental_windows: true,
            compress: true,
            settled_after: Duration::from_secs(30),
            fill_timeout: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub username: String,
    pub password_file: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertmanagerSection {
    pub urls: Vec<String>,
    /// How often active alerts are re-posted. Alertmanager resolves an alert on its own after
    /// `resolve_timeout` (5 m by default) without news, so this must stay well below that.
    #[serde(with = "crate::rules::schema::duration")]
    pub resend_interval: Duration,
    /// A rollout waiting (for a window, an approval, a resume) longer than this is `CanaryStalled`.
    #[serde(with = "crate::rules::schema::duration")]
    pub stall_after: Duration,
    /// How long `CanaryRollback` keeps firing after the rollback hook succeeded. A fast hook
    /// would otherwise resolve it before Alertmanager's `group_wait` ends, and an automatic
    /// rollback would page nobody. Longer than `group_wait` plus a few `resend_interval`s.
    #[serde(with = "crate::rules::schema::duration")]
    pub rollback_keep_firing_for: Duration,
}

impl Default for AlertmanagerSection {
    fn default() -> Self {
        AlertmanagerSection {
            urls: Vec::new(),
            resend_interval: Duration::from_secs(60),
            stall_after: Duration::from_secs(3600),
            rollback_keep_firing_for: Duration::from_secs(3600),
        }
    }
}

/// Which kind of endpoint a notification goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationKind {
    /// Slack-compatible incoming webhook: `{"text": "..."}`.
    Slack,
    /// Generic JSON webhook: the event, the rollout and the rendered text.
    Webhook,
}

/// The rollout events a notification can subscribe to, in the runbook's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationEvent {
    Scheduled,
    StepCompleted,
    Rollback,
    Complete,
    /// A gate waits for approval, or the rollout paused: someone has to act, so the message
    /// links to the rollout's page where the controls are.
    Waiting,
}

impl NotificationEvent {
    pub const ALL: [NotificationEvent; 5] = [
        NotificationEvent::Scheduled,
        NotificationEvent::StepCompleted,
        NotificationEvent::Rollback,
        NotificationEvent::Complete,
        NotificationEvent::Waiting,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NotificationEvent::Scheduled => "scheduled",
            NotificationEvent::StepCompleted => "step_completed",
            NotificationEvent::Rollback => "rollback",
            NotificationEvent::Complete => "complete",
            NotificationEvent::Waiting => "waiting",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationSection {
    pub kind: NotificationKind,
    pub url: String,
    /// Empty means every event.
    #[serde(default)]
    pub events: Vec<NotificationEvent>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        path: PathBuf,
        line: u32,
        column: u32,
        message: String,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("refusing to start: {0}")]
    Unsafe(String),
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        serde_saphyr::from_str(&text).map_err(|e| {
            let (line, column) = e
                .location()
                .map(|l| (l.line() as u32, l.column() as u32))
                .unwrap_or((1, 1));
            let text = e.without_snippet().to_string();
            ConfigError::Parse {
                path: path.to_path_buf(),
                line,
                column,
                message: text.lines().next().unwrap_or("invalid YAML").to_string(),
            }
        })
    }

    /// Reads a secret file, trimming the trailing newline editors add.
    pub fn read_secret(path: &Path) -> Result<String, ConfigError> {
        std::fs::read_to_string(path)
            .map(|s| s.trim().to_string())
            .map_err(|source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })
    }

    /// The API token, from `CANARYD_API_TOKEN` or the token file.
    pub fn api_token(&self) -> Result<Option<String>, ConfigError> {
        if let Ok(t) = std::env::var("CANARYD_API_TOKEN")
            && !t.trim().is_empty()
        {
            return Ok(Some(t.trim().to_string()));
        }
        self.api_token_file
            .as_deref()
            .map(Self::read_secret)
            .transpose()
    }

    /// Where alerts and notifications link to.
    pub fn external_url(&self) -> String {
        self.external_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.listen))
            .trim_end_matches('/')
            .to_string()
    }

    /// Fail fast on settings that would expose rollout control, as the runbooks' production
    /// start-up checks do: a mutating API beyond loopback needs a token.
    pub fn check_safe(&self, token: Option<&str>) -> Result<(), ConfigError> {
        if !self.listen.ip().is_loopback() && token.is_none() {
            return Err(ConfigError::Unsafe(format!(
                "listen address {} is beyond loopback and no API token is configured (set api_token_file or CANARYD_API_TOKEN)",
                self.listen
            )));
        }
        if token.is_some_and(|t| t.len() < 16) {
            return Err(ConfigError::Unsafe(
                "API token must be at least 16 characters".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_public_listen_without_token() {
        let cfg = Config {
            listen: "0.0.0.0:9797".parse().unwrap(),
            ..Config::default()
        };
        assert!(matches!(cfg.check_safe(None), Err(ConfigError::Unsafe(_))));
        assert!(cfg.check_safe(Some("0123456789abcdef0123")).is_ok());
        assert!(Config::default().check_safe(None).is_ok());
    }

    #[test]
    fn a_renewal_must_fit_twice_in_the_lease() {
        let pg = |lease: u64, renew: u64| PostgresSection {
            url_file: "/run/secrets/pg".into(),
            lease: Duration::from_secs(lease),
            renew_interval: Duration::from_secs(renew),
            advertise_url: None,
        };
        assert!(pg(6, 2).check().is_ok());
        assert!(pg(6, 3).check().is_ok());
        assert!(matches!(pg(6, 4).check(), Err(ConfigError::Unsafe(_))));
        assert!(matches!(pg(6, 0).check(), Err(ConfigError::Unsafe(_))));
        let cfg: Config =
            serde_saphyr::from_str("state:\n  postgres:\n    url_file: /x\n    lease: 10s\n")
                .unwrap();
        let p = cfg.state.postgres.expect("postgres section");
        assert_eq!(
            (p.lease, p.renew_interval),
            (Duration::from_secs(10), Duration::from_secs(2))
        );
    }

    #[test]
    fn a_fill_may_outlive_a_tick_but_not_prometheus_own_query_timeout() {
        let section = |yaml: &str| -> PrometheusSection {
            let cfg: Config = serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("{e}"));
            cfg.prometheus
        };
        let s = Duration::from_secs;
        assert_eq!(section("prometheus: {}\n").fill_timeout().ok(), Some(s(30)));
        assert_eq!(
            section("prometheus: { timeout: 45s }\n")
                .fill_timeout()
                .ok(),
            Some(s(45)),
            "never shorter than the tick's own timeout"
        );
        assert_eq!(
            section("prometheus: { fill_timeout: 1m }\n")
                .fill_timeout()
                .ok(),
            Some(s(60))
        );
        for bad in [
            "prometheus: { timeout: 10s, fill_timeout: 5s }\n",
            "prometheus: { fill_timeout: 10m }\n",
        ] {
            assert!(
                matches!(section(bad).fill_timeout(), Err(ConfigError::Unsafe(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn answers_are_compressed_unless_the_file_says_otherwise() {
        let compress = |yaml: &str| -> bool {
            let cfg: Config = serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("{e}"));
            cfg.prometheus.compress
        };
        assert!(compress("prometheus: {}\n"));
        assert!(!compress("prometheus: { compress: false }\n"));
    }

    #[test]
    fn unknown_key_names_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("canaryd.yaml");
        std::fs::write(&p, "listen: 127.0.0.1:9797\nprometheus:\n  ulr: http://x\n").unwrap();
        let err = Config::load(&p).unwrap_err().to_string();
        assert!(err.contains("canaryd.yaml:3:3"), "{err}");
        assert!(err.contains("ulr"), "{err}");
    }
}
