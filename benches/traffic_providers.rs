//! Decision → traffic actually moved, per traffic provider, against the real servers, printed
//! as a table. With steady load through the proxy (16 connections, back to back):
//! - **increase**: from the call that sets the canary to 50 % to the first request that reaches
//!   the canary;
//! - **rollback**: from the call that sets the canary to 0 to the last request that reaches it
//!   (once it has had none for 500 ms);
//! - **confirmed**: how long the provider's own call took (set + read back; nginx: `-t`, reload
//!   and the old workers gone).
//!
//! Run: `cargo bench --bench traffic_providers` (needs `haproxy` and `nginx`; `scripts/setup.sh`
//! installs them). `CANARYD_BENCH_RUNS` raises the number of runs (default 7).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use canaryd::demo::traffic_stack::{Backend, HaproxyProcess, NginxProcess, background_load};
use canaryd::rules::traffic::{HaproxySpec, NginxSpec};
use canaryd::traffic::nginx::Nginx;
use canaryd::traffic::{TrafficProvider, Weights, set_confirmed};

struct Run {
    increase: Duration,
    rollback: Duration,
    confirm_up: Duration,
    confirm_down: Duration,
}

async fn measure(p: &dyn TrafficProvider, canary: &Backend, url: &str) -> Run {
    let stop = background_load(url, 16);
    // Load flowing, all on the baseline.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = canary.hits();
    let t0 = Instant::now();
    // Watched beside the call: the first request may reach the canary before it returns.
    let first = std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while canary.hits() == before && Instant::now() < deadline {
                std::thread::sleep(Duration::from_micros(100));
            }
            t0.elapsed()
        });
        let confirm = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(set_confirmed(p, 50))
        });
        confirm.expect("set 50");
        (t0.elapsed(), watcher.join().expect("watcher"))
    });
    let (confirm_up, increase) = first;
    assert!(canary.hits() > before, "canary never reached");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t1 = Instant::now();
    set_confirmed(p, 0).await.expect("set 0");
    let confirm_down = t1.elapsed();
    // Quiet for 500 ms: the last request has arrived.
    loop {
        let h = canary.hits();
        tokio::time::sleep(Duration::from_millis(500)).await;
        if canary.hits() == h {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let rollback = canary
        .last_hit()
        .map(|t| t.saturating_duration_since(t1))
        .unwrap_or_default();
    Run {
        increase,
        rollback,
        confirm_up,
        confirm_down,
    }
}

fn median(mut v: Vec<Duration>) -> String {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!(
        "{:.1} ms (min {:.1}, max {:.1})",
        ms(v[v.len() / 2]),
        ms(v[0]),
        ms(v[v.len() - 1])
    )
}

fn row(name: &str, runs: &[Run]) {
    println!(
        "| {name} | {} | {} | {} / {} |",
        median(runs.iter().map(|r| r.increase).collect()),
        median(runs.iter().map(|r| r.rollback).collect()),
        median(runs.iter().map(|r| r.confirm_up).collect()),
        median(runs.iter().map(|r| r.confirm_down).collect()),
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    // `cargo test --benches` runs this once as a smoke test of both real paths; `cargo bench`
    // (which passes `--bench`) measures.
    let measuring = std::env::args().any(|a| a == "--bench");
    let n: usize = std::env::var("CANARYD_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if measuring { 7 } else { 1 })
        .max(1);
    let canary = Backend::start("canary").await.expect("canary");
    let baseline = Backend::start("baseline").await.expect("baseline");

    let haproxy = HaproxyProcess::start(canary.addr(), baseline.addr())
        .await
        .expect("haproxy");
    let hp = canaryd::traffic::haproxy::Haproxy::new(HaproxySpec {
        socket: Some(haproxy.admin_socket()),
        address: None,
        backend: "app".into(),
        canary: "canary".into(),
        baseline: "baseline".into(),
        timeout: Duration::from_secs(2),
    });
    let mut runs = Vec::new();
    for _ in 0..n {
        runs.push(measure(&hp, &canary, &haproxy.url()).await);
    }
    haproxy.stop();

    let mut spec = NginxSpec {
        include: "unused".into(),
        upstream: "app".into(),
        canary: canary.addr().to_string(),
        baseline: baseline.addr().to_string(),
        sticky_key: None,
        template: None,
        test_command: vec![],
        reload_command: vec![],
        pid_file: None,
        timeout: Duration::from_secs(10),
    };
    let first = Nginx::new(spec.clone())
        .render(Weights::for_canary_pct(0))
        .expect("render");
    let nginx = NginxProcess::start(&first, false).await.expect("nginx");
    spec.include = nginx.include();
    spec.test_command = nginx.command(&["-t"]);
    spec.reload_command = nginx.command(&["-s", "reload"]);
    spec.pid_file = Some(nginx.pid_file());
    let ng = Nginx::new(spec);
    let mut nruns = Vec::new();
    for _ in 0..n {
        nruns.push(measure(&ng, &canary, &nginx.url()).await);
    }
    println!("\nDecision → traffic moved, median of {n} runs, 16 connections of steady load\n");
    println!(
        "| provider | 0 → 50 %: first request at the canary | 50 → 0 %: last request at the canary | provider call (up / down) |"
    );
    println!("|---|---|---|---|");
    row("haproxy (runtime API, unix socket)", &runs);
    row(
        "nginx (include, `nginx -t`, reload, old workers gone)",
        &nruns,
    );
}
