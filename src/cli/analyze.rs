//! `canaryd analyze`: replay a rule over a past time range against Prometheus and print what
//! canaryd would have decided at each tick, and when it would have rolled back. The ticks go
//! through the same judge (`controller::analysis::judge_gathered`: only fresh samples taken after
//! the replayed weight's confirmation plus warmup count) and the same state machine as a live
//! rollout; hooks are imagined to succeed at once, at the tick that asked for them.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use clap::Args;

use super::judge::{decision, load_one_rule, table};
use crate::rollout::{Action, Event, HookKind, Plan, Rollout, handle};
use crate::source::{PrometheusConfig, PrometheusSource};

#[derive(Debug, Args)]
pub struct AnalyzeArgs {
    #[arg(long)]
    pub rule: PathBuf,
    /// Start: RFC 3339, unix seconds, `now` or `now-2h`.
    #[arg(long)]
    pub from: String,
    /// End, same forms.
    #[arg(long)]
    pub to: String,
    /// Time between ticks; the rule's `analysis.interval` by default.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub interval: Option<Duration>,
    /// Each tick queries everything since `--from` (Kayenta's growing lifetime) instead of the
    /// rule's sliding `window` (Kayenta's lookback).
    #[arg(long)]
    pub growing: bool,
    #[arg(
        long,
        env = "CANARYD_PROMETHEUS_URL",
        default_value = "http://127.0.0.1:9090"
    )]
    pub prometheus_url: String,
    /// Print every metric's verdict at every tick, not only the summary lines.
    #[arg(long)]
    pub verbose: bool,
}

/// Parses `2026-11-21T10:00:00Z`, `1763719200`, `now`, `now-90m`.
pub fn parse_time(text: &str, now: DateTime<Utc>) -> anyhow::Result<DateTime<Utc>> {
    let t = text.trim();
    if t == "now" {
        return Ok(now);
    }
    if let Some(ago) = t.strip_prefix("now-") {
        let d = humantime::parse_duration(ago).with_context(|| format!("bad duration in {t:?}"))?;
        return Ok(now - chrono::Duration::from_std(d)?);
    }
    if let Ok(secs) = t.parse::<i64>() {
        return DateTime::from_timestamp(secs, 0).context("unix time out of range");
    }
    Ok(DateTime::parse_from_rfc3339(t)
        .with_context(|| {
            format!("time {t:?} is not RFC 3339, unix seconds, now or now-<duration>")
        })?
        .with_timezone(&Utc))
}

pub async fn run(args: AnalyzeArgs) -> anyhow::Result<i32> {
    let rule = load_one_rule(&args.rule).map_err(anyhow::Error::msg)?;
    let now = Utc::now();
    let (from, to) = (parse_time(&args.from, now)?, parse_time(&args.to, now)?);
    if to <= from {
        bail!("--to must be after --from");
    }
    let a = &rule.spec.analysis;
    let interval = args
        .interval
        .unwrap_or(a.interval)
        .max(Duration::from_secs(1));
    let source = PrometheusSource::new(&PrometheusConfig {
        url: args.prometheus_url.clone(),
        timeout: Duration::from_secs(30),
        bearer_token: None,
        basic_auth: None,
    })?;
    let plan = Plan::from_rule(&rule);
    let mut r = Rollout::new("analyze".into(), rule.name().into(), "replay".into(), from);
    r = handle(&r, &plan, Event::Start, from).rollout;
    r = handle(
        &r,
        &plan,
        Event::HookSucceeded {
            hook: HookKind::SetWeight,
        },
        from,
    )
    .rollout;
    println!(
        "analyze {} from {from} to {to}, a tick every {}, {} window",
        rule.name(),
        humantime::format_duration(interval),
        if args.growing {
            "growing".to_string()
        } else {
            format!("{} sliding", humantime::format_duration(a.window))
        }
    );
    let mut t = from + chrono::Duration::from_std(interval)?;
    while t <= to && !r.phase.is_terminal() {
        let window = if args.growing {
            (t - from).to_std()?
        } else {
            a.window
        };
        let end = SystemTime::from(t);
        let tick = crate::controller::analysis::gather(&source, &rule, &r, end, window).await;
        let (checks, score) = (&tick.checks, &tick.score);
        let verdicts: Vec<String> = checks
            .iter()
            .map(|c| format!("{} {:?}", c.metric, c.verdict).to_lowercase())
            .collect();
        println!(
            "{}  weight {:>3}%  score {:>5.1}  {:<8} {}",
            t.format("%Y-%m-%dT%H:%M:%SZ"),
            r.weight,
            score.value,
            decision(checks, score),
            verdicts.join(", ")
        );
        if args.verbose {
            print!("{}", table(checks, score, decision(checks, score)));
        }
        let mut tr = handle(&r, &plan, Event::Tick(tick), t);
        // Hooks are imagined to succeed at once, so the replay follows the plan's steps.
        while let Some(action) = tr.actions.first().cloned() {
            match &action {
                Action::SetWeight { weight, .. } => println!(
                    "{}  -> would shift to {weight}%",
                    t.format("%Y-%m-%dT%H:%M:%SZ")
                ),
                Action::Promote => println!("{}  -> would PROMOTE", t.format("%Y-%m-%dT%H:%M:%SZ")),
                Action::Rollback { reason } | Action::Revert { reason, .. } => println!(
                    "{}  -> would ROLL BACK: {reason}",
                    t.format("%Y-%m-%dT%H:%M:%SZ")
                ),
                other => println!(
                    "{}  -> would run {}",
                    t.format("%Y-%m-%dT%H:%M:%SZ"),
                    other.hook().as_str()
                ),
            }
            tr = handle(
                &tr.rollout,
                &plan,
                Event::HookSucceeded {
                    hook: action.hook(),
                },
                t,
            );
        }
        r = tr.rollout;
        t += chrono::Duration::from_std(interval)?;
    }
    println!(
        "result: {} at weight {}%{}",
        r.phase.as_str(),
        r.weight,
        r.reason
            .as_deref()
            .map(|x| format!(" ({x})"))
            .unwrap_or_default()
    );
    Ok(match r.phase {
        crate::rollout::Phase::RolledBack => 1,
        _ => 0,
    })
}
