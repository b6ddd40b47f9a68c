//! `canaryd rollout …`: a thin client of the HTTP API.

use crate::html::path_segment;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::watch::Follow;

#[derive(Debug, Args)]
pub struct RolloutArgs {
    /// Base URL of the daemon.
    #[arg(long, env = "CANARYD_URL", default_value = "http://127.0.0.1:9797")]
    pub url: String,
    /// File holding the API token (or set CANARYD_API_TOKEN).
    #[arg(long, env = "CANARYD_API_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Print raw JSON instead of a summary.
    #[arg(long)]
    pub json: bool,
    #[command(subcommand)]
    pub command: RolloutCommand,
}

#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Start a rollout of VERSION under RULE.
    Start {
        #[arg(long)]
        rule: String,
        #[arg(long)]
        version: String,
        /// Ignore deploy windows and blackouts; a human approves before the first step, and
        /// verification after promotion is extended.
        #[arg(long)]
        emergency: bool,
        /// The release's database migration id; with `--migration-reversible` or
        /// `--migration-irreversible` it decides what a rollback does about the database.
        #[arg(long)]
        migration_id: Option<String>,
        /// The migration can be undone: a rollback runs `migrate_down` after traffic is back.
        #[arg(long, conflicts_with = "migration_irreversible")]
        migration_reversible: bool,
        /// The migration cannot be undone: a rollback asks a human (downgrade vs restore).
        #[arg(long)]
        migration_irreversible: bool,
    },
    List,
    Status {
        id: String,
        /// Redraw until the rollout ends (plain lines when stdout is not a terminal); exits
        /// as `wait` does.
        #[arg(long)]
        watch: bool,
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        interval: Duration,
    },
    /// Wait until the rollout ends: exit 0 succeeded, 1 rolled back or failed, 2 on timeout,
    /// when the daemon stays unreachable, or when it does not know the rollout.
    Wait {
        id: String,
        #[arg(long, default_value = "2h", value_parser = humantime::parse_duration)]
        timeout: Duration,
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        interval: Duration,
        /// How long the daemon may stay unreachable (a restart) before giving up with 2.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        grace: Duration,
    },
    /// Roll back now.
    Abort(ControlArgs),
    Pause(ControlArgs),
    Resume(ControlArgs),
    /// Leave the current step now (`--full`: skip every remaining step and promote).
    Promote {
        #[command(flatten)]
        control: ControlArgs,
        #[arg(long)]
        full: bool,
    },
    Approve(ControlArgs),
    /// Start a rolled-back or failed rollout again from step 1, as a new run.
    Retry(ControlArgs),
}

#[derive(Debug, Args)]
pub struct ControlArgs {
    pub id: String,
    /// Why: recorded with the name of your token.
    #[arg(long)]
    pub reason: Option<String>,
}

fn control(name: &str, c: &ControlArgs, full: bool) -> (reqwest::Method, String, Option<Value>) {
    let mut body = serde_json::Map::new();
    if let Some(r) = &c.reason {
        body.insert("reason".into(), json!(r));
    }
    if full {
        body.insert("full".into(), json!(true));
    }
    (
        reqwest::Method::POST,
        format!("/api/v1/rollouts/{}/{name}", path_segment(&c.id)),
        (!body.is_empty()).then_some(Value::Object(body)),
    )
}

pub async fn run(args: RolloutArgs) -> anyhow::Result<i32> {
    let token = match std::env::var("CANARYD_API_TOKEN") {
        Ok(t) if !t.trim().is_empty() => Some(t.trim().to_string()),
        _ => match &args.token_file {
            Some(p) => Some(crate::config::Config::read_secret(p)?),
            None => None,
        },
    };
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .context("building the HTTP client")?;
    let base = args.url.trim_end_matches('/');
    let follow = |id: &str, timeout: Duration, interval: Duration, grace: Duration| {
        (
            id.to_string(),
            timeout,
            interval.max(Duration::from_millis(100)),
            grace,
        )
    };
    let (method, path, body) = match &args.command {
        RolloutCommand::Start {
            rule,
            version,
            emergency,
            migration_id,
            migration_reversible,
            migration_irreversible,
        } => {
            let mut body = json!({"rule": rule, "version": version});
            if *emergency {
                body["emergency"] = json!(true);
            }
            if *migration_reversible || *migration_irreversible {
                body["migration"] = json!({
                    "reversible": migration_reversible,
                    "id": migration_id.clone().unwrap_or_default(),
                });
            } else if migration_id.is_some() {
                anyhow::bail!(
                    "--migration-id needs --migration-reversible or --migration-irreversible"
                );
            }
            (
                reqwest::Method::POST,
                "/api/v1/rollouts".to_string(),
                Some(body),
            )
        }
        RolloutCommand::List => (reqwest::Method::GET, "/api/v1/rollouts".to_string(), None),
        RolloutCommand::Status {
            id,
            watch: true,
            interval,
        } => {
            let (id, timeout, interval, grace) = follow(
                id,
                Duration::from_secs(366 * 86_400),
                *interval,
                Duration::from_secs(30),
            );
            let f = Follow {
                http: &http,
                base,
                id: &id,
                timeout,
                interval,
                grace,
            };
            return Ok(f.watch().await);
        }
        RolloutCommand::Wait {
            id,
            timeout,
            interval,
            grace,
        } => {
            let (id, timeout, interval, grace) = follow(id, *timeout, *interval, *grace);
            let f = Follow {
                http: &http,
                base,
                id: &id,
                timeout,
                interval,
                grace,
            };
            return Ok(f.wait().await);
        }
        RolloutCommand::Status { id, .. } => (
            reqwest::Method::GET,
            format!("/api/v1/rollouts/{}", path_segment(id)),
            None,
        ),
        RolloutCommand::Abort(c) => control("abort", c, false),
        RolloutCommand::Pause(c) => control("pause", c, false),
        RolloutCommand::Resume(c) => control("resume", c, false),
        RolloutCommand::Promote { control: c, full } => control("promote", c, *full),
        RolloutCommand::Approve(c) => control("approve", c, false),
        RolloutCommand::Retry(c) => control("retry", c, false),
    };
    let mut req = http.request(method, format!("{base}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("cannot reach canaryd at {base}"))?;
    let status = resp.status();
    let value: Value = resp
        .json()
        .await
        .context("canaryd answered something that is not JSON")?;
    if !status.is_success() {
        bail!(
            "{} ({})",
            value["error"].as_str().unwrap_or("request failed"),
            status
        );
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else if let Some(list) = value["rollouts"].as_array() {
        println!(
            "{:<16} {:<20} {:<14} {:<17} {:>6}  REASON",
            "ID", "RULE", "VERSION", "PHASE", "WEIGHT"
        );
        for r in list {
            println!("{}", super::watch::clean(&summary_line(r)));
        }
    } else {
        println!("{}", super::watch::clean(&summary_line(&value)));
        for c in value["checks"].as_array().into_iter().flatten() {
            println!(
                "  {:<22} {:<7} {}",
                c["metric"].as_str().unwrap_or(""),
                c["verdict"].as_str().unwrap_or(""),
                super::watch::clean(c["reason"].as_str().unwrap_or(""))
            );
        }
    }
    Ok(0)
}

fn summary_line(r: &Value) -> String {
    format!(
        "{:<16} {:<20} {:<14} {:<17} {:>5}%  {}",
        r["id"].as_str().unwrap_or(""),
        r["rule"].as_str().unwrap_or(""),
        r["version"].as_str().unwrap_or(""),
        r["phase"].as_str().unwrap_or(""),
        r["weight"].as_u64().unwrap_or(0),
        r["reason"].as_str().unwrap_or("")
    )
}
