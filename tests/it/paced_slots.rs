//! A slot is judged in waves (`controller/pacer.rs`): at most W rollouts are between "answer in
//! hand" and "decision committed" at once, and every rollout still gets its verdicts. Real
//! Prometheus, eight services with one interval (so their ticks share slots), a controller
//! paced two at a time, and a store whose commits take a while, as an fsync of many rows does:
//! if a rollout gave its turn back before its decision was committed, or took none, the
//! decisions of a slot would pile up in one commit.

use crate::common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use canaryd::actions::HookRunner;
use canaryd::controller::Controller;
use canaryd::demo::prometheus::{PrometheusOptions, PrometheusProcess};
use canaryd::demo::receiver::HookReceiver;
use canaryd::demo::service::DemoService;
use canaryd::rollout::{Phase, Rollout, Tick};
use canaryd::rules::parse_rule;
use canaryd::source::{PrometheusConfig, PrometheusSource};
use common::hooked_store::{Hooked, SaveHook};
use common::{RuleOpts, rule_yaml};

const WIDTH: usize = 2;
const SERVICES: usize = 8;

/// A memory store whose commits of tick decisions take 40 ms, and which records how many tick
/// decisions each commit carried.
#[derive(Default)]
struct SlowCommits {
    ticks_per_commit: Mutex<Vec<usize>>,
    tick_saves: AtomicUsize,
}

impl SaveHook for SlowCommits {
    fn before_batch(&self, batch: &[(&Rollout, Option<&Tick>)]) {
        let ticks = batch.iter().filter(|(_, t)| t.is_some()).count();
        if ticks > 0 {
            self.ticks_per_commit
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(ticks);
            self.tick_saves.fetch_add(ticks, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(40));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_paced_two_at_a_time_commits_at_most_two_ticks_at_once_and_every_rollout_promotes() {
    let names: Vec<String> = (0..SERVICES).map(|i| format!("paced{i}")).collect();
    let mut services = Vec::new();
    for name in &names {
        services.push(
            DemoService::start(name, "127.0.0.1:0".parse().expect("addr"))
                .await
                .expect("demo service"),
        );
    }
    let prometheus = PrometheusProcess::start(PrometheusOptions {
        targets: services.iter().map(|s| s.addr().to_string()).collect(),
        ..PrometheusOptions::default()
    })
    .await
    .expect("prometheus");
    for name in &names {
        common::wait_for_canary_rate(&prometheus, name, Duration::from_secs(30)).await;
    }
    let receiver = HookReceiver::start().await.expect("receiver");
    let opts = RuleOpts::default();
    let rules = names
        .iter()
        .map(|name| {
            let path = std::path::PathBuf::from(format!("{name}.yaml"));
            let rule = parse_rule(&path, &rule_yaml(name, &receiver, &opts)).expect("rule");
            (name.clone(), Arc::new(rule))
        })
        .collect();
    let store = Arc::new(Hooked::<SlowCommits>::default());
    let source = PrometheusSource::new(&PrometheusConfig {
        url: prometheus.url(),
        timeout: Duration::from_secs(5),
        bearer_token: None,
        basic_auth: None,
    })
    .expect("source");
    let controller = Controller::new(
        rules,
        store.clone(),
        source,
        HookRunner::new().expect("hooks"),
    )
    .with_pacing_width(WIDTH);
    let mut ids = Vec::new();
    for name in &names {
        ids.push(controller.start(name, "v2").await.expect("started").id);
    }

    // Every rollout goes through its four steps on judged ticks: a tick that was paced out
    // (missed, no data) would pause it instead (nodata_limit 3).
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let ended = loop {
        let all: Vec<Rollout> = ids
            .iter()
            .map(|id| controller.get(id).expect("rollout"))
            .collect();
        if all.iter().all(|r| !r.is_live()) || std::time::Instant::now() > deadline {
            break all;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    controller.shutdown().await;
    for r in &ended {
        assert_eq!(r.phase, Phase::Succeeded, "{}: {r:?}", r.id);
    }
    let commits = store
        .hook
        .ticks_per_commit
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let saves = store.hook.tick_saves.load(Ordering::SeqCst);
    // Slots of eight ticks each, many of them: the waves had something to pace.
    assert!(saves >= 4 * SERVICES, "{saves} tick saves: {commits:?}");
    assert!(
        commits.iter().all(|&n| n <= WIDTH),
        "a commit carried more tick decisions than the pacing allows: {commits:?}"
    );
}
