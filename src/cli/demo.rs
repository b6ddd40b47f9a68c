//! `canaryd demo`: the one-command showcase. A real Prometheus, a simulated service with a
//! baseline and a canary, a hook receiver, and two rollouts of a shipped policy: one healthy
//! (promoted) and one whose canary starts failing at 25 % (rolled back).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use tokio::sync::broadcast::error::RecvError;

use crate::actions::HookRunner;
use crate::api::AppState;
use crate::controller::{Controller, Update};
use crate::demo::prometheus::{PrometheusOptions, PrometheusProcess};
use crate::demo::real_traffic::RealTraffic;
use crate::demo::receiver::HookReceiver;
use crate::demo::service::{DemoService, Track};
use crate::judge::checks::fmt;
use crate::rollout::{Action, Phase};
use crate::rules::{Rule, parse_rule_with};
use crate::source::{PrometheusConfig, PrometheusSource};
use crate::store::MemoryStore;

/// The shipped policy the demo runs, compiled in so the demo works from any directory.
const POLICY_PATH: &str = "rules/hotrodan.yaml";
const POLICY: &str = include_str!("../../rules/hotrodan.yaml");
/// The metric templates the shipped policy uses.
const TEMPLATES_PATH: &str = "rules/signals.templates.yaml";
const TEMPLATES: &str = include_str!("../../rules/signals.templates.yaml");

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Seconds each step holds before the next.
    #[arg(long, default_value_t = 6)]
    pub hold: u64,
    /// Canary error rate injected into the second rollout once it reaches 25 %.
    #[arg(long, default_value_t = 0.12)]
    pub bad_error_rate: f64,
}

/// The shipped policy with second-scale timings and the local stack's addresses.
fn demo_rule(receiver: &HookReceiver, hold: u64) -> anyhow::Result<Rule> {
    let templates = [(std::path::Path::new(TEMPLATES_PATH), TEMPLATES)];
    let mut rule = parse_rule_with(std::path::Path::new(POLICY_PATH), POLICY, &templates)
        .map_err(|errors| anyhow::anyhow!("shipped policy is invalid: {}", errors[0]))?;
    let name = rule.name().to_string();
    let spec = &mut rule.spec;
    spec.selector.canary = format!(r#"service="{name}", track="canary""#);
    spec.selector.baseline = format!(r#"service="{name}", track="baseline""#);
    let a = &mut spec.analysis;
    a.interval = Duration::from_secs(1);
    a.window = Duration::from_secs(20);
    a.step = Duration::from_secs(4);
    a.warmup = Duration::from_secs(3);
    for step in spec.steps.value.iter_mut() {
        if step.value.hold.is_some() {
            step.value.hold = Some(Duration::from_secs(hold));
        }
    }
    let hook = |path: &str| crate::rules::schema::HookSpec {
        url: Some(receiver.url(path)),
        command: None,
        timeout: Duration::from_secs(2),
        retries: 3,
        secret_file: None,
    };
    for (slot, path) in [
        (&mut spec.hooks.set_weight, "/weight"),
        (&mut spec.hooks.promote, "/promote"),
        (&mut spec.hooks.rollback, "/rollback"),
    ] {
        *slot = Some(crate::rules::shared::Shared::new(
            serde_saphyr::Spanned::new(
                hook(path),
                serde_saphyr::Location::UNKNOWN,
                serde_saphyr::Location::UNKNOWN,
            ),
        ));
    }
    // The demo runs now, whatever the day: the Tue–Thu window would otherwise hold it.
    rule.windows = None;
    spec.windows = None;
    spec.health.clear();
    Ok(rule)
}

/// Where the demo's requests and metrics come from.
enum Stack {
    /// HAProxy in front of two real processes that count what they serve: Prometheus scrapes
    /// them, so the verdicts judge the requests HAProxy really split.
    Real(Box<RealTraffic>),
    /// No HAProxy: the simulated service, where the weight is a label.
    Simulated(DemoService),
}

impl Stack {
    fn real(&self) -> Option<&RealTraffic> {
        match self {
            Stack::Real(rt) => Some(rt),
            Stack::Simulated(_) => None,
        }
    }

    /// The canary answers `rate` of its requests with 500 (`None`: as healthy as the baseline).
    fn canary_errors(&self, rate: Option<f64>) {
        match self {
            Stack::Real(rt) => rt.set_canary_error_rate(rate.unwrap_or(0.0)),
            Stack::Simulated(s) => {
                let rate = rate.unwrap_or_else(|| s.profile(Track::Baseline).error_rate);
                s.update(Track::Canary, |p| p.error_rate = rate);
            }
        }
    }
}

/// Keeps the metrics the real backends can answer (those over their request counts and
/// latency histogram) and returns the names of those left out: a metric with no series would
/// only ever say "no data".
fn keep_real_metrics(rule: &mut Rule) -> Vec<String> {
    let families = crate::demo::traffic_stack::BACKEND_FAMILIES;
    let mut dropped = Vec::new();
    rule.spec.metrics.value.retain(|m| {
        let text = serde_json::to_string(&m.value).unwrap_or_default();
        let keep = families.iter().any(|f| text.contains(f));
        if !keep {
            dropped.push(m.value.name.clone());
        }
        keep
    });
    dropped
}

pub async fn run(args: DemoArgs) -> anyhow::Result<i32> {
    let service_name = "hotrodan";
    let stack = match RealTraffic::start_if_installed(service_name)
        .await
        .context("starting HAProxy for real traffic")?
    {
        Some(rt) => Stack::Real(Box::new(rt)),
        None => Stack::Simulated(DemoService::start(service_name, "127.0.0.1:0".parse()?).await?),
    };
    match &stack {
        Stack::Real(_) => println!(
            "canaryd demo: a real Prometheus, real requests through HAProxy to a baseline and a \
             canary process, two rollouts of {POLICY_PATH}\n"
        ),
        Stack::Simulated(_) => println!(
            "canaryd demo: a real Prometheus, a simulated service, two rollouts of {POLICY_PATH}\n"
        ),
    }
    let targets = match &stack {
        Stack::Real(rt) => rt.metric_targets(),
        Stack::Simulated(s) => vec![s.addr().to_string()],
    };
    let prometheus = PrometheusProcess::start(PrometheusOptions {
        targets,
        ..PrometheusOptions::default()
    })
    .await
    .context("starting Prometheus")?;
    let receiver = HookReceiver::start().await?;
    receiver.on_call(|c| {
        let b = &c.body;
        println!(
            "    hook <- {:<9} weight {:>3}%  {}",
            b["event"].as_str().unwrap_or("?"),
            b["weight"].as_u64().unwrap_or(0),
            b["reason"].as_str().unwrap_or("")
        );
    });
    let mut rule = demo_rule(&receiver, args.hold)?;
    match &stack {
        Stack::Real(rt) => {
            println!(
                "  haproxy     {} (real requests to a baseline and a canary process; canaryd moves its weights)",
                rt.url()
            );
            println!(
                "  backends    http://{}/metrics (each counts the requests it really served)",
                rt.metric_targets().join("/metrics, http://")
            );
            rule.spec.traffic = Some(Box::new(serde_saphyr::Spanned::new(
                rt.spec(),
                serde_saphyr::Location::UNKNOWN,
                serde_saphyr::Location::UNKNOWN,
            )));
            let dropped = keep_real_metrics(&mut rule);
            println!(
                "  verdicts    from the requests HAProxy really split (requests by code, latency); \
                 left out, as the backends have no such series: {}",
                dropped.join(", ")
            );
        }
        Stack::Simulated(s) => {
            println!(
                "  (HAProxy not installed: traffic is simulated and the weight is a label; \
                 `scripts/setup.sh` installs it for the real-traffic demo)"
            );
            println!(
                "  service     http://{}/metrics (baseline and canary tracks, simulated)",
                s.addr()
            );
        }
    }
    println!("  prometheus  {} (scrapes every 1s)", prometheus.url());
    println!("  hooks       {}", receiver.url("/"));
    if rule.name() != service_name {
        bail!(
            "demo expects the {service_name} policy, found {}",
            rule.name()
        );
    }
    prometheus
        .wait_for_series(
            &format!(
                r#"sum(rate(http_requests_total{{service="{service_name}",track="canary"}}[4s]))"#
            ),
            Duration::from_secs(30),
        )
        .await?;
    let source = PrometheusSource::new(&PrometheusConfig {
        url: prometheus.url(),
        timeout: Duration::from_secs(3),
        bearer_token: None,
        basic_auth: None,
    })?;
    let rules = [(rule.name().to_string(), Arc::new(rule))]
        .into_iter()
        .collect();
    let controller = Controller::new(
        rules,
        Arc::new(MemoryStore::default()),
        source,
        HookRunner::new()?,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!(
        "  canaryd API http://{}/api/v1/rollouts",
        listener.local_addr()?
    );
    println!("  web view    http://{}/\n", listener.local_addr()?);
    let app = crate::web::app(AppState {
        controller: controller.clone(),
        metrics: crate::telemetry::install_metrics().ok(),
        api_token: None,
        api_tokens: Default::default(),
        reports: crate::controller::report::ReportBook::default(),
    });
    tokio::spawn(async move { axum::serve(listener, app).await });

    println!("== rollout 1: v1.1.0, canary as healthy as the baseline");
    let first = drive(&controller, &stack, service_name, "v1.1.0", None).await?;
    println!(
        "== rollout 2: v1.2.0, canary error rate jumps to {}% once it has 25% of traffic",
        args.bad_error_rate * 100.0
    );
    stack.canary_errors(None);
    let second = drive(
        &controller,
        &stack,
        service_name,
        "v1.2.0",
        Some(args.bad_error_rate),
    )
    .await?;

    println!("\nsummary");
    println!(
        "  v1.1.0  {}  ({})",
        first.phase.as_str(),
        first.reason.as_deref().unwrap_or("every step healthy")
    );
    println!(
        "  v1.2.0  {}  ({})",
        second.phase.as_str(),
        second.reason.as_deref().unwrap_or("")
    );
    if let Some(rt) = stack.real() {
        let (served, errors) = rt.canary_served();
        println!(
            "  (judged on real traffic: the canary process served {served} requests, {errors} of them 500)"
        );
    }
    controller.shutdown().await;
    if first.phase == Phase::Succeeded && second.phase == Phase::RolledBack {
        println!("\ndemo OK: the healthy canary was promoted, the failing one rolled back.");
        Ok(0)
    } else {
        println!("\ndemo did not end as expected");
        Ok(1)
    }
}

/// Runs one rollout to its end, printing each step, each tick's verdicts and the outcome.
async fn drive(
    controller: &Controller,
    stack: &Stack,
    rule: &str,
    version: &str,
    degrade_at_25: Option<f64>,
) -> anyhow::Result<crate::rollout::Rollout> {
    let real = stack.real();
    let mut updates = controller.subscribe();
    let started = Instant::now();
    let r = controller.start(rule, version).await?;
    let id = r.id.clone();
    let mut degraded = false;
    // The weight being measured; none until this rollout's first weight is confirmed.
    let mut weight: Option<u32> = None;
    loop {
        let u: Update = match tokio::time::timeout(Duration::from_secs(120), updates.recv()).await {
            Err(_) => bail!("rollout {id} made no progress for two minutes"),
            Ok(Err(RecvError::Lagged(_))) => continue,
            Ok(Err(RecvError::Closed)) => bail!("controller stopped"),
            Ok(Ok(u)) => u,
        };
        if u.rollout.id != id {
            continue;
        }
        let at = started.elapsed().as_secs_f64();
        if let Some(rt) = real
            && u.rollout.step_started_at.is_some()
            && weight != Some(u.rollout.weight)
        {
            let (share, n) = rt.share();
            if let Some(w) = weight
                && n > 0
            {
                println!(
                    "  [{at:5.1}s]   measured at {w}%: canary got {share:.1}% of {n} real requests"
                );
            }
            weight = Some(u.rollout.weight);
            rt.mark();
        }
        if u.event == "tick"
            && let Some(t) = &u.rollout.last_tick
        {
            let parts: Vec<String> = t
                .checks
                .iter()
                .map(|c| {
                    format!(
                        "{} {} {}{}",
                        c.metric,
                        serde_json::to_value(c.verdict)
                            .ok()
                            .and_then(|v| v.as_str().map(String::from))
                            .unwrap_or_default(),
                        c.canary.map(fmt).unwrap_or("-".into()),
                        c.threshold
                            .map(|t| format!("/{}", fmt(t.value)))
                            .unwrap_or_default()
                    )
                })
                .collect();
            let measured = real.map_or(String::new(), |rt| {
                let (share, n) = rt.share();
                format!(" (measured {share:.1}% of {n})")
            });
            println!(
                "  [{at:5.1}s]   tick at {}%{measured}: score {:.0} | {}",
                u.rollout.weight,
                t.score.value,
                parts.join(" | ")
            );
        }
        for a in &u.actions {
            match a {
                Action::SetWeight { step, weight } => {
                    println!("  [{at:5.1}s] step {} -> {weight}% of traffic", step + 1)
                }
                Action::Promote => println!("  [{at:5.1}s] every step healthy: promoting"),
                Action::Rollback { reason } => println!("  [{at:5.1}s] ROLLBACK: {reason}"),
                Action::Revert { reason, .. } => println!("  [{at:5.1}s] REVERT: {reason}"),
                other => println!("  [{at:5.1}s] {}", other.hook().as_str()),
            }
        }
        if let Some(bad) = degrade_at_25
            && !degraded
            && u.rollout.weight == 25
        {
            degraded = true;
            stack.canary_errors(Some(bad));
            println!(
                "  [{at:5.1}s] (demo) canary now answers {}% of requests with 500",
                bad * 100.0
            );
        }
        if u.rollout.phase.is_terminal() {
            println!(
                "  [{at:5.1}s] {} {} after {:.0}s\n",
                version,
                u.rollout.phase.as_str(),
                at
            );
            return Ok(std::sync::Arc::unwrap_or_clone(u.rollout));
        }
    }
}
