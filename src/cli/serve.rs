//! `canaryd serve`: load config and rules, start the controller and the API, stop cleanly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;

use crate::actions::HookRunner;
use crate::api::{self, AppState};
use crate::config::Config;
use crate::rollout::controller::Controller;
use crate::rollout::sqlite::SqliteStore;
use crate::rules::reload;
use crate::source::{PrometheusConfig, PrometheusSource};
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
    /// Rule files, folders or globs (repeatable).
    #[arg(long = "rules", env = "CANARYD_RULES", value_delimiter = ',')]
    pub rules: Vec<String>,
    #[arg(long, env = "CANARYD_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    #[arg(long, env = "CANARYD_API_TOKEN_FILE")]
    pub api_token_file: Option<PathBuf>,
    #[arg(long, env = "CANARYD_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
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
        if !self.rules.is_empty() {
            cfg.rules = self.rules.clone();
        }
        if let Some(v) = &self.state_dir {
            cfg.state_dir = v.clone();
        }
        if let Some(v) = &self.api_token_file {
            cfg.api_token_file = Some(v.clone());
        }
        if let Some(v) = self.log_format {
            cfg.log_format = v;
        }
        Ok(cfg)
    }
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let cfg = args.config()?;
    telemetry::init_logging(cfg.log_format);
    let token = cfg.api_token()?;
    cfg.check_safe(token.as_deref())?;
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
    let source = PrometheusSource::new(&prometheus)?;
    let hooks = HookRunner::new().context("building the hook HTTP client")?;
    // One daemon per state directory: two would both drive the same rollouts. The OS drops the
    // lock with the process, so a kill -9 never leaves it stale.
    std::fs::create_dir_all(&cfg.state_dir)
        .with_context(|| format!("cannot create state_dir {}", cfg.state_dir.display()))?;
    let lock_path = cfg.state_dir.join("canaryd.lock");
    let lock = std::fs::File::create(&lock_path)
        .with_context(|| format!("cannot open {}", lock_path.display()))?;
    if lock.try_lock().is_err() {
        bail!(
            "another canaryd is using state_dir {} (lock {} is held)",
            cfg.state_dir.display(),
            lock_path.display()
        );
    }
    let store = SqliteStore::open(&cfg.state_dir).context("opening the state store")?;
    tracing::info!(path = %store.path().display(), "state store open");
    let controller = Controller::new(rules, Arc::new(store), source, hooks);
    let recovered = controller
        .recover()
        .context("resuming rollouts from the state store")?;
    tracing::info!(
        event = "rollouts.recovered",
        count = recovered,
        "live rollouts resumed"
    );

    let app = api::router(AppState {
        controller: controller.clone(),
        metrics: Some(metrics),
        api_token: token.map(Arc::from),
    });
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    tracing::info!(listen = %listener.local_addr()?, rules = controller.rules().len(), prometheus = %cfg.prometheus.url, "canaryd serving");

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
            let _ = reload::reload(&reloader, &patterns);
        }
    });

    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("API server failed")?;
    tracing::info!("shutting down: stopping rollout tasks");
    controller.shutdown().await;
    drop(lock);
    Ok(())
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
