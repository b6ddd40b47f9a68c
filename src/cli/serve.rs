//! `canaryd serve`: load config and rules, start the controller and the API, stop cleanly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;

use crate::actions::HookRunner;
use crate::actions::templates::Templates;
use crate::api::AppState;
use crate::config::Config;
use crate::controller::Controller;
use crate::controller::alertmanager::{self, AlertmanagerClient, PublisherConfig};
use crate::controller::feed::Feed;
use crate::controller::notify::{self, Notifier};
use crate::controller::probes;
use crate::controller::reload;
use crate::controller::report::{self, ReportBook};
use crate::source::HealthProbe;
use crate::source::{PrometheusConfig, PrometheusSource};
use crate::store::sqlite::{SqliteStore, StartMode};
use crate::telemetry::{self, LogFormat};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Daemon configuration file.
    #[arg(long, env = "CANARYD_CONFIG")]
    pub config: Option<PathBuf>,
    #[arg(long, env = "CANARYD_LISTEN")]
    pub listen: Option<SocketAddr>,
    #[arg(long, env = "CANARYD_PROMETHEUS_URL")]
    pub prometheus_url: Option<String>,
    #[arg(long, env = "CANARYD_PROMETHEUS_TIMEOUT", value_parser = humantime::parse_duration)]
    pub prometheus_timeout: Option<Duration>,
    #[arg(long, env = "CANARYD_PROMETHEUS_BEARER_TOKEN_FILE")]
    pub prometheus_bearer_token_file: Option<PathBuf>,
    #[arg(long, env = "CANARYD_PROMETHEUS_MAX_RESPONSE_BYTES")]
    pub prometheus_max_response_bytes: Option<usize>,
    /// `false` asks every rollout's queries alone (for comparison; `prometheus.batch_queries`).
    #[arg(long, env = "CANARYD_PROMETHEUS_BATCH_QUERIES")]
    pub prometheus_batch_queries: Option<bool>,
    /// `false` asks every batch's whole window each tick (for comparison;
    /// `prometheus.incremental_windows`).
    #[arg(long, env = "CANARYD_PROMETHEUS_INCREMENTAL_WINDOWS")]
    pub prometheus_incremental_windows: Option<bool>,
    /// `false` asks Prometheus for plain answers, not gzip (`prometheus.compress`).
    #[arg(long, env = "CANARYD_PROMETHEUS_COMPRESS")]
    pub prometheus_compress: Option<bool>,
    /// Rule files, folders or globs (repeatable).
    #[arg(long = "rules", env = "CANARYD_RULES", value_delimiter = ',')]
    pub rules: Vec<String>,
    #[arg(long, env = "CANARYD_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    #[arg(long, env = "CANARYD_API_TOKEN_FILE")]
    pub api_token_file: Option<PathBuf>,
    /// `name:token` lines: each control is recorded with the name of the token that sent it.
    #[arg(long, env = "CANARYD_API_TOKENS_FILE")]
    pub api_tokens_file: Option<PathBuf>,
    #[arg(long, env = "CANARYD_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Alertmanager base URLs that canaryd's own alerts are posted to (repeatable).
    #[arg(
        long = "alertmanager-url",
        env = "CANARYD_ALERTMANAGER_URLS",
        value_delimiter = ','
    )]
    pub alertmanager_urls: Vec<String>,
    #[arg(long, env = "CANARYD_ALERTMANAGER_RESEND_INTERVAL", value_parser = humantime::parse_duration)]
    pub alertmanager_resend_interval: Option<Duration>,
    #[arg(long, env = "CANARYD_ALERTMANAGER_STALL_AFTER", value_parser = humantime::parse_duration)]
    pub alertmanager_stall_after: Option<Duration>,
    /// How long `CanaryRollback` keeps firing after the rollback was delivered (default 1h).
    #[arg(long, env = "CANARYD_ALERTMANAGER_ROLLBACK_KEEP_FIRING_FOR", value_parser = humantime::parse_duration)]
    pub alertmanager_rollback_keep_firing_for: Option<Duration>,
    /// The URL people reach this daemon at, for links in alerts and messages.
    #[arg(long, env = "CANARYD_EXTERNAL_URL")]
    pub external_url: Option<String>,
    #[arg(long, env = "CANARYD_REPORTS_DIR")]
    pub reports_dir: Option<PathBuf>,
    #[arg(long, env = "CANARYD_TEMPLATES_DIR")]
    pub templates_dir: Option<PathBuf>,
    /// Start with no rollouts although the state dir shows it held some (its database is
    /// missing or empty). Without it such a start is refused, because every live rollout and
    /// owed rollback would be forgotten. The stale files are kept, renamed `*.stale-<time>`.
    /// Refused when the state dir holds a readable store, so remove it after that one start.
    /// An empty or new state dir needs no flag.
    #[arg(long, env = "CANARYD_INIT_STATE")]
    pub init_state: bool,
    /// A file holding a PostgreSQL URL: replicas share their state there and one leads
    /// (`state.postgres.url_file`). Without it, the embedded SQLite store in `state_dir`.
    #[arg(long, env = "CANARYD_STATE_POSTGRES_URL_FILE")]
    pub state_postgres_url_file: Option<PathBuf>,
    /// How long the leader's lease lasts without renewal (default 6s).
    #[arg(long, env = "CANARYD_STATE_POSTGRES_LEASE", value_parser = humantime::parse_duration)]
    pub state_postgres_lease: Option<Duration>,
    /// How often the leader renews and followers try an expired lease (default 2s).
    #[arg(long, env = "CANARYD_STATE_POSTGRES_RENEW_INTERVAL", value_parser = humantime::parse_duration)]
    pub state_postgres_renew_interval: Option<Duration>,
    /// Where the other replicas reach this one (default: external_url).
    #[arg(long, env = "CANARYD_STATE_POSTGRES_ADVERTISE_URL")]
    pub state_postgres_advertise_url: Option<String>,
}

impl ServeArgs {
    /// flag/variable > file > default.
    pub fn config(&self) -> anyhow::Result<Config> {
        let mut cfg = match &self.config {
            Some(p) => Config::load(p)?,
            None => Config::default(),
        };
        if let Some(v) = self.listen {
            cfg.listen = v;
        }
        if let Some(v) = &self.prometheus_url {
            cfg.prometheus.url = v.clone();
        }
        if let Some(v) = self.prometheus_timeout {
            cfg.prometheus.timeout = v;
        }
        if let Some(v) = &self.prometheus_bearer_token_file {
            cfg.prometheus.bearer_token_file = Some(v.clone());
        }
        if let Some(v) = self.prometheus_max_response_bytes {
            cfg.prometheus.max_response_bytes = v;
        }
        if let Some(v) = self.prometheus_batch_queries {
            cfg.prometheus.batch_queries = v;
        }
        if let Some(v) = self.prometheus_incremental_windows {
            cfg.prometheus.incremental_windows = v;
        }
        if let Some(v) = self.prometheus_compress {
            cfg.prometheus.compress = v;
        }
        if !self.rules.is_empty() {
            cfg.rules = self.rules.clone();
        }
        if let Some(v) = &self.state_dir {
            cfg.state_dir = v.clone();
        }
        if let Some(v) = &self.api_token_file {
            cfg.api_token_file = Some(v.clone());
        }
        if let Some(v) = &self.api_tokens_file {
            cfg.api_tokens_file = Some(v.clone());
        }
        if let Some(v) = self.log_format {
            cfg.log_format = v;
        }
        if !self.alertmanager_urls.is_empty() {
            cfg.alertmanager.urls = self.alertmanager_urls.clone();
        }
        if let Some(v) = self.alertmanager_resend_interval {
            cfg.alertmanager.resend_interval = v;
        }
        if let Some(v) = self.alertmanager_stall_after {
            cfg.alertmanager.stall_after = v;
        }
        if let Some(v) = self.alertmanager_rollback_keep_firing_for {
            cfg.alertmanager.rollback_keep_firing_for = v;
        }
        if let Some(v) = &self.external_url {
            cfg.external_url = Some(v.clone());
        }
        if let Some(v) = &self.reports_dir {
            cfg.reports_dir = Some(v.clone());
        }
        if let Some(v) = &self.templates_dir {
            cfg.templates_dir = Some(v.clone());
        }
        if let Some(v) = &self.state_postgres_url_file {
            let timing = crate::store::leadership::LeaseTiming::default();
            let pg = cfg
                .state
                .postgres
                .get_or_insert_with(|| crate::config::PostgresSection {
                    url_file: v.clone(),
                    lease: timing.lease,
                    renew_interval: timing.renew_interval,
                    advertise_url: None,
                });
            pg.url_file = v.clone();
        }
        if let Some(pg) = cfg.state.postgres.as_mut() {
            if let Some(v) = self.state_postgres_lease {
                pg.lease = v;
            }
            if let Some(v) = self.state_postgres_renew_interval {
                pg.renew_interval = v;
            }
            if let Some(v) = &self.state_postgres_advertise_url {
                pg.advertise_url = Some(v.clone());
            }
        }
        Ok(cfg)
    }
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let cfg = args.config()?;
    telemetry::init_logging(cfg.log_format);
    let token = cfg.api_token()?;
    let named_tokens = api_tokens(&cfg)?;
    cfg.check_safe(
        token
            .as_deref()
            .or(named_tokens.first().map(|(_, t)| t.as_str())),
    )?;
    let api_tokens = crate::api::tokens::Tokens::new(token.as_deref(), named_tokens);
    let metrics = telemetry::install_metrics().map_err(anyhow::Error::msg)?;

    let rules = match reload::load_set(&cfg.rules) {
        Ok(r) => r,
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            bail!("{} error(s) in rule files; nothing started", errors.len());
        }
    };
    metrics::gauge!("canaryd_rules_reload_success").set(1.0);
    telemetry::init_series(rules.keys().map(String::as_str));
    let prometheus = PrometheusConfig {
        url: cfg.prometheus.url.clone(),
        timeout: cfg.prometheus.timeout,
        bearer_token: cfg
            .prometheus
            .bearer_token_file
            .as_deref()
            .map(Config::read_secret)
            .transpose()?,
        basic_auth: match &cfg.prometheus.basic_auth {
            Some(b) => Some((b.username.clone(), Config::read_secret(&b.password_file)?)),
            None => None,
        },
    };
    let source = PrometheusSource::new(&prometheus)?
        .with_max_response_bytes(cfg.prometheus.max_response_bytes)
        .with_batching(cfg.prometheus.batch_queries)
        .with_compression(cfg.prometheus.compress)
        .with_incremental_windows(cfg.prometheus.settled_after()?)
        .with_fill_timeout(cfg.prometheus.fill_timeout()?);
    let hooks = HookRunner::new().context("building the hook HTTP client")?;
    let (controller, lease) = match &cfg.state.postgres {
        Some(pg) => {
            let advertise = pg
                .advertise_url
                .clone()
                .unwrap_or_else(|| cfg.external_url());
            let (c, lease) =
                crate::controller::replica::start(pg, &advertise, rules, source, hooks)?;
            (c, Some(lease))
        }
        None => (sqlite_controller(&args, &cfg, rules, source, hooks)?, None),
    };

    let reports = ReportBook::new(cfg.reports_dir.clone());
    let subscribers = start_subscribers(&cfg, &controller, reports.clone())?;

    let app = crate::web::app(AppState {
        controller: controller.clone(),
        metrics: Some(metrics),
        api_token: token.map(Arc::from),
        api_tokens: Arc::new(api_tokens),
        reports,
    });
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    tracing::info!(listen = %listener.local_addr()?, rules = controller.rules().len(), prometheus = %crate::redact::url(&cfg.prometheus.url), "canaryd serving");

    let reloader = controller.clone();
    let patterns = cfg.rules.clone();
    // Kept alive until serve returns: dropping it stops the watch.
    let _watcher = match reload::watch(controller.clone(), cfg.rules.clone()) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch rule files; reload with SIGHUP");
            None
        }
    };
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hup.recv().await.is_some() {
            // Reading and parsing every rule file is blocking work: keep it off the workers
            // that answer the API and deliver rollbacks.
            let (c, p) = (reloader.clone(), patterns.clone());
            let _ = tokio::task::spawn_blocking(move || reload::reload(&c, &p)).await;
        }
    });

    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            shutdown_signal().await;
            crate::web::close_feeds();
        })
        .await
        .context("API server failed")?;
    tracing::info!("shutting down: stopping rollout tasks");
    controller.shutdown().await;
    if let Some((stop, handle)) = lease {
        // Tasks have stopped: hand the lease over now rather than after it expires.
        stop.send_replace(true);
        let _ = tokio::time::timeout(Duration::from_secs(15), handle).await;
    }
    for s in subscribers {
        s.abort();
    }
    Ok(())
}

/// The embedded store: one daemon per state dir, leading for ever.
fn sqlite_controller(
    args: &ServeArgs,
    cfg: &Config,
    rules: crate::controller::RuleSet,
    source: PrometheusSource,
    hooks: HookRunner,
) -> anyhow::Result<Controller> {
    // One daemon per state directory (an OS lock on the directory), and no silent fresh start
    // in a directory whose database was lost: see `store::sqlite::state_dir`.
    let mode = if args.init_state {
        StartMode::Init
    } else {
        StartMode::Resume
    };
    let store = SqliteStore::open(&cfg.state_dir, mode).context("opening the state store")?;
    tracing::info!(path = %store.path().display(), "state store open");
    let controller = Controller::new(rules, Arc::new(store), source, hooks);
    metrics::gauge!("canaryd_leader").set(1.0);
    let recovered = controller
        .recover()
        .context("resuming rollouts from the state store")?;
    tracing::info!(
        event = "rollouts.recovered",
        count = recovered,
        "live rollouts resumed"
    );
    Ok(controller)
}

/// One task per subscriber of the controller's update stream: alerts to Alertmanager, health
/// probes, notifications, reports. Subscribed before the API opens, so no update is missed.
fn start_subscribers(
    cfg: &Config,
    controller: &Controller,
    reports: ReportBook,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let templates = Templates::load(cfg.templates_dir.as_deref())?;
    let mut tasks = Vec::new();
    if !cfg.alertmanager.urls.is_empty() {
        let client = AlertmanagerClient::new(cfg.alertmanager.urls.clone())
            .context("building the Alertmanager HTTP client")?;
        let pc = PublisherConfig {
            resend_interval: cfg.alertmanager.resend_interval,
            stall_after: cfg.alertmanager.stall_after,
            rollback_keep_firing_for: cfg.alertmanager.rollback_keep_firing_for,
            external_url: cfg.external_url(),
        };
        tasks.push(tokio::spawn(alertmanager::run(
            Feed::new(controller),
            client,
            pc,
        )));
    }
    let probe = HealthProbe::new().context("building the health probe HTTP client")?;
    tasks.push(tokio::spawn(probes::supervise(
        Feed::new(controller),
        probe,
    )));
    if !cfg.notifications.is_empty() {
        let notifier = Notifier::new(
            cfg.notifications.clone(),
            templates.clone(),
            cfg.external_url(),
        )
        .context("building the notification HTTP client")?;
        tasks.push(tokio::spawn(notify::run(Feed::new(controller), notifier)));
    }
    tasks.push(tokio::spawn(report::run(
        Feed::new(controller),
        reports,
        templates,
    )));
    Ok(tasks)
}

/// SIGTERM or Ctrl-C: the one signal every part of the daemon listens to.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// The named tokens of `api_tokens_file` (empty without one). Parsed here, not in `config`, so
/// the config room reads files without importing the API that uses them.
fn api_tokens(cfg: &Config) -> Result<Vec<(String, String)>, crate::config::ConfigError> {
    let Some(path) = &cfg.api_tokens_file else {
        return Ok(Vec::new());
    };
    // Lines are trimmed by the parser, so the secret file's outer trim changes nothing.
    let text = Config::read_secret(path)?;
    crate::api::tokens::Tokens::parse_file(&text).map_err(|e| {
        crate::config::ConfigError::Unsafe(format!("api_tokens_file {}: {e}", path.display()))
    })
}
