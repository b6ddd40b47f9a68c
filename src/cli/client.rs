//! `canaryd rollout …`: a thin client of the HTTP API.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

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
    },
    Abort {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    Pause {
        id: String,
    },
    Resume {
        id: String,
    },
    Promote {
        id: String,
    },
    Approve {
        id: String,
    },
}

pub async fn run(args: RolloutArgs) -> anyhow::Result<i32> {
    let token = match std::env::var("CANARYD_API_TOKEN") {
        Ok(t) if !t.trim().is_empty() => Some(t.trim().to_string()),
        _ => match &args.token_file {
            Some(p) => Some(crate::config::Config::read_secret(p)?),
            None => None,
        },
    };
    let http = reqwest::Client::new();
    let base = args.url.trim_end_matches('/');
    let (method, path, body) = match &args.command {
        RolloutCommand::Start {
            rule,
            version,
            migration_id,
            migration_reversible,
            migration_irreversible,
        } => {
            let mut body = json!({"rule": rule, "version": version});
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
        RolloutCommand::Status { id } => {
            (reqwest::Method::GET, format!("/api/v1/rollouts/{id}"), None)
        }
        RolloutCommand::Abort { id, reason } => (
            reqwest::Method::POST,
            format!("/api/v1/rollouts/{id}/abort"),
            reason.as_ref().map(|r| json!({"reason": r})),
        ),
        RolloutCommand::Pause { id } => (
            reqwest::Method::POST,
            format!("/api/v1/rollouts/{id}/pause"),
            None,
        ),
        RolloutCommand::Resume { id } => (
            reqwest::Method::POST,
            format!("/api/v1/rollouts/{id}/resume"),
            None,
        ),
        RolloutCommand::Promote { id } => (
            reqwest::Method::POST,
            format!("/api/v1/rollouts/{id}/promote"),
            None,
        ),
        RolloutCommand::Approve { id } => (
            reqwest::Method::POST,
            format!("/api/v1/rollouts/{id}/approve"),
            None,
        ),
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
            println!("{}", summary_line(r));
        }
    } else {
        println!("{}", summary_line(&value));
        for c in value["checks"].as_array().into_iter().flatten() {
            println!(
                "  {:<22} {:<7} {}",
                c["metric"].as_str().unwrap_or(""),
                c["verdict"].as_str().unwrap_or(""),
                c["reason"].as_str().unwrap_or("")
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
