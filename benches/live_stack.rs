//! Live-stack measurements on a real Prometheus (1 s scrape), printed as a table:
//! - detection latency: from the moment the canary's error rate is raised to 20 % to the moment
//!   the rollback hook receives its call (interval 1 s, window 10 s), median of 5 runs;
//! - peak RSS of `canaryd serve` with 10 live rollouts, read from /proc (VmHWM).
//!
//! Run: `cargo bench --bench live_stack`

#[path = "../tests/it/common/mod.rs"]
mod common;

use std::time::{Duration, Instant, SystemTime};

use canaryd::demo::prometheus::{PrometheusOptions, PrometheusProcess};
use canaryd::demo::receiver::HookReceiver;
use canaryd::demo::service::DemoService;
use common::{Daemon, RuleOpts, Stack};

const RUNS: usize = 5;

async fn detection_latency_once(run: usize) -> Duration {
    let name = format!("latency-{run}");
    let stack = Stack::start(
        &name,
        RuleOpts {
            hold: "1h",
            warmup: "2s",
            ..RuleOpts::default()
        },
    )
    .await;
    let id = stack.daemon.start_rollout(&name, "v-bad").await;
    assert!(
        stack
            .receiver
            .wait_for(|c| !c.is_empty(), Duration::from_secs(20))
            .await
    );
    // Let the warmup pass and a few healthy ticks count, as in production.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let healthy = stack.daemon.rollout(&id).await;
    assert_eq!(healthy["phase"], "progressing", "{healthy}");
    let raised_at = SystemTime::now();
    stack.degrade_canary_errors(0.2);
    assert!(
        stack
            .receiver
            .wait_for(
                |c| c.iter().any(|c| c.path == "/rollback"),
                Duration::from_secs(60)
            )
            .await,
        "no rollback within 60 s"
    );
    let call = stack
        .receiver
        .calls()
        .into_iter()
        .find(|c| c.path == "/rollback")
        .expect("rollback call");
    call.at.duration_since(raised_at).unwrap_or_default()
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

async fn peak_rss_with_10_rollouts() -> (u64, usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let service = DemoService::start("rss", "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("service");
    let prometheus = PrometheusProcess::start(PrometheusOptions {
        targets: vec![service.addr().to_string()],
        ..PrometheusOptions::default()
    })
    .await
    .expect("prometheus");
    let receiver = HookReceiver::start().await.expect("receiver");
    let mut rules = Vec::new();
    for i in 0..10 {
        let name = format!("rss-{i}");
        // Every rule watches the same simulated service; names differ so ten rollouts can be live.
        let yaml = common::rule_yaml(
            &name,
            &receiver,
            &RuleOpts {
                hold: "1h",
                ..RuleOpts::default()
            },
        )
        .replace(&format!("service=\"{name}\""), "service=\"rss\"");
        let path = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, yaml).expect("rule");
        rules.push(path);
    }
    prometheus
        .wait_for_series(
            r#"sum(rate(http_requests_total{service="rss"}[4s]))"#,
            Duration::from_secs(30),
        )
        .await
        .expect("series");
    let daemon = Daemon::start(&prometheus.url(), &rules, dir.path(), &[]).await;
    for i in 0..10 {
        daemon.start_rollout(&format!("rss-{i}"), "v1").await;
    }
    // Thirty seconds of ticks: 10 rollouts x 4 metrics x 2 groups = 80 range queries a second.
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let (_, list) = daemon.get("/api/v1/rollouts").await;
    let live = list["rollouts"]
        .as_array()
        .map(|a| a.iter().filter(|r| r["phase"] == "progressing").count())
        .unwrap_or(0);
    let pid = daemon_pid(&daemon).expect("daemon pid");
    let hwm = vm_hwm_kib(pid).expect("VmHWM");
    eprintln!(
        "(rss run: {:?}, {live} rollouts progressing)",
        started.elapsed()
    );
    (hwm, live)
}

fn daemon_pid(d: &Daemon) -> Option<u32> {
    d.pid()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo test --all-targets` runs benches once as tests; the live stack takes minutes, so
    // only measure when asked to (`cargo bench`).
    if !std::env::args().any(|a| a == "--bench") {
        println!("live_stack: run with `cargo bench --bench live_stack` to measure");
        return;
    }
    let mut latencies = Vec::new();
    for run in 0..RUNS {
        let d = detection_latency_once(run).await;
        eprintln!("(detection run {}: {:.2} s)", run + 1, d.as_secs_f64());
        latencies.push(d);
    }
    latencies.sort();
    let median = latencies[RUNS / 2];
    let (hwm, live) = peak_rss_with_10_rollouts().await;
    println!("| measurement | value |");
    println!("|---|---|");
    println!(
        "| detection latency, error rate 0.05% -> 20%, interval 1 s, window 10 s, median of {RUNS} | {:.2} s (min {:.2}, max {:.2}) |",
        median.as_secs_f64(),
        latencies[0].as_secs_f64(),
        latencies[RUNS - 1].as_secs_f64()
    );
    println!(
        "| peak RSS (VmHWM) of `canaryd serve`, {live} live rollouts, 30 s of 1 s ticks | {:.1} MiB |",
        hwm as f64 / 1024.0
    );
}
