//! Scale: what N live rollouts cost one `canaryd serve` and the Prometheus it queries.
//!
//! One run per N: a synthetic exporter for N services × {baseline, canary}
//! (`scale_support/exporter.rs`), a real Prometheus scraping it every 5 s, N rule files built on
//! one template file with the shipped rules' four signals (10 s interval, holds of a day), `canaryd serve` as a child
//! process on a fresh SQLite state dir, and N rollouts started through the API. After `settle`,
//! a window of `duration` is measured: canaryd's CPU share (utime + stime over wall time, all
//! threads) and peak RSS (VmHWM), Prometheus's CPU share (scrapes only, then under the
//! rollouts) and the queries it answered (its own `prometheus_http_requests_total` on the query
//! handlers), tick punctuality (gaps between a rollout's consecutive ticks, from the store's
//! `ticks` table), and store writes: ticks saved (one transaction each before group commit),
//! `canaryd_store_commits_total` where the daemon has it, and fsync + fdatasync calls counted
//! by `perf stat` on the syscall tracepoints (n/a without perf or root).
//!
//! Run (release): `cargo bench --bench scale -- --n 1000,3000 --duration 3m`
//! Parameters, as flags after `--` or environment variables:
//! - `--n` / `SCALE_N`: comma-separated N (default 1000,3000; 10000 on request)
//! - `--duration` / `SCALE_DURATION` (default 3m), `--settle` / `SCALE_SETTLE` (60s),
//!   `--idle` / `SCALE_IDLE` (20s: Prometheus with scrapes only)
//! - `--scrape` / `SCALE_SCRAPE` (default 15s; `0s` for none): canaryd's `/metrics` is read this
//!   often from the settle's start to the window's end, as a Prometheus would
//!   (`scale_support/scrape.rs`), so its cost is in the peak RSS; the diagnostics line says
//!   how many scrapes, how long they took and how large the text was
//! - `--batch on|off` / `SCALE_BATCH` (default on, as the daemon): adds the daemon flag for batching
//!   (`SCALE_BATCH_ON_ARGS`, see `scale_support/setup.rs`); printed in the table
//! - `--daemon-arg ARG` (repeatable) / `SCALE_DAEMON_ARGS`: more `canaryd serve` arguments
//! - `--start-concurrency` / `SCALE_START_CONCURRENCY` (default 8)
//! - `--interval` / `SCALE_INTERVAL` (default 10s): the rules' analysis interval
//! - `SCALE_CANARYD`: the daemon binary to measure (default: the one cargo built with the bench)
//!
//! The diagnostics line after each row also gives the Prometheus answer bytes canaryd read,
//! by encoding (`--daemon-arg=--prometheus-compress --daemon-arg=false` for plain answers).
//! SIGINT or SIGTERM stops the bench with its Prometheus and daemon; after a SIGKILL the
//! kernel and a watchdog kill them (`scale_support/watchdog.rs`).
//!
//! Under `cargo test --benches` (no `--bench`), one smoke run: N = 5, 1 s scrapes, 2 s ticks,
//! a 6 s window, failing if anything the table reports was not measured.

#[path = "scale_support/daemon.rs"]
mod daemon;
#[path = "scale_support/diag.rs"]
mod diag;
#[path = "scale_support/exporter.rs"]
mod exporter;
#[path = "scale_support/measure.rs"]
mod measure;
#[path = "scale_support/report.rs"]
mod report;
#[path = "scale_support/scrape.rs"]
mod scrape;
#[path = "scale_support/setup.rs"]
mod setup;
#[path = "scale_support/watchdog.rs"]
mod watchdog;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use canaryd::demo::prometheus::{PrometheusOptions, PrometheusProcess};
use canaryd::demo::receiver::HookReceiver;
use futures_util::StreamExt as _;

use daemon::ScaleDaemon;
use exporter::{Exporter, service_name};
use measure::Ticks;
use report::{Row, Sample};
use setup::Config;

/// The store's file in the state dir (`rollout::sqlite::DB_FILE`, named here so a move of the
/// store module does not break the bench).
const DB_FILE: &str = "canaryd.db";

struct Pids {
    canaryd: u32,
    prometheus: u32,
    bench: u32,
    ticks_per_second: f64,
}

async fn sample(
    http: &reqwest::Client,
    pids: &Pids,
    prometheus: &PrometheusProcess,
    daemon: &ScaleDaemon,
    ticks: &Ticks,
) -> Result<Sample> {
    let cpu = |pid| {
        measure::cpu_seconds(pid, pids.ticks_per_second)
            .with_context(|| format!("/proc/{pid}/stat unreadable: did the process exit?"))
    };
    let at = Instant::now();
    let (canaryd_cpu, prometheus_cpu, bench_cpu) =
        (cpu(pids.canaryd)?, cpu(pids.prometheus)?, cpu(pids.bench)?);
    let daemon_metrics = measure::get_text(http, &format!("{}/metrics", daemon.url)).await?;
    // An overloaded Prometheus may not answer its own /metrics (its connections are all taken by
    // queries): then the query rate falls back to canaryd's count of the queries it sent.
    let prometheus_queries = tokio::time::timeout(
        Duration::from_secs(20),
        measure::prometheus_queries(http, &prometheus.url()),
    )
    .await
    .ok()
    .and_then(Result::ok);
    Ok(Sample {
        at,
        canaryd_cpu,
        prometheus_cpu,
        bench_cpu,
        prometheus_queries,
        prometheus_at: Instant::now(),
        canaryd_queries: measure::family_sum(
            &daemon_metrics,
            "canaryd_prometheus_query_duration_seconds_count",
            |_| true,
        ),
        // Added by the scheduler's group commit; absent on builds before it.
        store_commits: measure::family_sum(&daemon_metrics, "canaryd_store_commits_total", |_| {
            true
        }),
        tick_seq: ticks.last_seq()?,
        daemon_metrics,
    })
}

async fn start_rollouts(cfg: &Config, daemon: &ScaleDaemon, n: usize) -> Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let failures: Vec<String> = futures_util::stream::iter(0..n)
        .map(|i| {
            let http = http.clone();
            let url = format!("{}/api/v1/rollouts", daemon.url);
            async move {
                let body = serde_json::json!({"rule": service_name(i), "version": "v2"});
                match http.post(&url).json(&body).send().await {
                    Ok(r) if r.status().as_u16() == 201 => None,
                    Ok(r) => Some(format!(
                        "{}: {}",
                        r.status(),
                        r.text().await.unwrap_or_default()
                    )),
                    Err(e) => Some(e.to_string()),
                }
            }
        })
        .buffer_unordered(cfg.start_concurrency)
        .filter_map(|f| async move { f })
        .collect()
        .await;
    if let Some(first) = failures.first() {
        bail!(
            "{} of {n} rollout starts failed; first: {first}",
            failures.len()
        );
    }
    Ok(())
}

async fn run(cfg: &Config, n: usize) -> Result<Row> {
    let t = cfg.timing;
    let dir = tempfile::tempdir()?;
    let (rules, state) = (dir.path().join("rules"), dir.path().join("state"));
    std::fs::create_dir_all(&rules)?;
    std::fs::create_dir_all(&state)?;
    let exporter = Exporter::start(n).await?;
    let prometheus = PrometheusProcess::start(PrometheusOptions {
        targets: exporter.targets(),
        scrape_interval: t.scrape,
        evaluation_interval: t.scrape,
        ..PrometheusOptions::default()
    })
    .await?;
    let config_arg = format!(
        "--config.file={}",
        prometheus.dir().join("prometheus.yml").display()
    );
    let prometheus_pid = measure::pid_with_arg(&config_arg).context("Prometheus's PID")?;
    // Rates need two scrapes of every shard: the last service stands for its whole shard.
    for i in (0..n).step_by(exporter::SHARD).chain([n - 1]) {
        let q = format!(
            r#"sum(rate(http_requests_total{{service="{}"}}[{}s]))"#,
            service_name(i),
            t.rate.as_secs()
        );
        prometheus
            .wait_for_series(&q, Duration::from_secs(120))
            .await?;
    }
    let ticks_per_second = measure::clock_ticks_per_second();
    let idle_cpu = if cfg.idle.is_zero() {
        None
    } else {
        let before = measure::cpu_seconds(prometheus_pid, ticks_per_second);
        tokio::time::sleep(cfg.idle).await;
        let after = measure::cpu_seconds(prometheus_pid, ticks_per_second);
        before
            .zip(after)
            .map(|(b, a)| (a - b) / cfg.idle.as_secs_f64())
    };
    let receiver = HookReceiver::start().await?;
    std::fs::write(rules.join("signals.templates.yaml"), setup::TEMPLATES_YAML)?;
    for i in 0..n {
        let name = service_name(i);
        let yaml = setup::rule_yaml(&name, &t, |p| receiver.url(p));
        std::fs::write(rules.join(format!("{name}.yaml")), yaml)?;
    }
    let daemon = ScaleDaemon::start(&prometheus.url(), &rules, n, &state, &cfg.daemon_args).await?;
    let started = Instant::now();
    start_rollouts(cfg, &daemon, n).await?;
    let start_time = started.elapsed();
    eprintln!(
        "(N={n}: {n} rollouts started in {start_time:.1?}; settling {:?})",
        cfg.settle
    );
    let pids = Pids {
        canaryd: daemon.pid().context("canaryd's PID")?,
        prometheus: prometheus_pid,
        bench: std::process::id(),
        ticks_per_second,
    };
    let ticks = Ticks::open(&state.join(DB_FILE))?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let scraper = scrape::Scraper::start(
        http.clone(),
        format!("{}/metrics", daemon.url),
        cfg.scrape_every,
    );
    tokio::time::sleep(cfg.settle).await;
    let first = sample(&http, &pids, &prometheus, &daemon, &ticks).await?;
    let fsyncs = measure::count_fsyncs(pids.canaryd, cfg.duration);
    tokio::time::sleep(cfg.duration).await;
    let last = sample(&http, &pids, &prometheus, &daemon, &ticks).await?;
    let scrapes = scraper.finish().await;
    let (fds_canaryd, fds_prometheus) = (diag::fds(pids.canaryd), diag::fds(pids.prometheus));
    let fsyncs = fsyncs.await.ok().flatten();
    let window = ticks.window(first.tick_seq, last.tick_seq)?;
    let row = Row {
        n,
        batch: cfg.batch,
        start_time,
        interval: t.interval,
        first,
        last,
        window,
        fsyncs_per_second: fsyncs.map(|f| f / cfg.duration.as_secs_f64()),
        prometheus_idle_cpu: idle_cpu,
        canaryd_hwm_kib: measure::vm_kib(pids.canaryd, "VmHWM"),
        prometheus_hwm_kib: measure::vm_kib(pids.prometheus, "VmHWM"),
        phases: ticks.phases()?,
        diagnostics: String::new(),
    };
    let row = Row {
        diagnostics: diag::line(
            &row.first.daemon_metrics,
            &row.last.daemon_metrics,
            &fds_canaryd,
            &fds_prometheus,
            daemon.log_path(),
        ) + "; "
            + &diag::answer_bytes(
                &row.first.daemon_metrics,
                &row.last.daemon_metrics,
                cfg.duration,
                t.interval,
            )
            + "; "
            + &scrapes.line(),
        ..row
    };
    drop(daemon);
    Ok(row)
}

/// Runs the bench until it ends or SIGINT/SIGTERM arrives. On a signal the run is dropped
/// first, so its Prometheus and daemon are killed (their drops) before the bench exits with
/// 128 + the signal; the default action would end the bench with both still running. SIGKILL
/// cannot be caught: then the kernel kills them (`die_with_parent`).
#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut int, mut term) = (
        signal(SignalKind::interrupt())?,
        signal(SignalKind::terminate())?,
    );
    let stopped = tokio::select! {
        outcome = bench() => return outcome,
        _ = int.recv() => 130,
        _ = term.recv() => 143,
    };
    // `bench()` is dropped here, at the end of the `select!`: every child killed and reaped.
    eprintln!("scale: stopped by a signal; its Prometheus and daemon were killed");
    std::process::exit(stopped)
}

async fn bench() -> Result<()> {
    let cfg = Config::from_env_and_args()?;
    let build = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    eprintln!(
        "scale: N={:?}, window {:?} after {:?}, batch {}, daemon args {:?}, {build} harness, \
         canaryd {}{}",
        cfg.ns,
        cfg.duration,
        cfg.settle,
        if cfg.batch { "on" } else { "off" },
        cfg.daemon_args,
        daemon::binary().display(),
        if cfg.smoke {
            " (smoke run: `cargo bench --bench scale` measures)"
        } else {
            ""
        },
    );
    let mut rows = Vec::new();
    for &n in &cfg.ns {
        let row = run(&cfg, n).await.with_context(|| format!("N = {n}"))?;
        eprintln!("{}", report::header());
        eprintln!("{}", row.line());
        eprintln!("(N={n}) {}", row.diagnostics);
        rows.push(row);
    }
    println!("{}", report::header());
    for row in &rows {
        println!("{}", row.line());
    }
    for row in &rows {
        println!("(N={}) {}", row.n, row.diagnostics);
    }
    if cfg.smoke {
        for row in &rows {
            row.check_measured()?;
        }
        println!("scale: smoke run measured every column; `cargo bench --bench scale` for numbers");
    }
    Ok(())
}
