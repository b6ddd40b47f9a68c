//! kill -9 `canaryd serve` at random moments across many rollouts against a real Prometheus and
//! real hook receivers, restart it on the same state directory each time, and check that nothing
//! a rollout promised was lost: every rollout ends as its canary deserved, weights only go up one
//! step at a time until a rollback, nothing promotes after a rollback, and every rollback that was
//! decided reaches a receiver at least once, also when that receiver was down when it was decided.
//!
//! Rollouts run in waves; each wave kills the daemon until all of its rollouts have settled.
//! Each kill is counted in the window every live rollout was seen in just before it (analysing,
//! an action saved but not confirmed, a rollback owed by a `failed` rollout), and the tally is
//! printed; the run must have killed inside the analysis window and, when a rollback receiver
//! was down, while a rollback was owed. Random kills rarely land in the microsecond windows
//! between a save and its hook: `tests/it/fault_points.rs` stops the daemon exactly there. Nothing
//! is bounded by wall-clock time, which a loaded machine stretches: a run fails if no hook
//! attempt and no phase changes across [`STALL_CYCLES`] kill cycles in a row.
//!
//! The seed (default [`DEFAULT_SEED`]) is printed; `CANARYD_CRASH_SEED=<n>` replays a run's
//! fates and kill schedule.
//! `CANARYD_CRASH_WAVES` and `CANARYD_CRASH_PER_WAVE` raise the counts for the long run in
//! BENCHMARKS.md ("Crash test at scale").

use crate::common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use canaryd::demo::prometheus::{PrometheusOptions, PrometheusProcess};
use canaryd::demo::receiver::{HookReceiver, ReceivedCall};
use canaryd::demo::service::{DemoService, Track};
use common::Daemon;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

/// The suite's run: 24 rollouts, in about two minutes on a quiet machine.
const WAVES: usize = 3;
const PER_WAVE: usize = 8;
/// The run CI makes; any other is one variable away.
const DEFAULT_SEED: u64 = 15;
/// A rollout takes a few seconds per step; this many kill cycles without any hook attempt or
/// phase change (about a minute) means something is stuck.
const STALL_CYCLES: usize = 40;

/// Short holds so a wave fits in seconds; thresholds only (no ratio, no statistics), so a
/// healthy canary's fate is certain and any rollback of one is a bug.
fn rule_yaml(name: &str, hooks: [&Arc<HookReceiver>; 3]) -> String {
    let [set_weight, promote, rollback] = hooks.map(|r| r.url(&format!("/{name}")));
    format!(
        r#"name: {name}
selector:
  canary: 'service="{name}", track="canary"'
  baseline: 'service="{name}", track="baseline"'
steps:
  - {{ weight: 5, hold: 3s }}
  - {{ weight: 25, hold: 3s }}
  - {{ weight: 50, hold: 3s }}
  - {{ weight: 100 }}
analysis: {{ interval: 1s, window: 6s, step: 1s, warmup: 1s, failure_limit: 3, nodata_limit: 8 }}
metrics:
  - name: error_rate
    query: sum(rate(http_requests_total{{ {{{{selector}}}}, code=~"5.." }}[4s])) / sum(rate(http_requests_total{{ {{{{selector}}}} }}[4s]))
    rollback_above: 0.05
    critical: true
  - name: p95_latency
    query: histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket{{ {{{{selector}}}} }}[4s])))
    rollback_above: 10
hooks:
  set_weight: {{ url: "{set_weight}/weight", timeout: 2s, retries: 3 }}
  promote: {{ url: "{promote}/promote", timeout: 2s, retries: 3 }}
  rollback: {{ url: "{rollback}/rollback", timeout: 2s, retries: 3 }}
"#
    )
}

/// When a degrading canary turns bad: before the rollout, or once traffic reaches 5 % or 25 %
/// (late enough to have moved, early enough that a later step's hold must catch it).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fate {
    Healthy,
    DegradeAt(u64),
}

/// Where a rollout's hooks go.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Hooks {
    /// A receiver that always answers.
    Steady,
    /// A receiver that fails short bursts (fewer than a call's attempts) after every restart:
    /// each call fails and then recovers within its retries.
    Flaky,
    /// The rollback hook's receiver is down when the rollback is decided, past every retry,
    /// and comes back once the rollout shows `failed`: the rollback must still arrive.
    RollbackOutage,
}

struct Case {
    name: String,
    fate: Fate,
    hooks: Hooks,
    service: Arc<DemoService>,
    id: Option<String>,
}

/// The receivers a case's hooks may go to.
struct Receivers {
    steady: Arc<HookReceiver>,
    flaky: Arc<HookReceiver>,
    outage: Arc<HookReceiver>,
}

impl Receivers {
    /// The receivers of a case's `set_weight`, `promote` and `rollback` hooks.
    fn for_case(&self, hooks: Hooks) -> [&Arc<HookReceiver>; 3] {
        match hooks {
            Hooks::Steady => [&self.steady; 3],
            Hooks::Flaky => [&self.flaky; 3],
            Hooks::RollbackOutage => [&self.steady, &self.steady, &self.outage],
        }
    }

    /// Every accepted call of every receiver, in the order they were answered.
    fn calls(&self) -> Vec<ReceivedCall> {
        let mut all: Vec<ReceivedCall> = [&self.steady, &self.flaky, &self.outage]
            .iter()
            .flat_map(|r| r.calls())
            .collect();
        all.sort_by_key(|c| c.at);
        all
    }

    fn attempts(&self) -> usize {
        self.steady.attempts() + self.flaky.attempts() + self.outage.attempts()
    }
}

/// Checks one rollout's hook calls and final state; returns the violations found.
fn violations(case: &Case, rollout: &Value, calls: &[ReceivedCall]) -> Vec<String> {
    let phase = rollout["phase"].as_str().unwrap_or("?");
    let mut v = Vec::new();
    let prefix = format!("/{}/", case.name);
    let mine: Vec<&ReceivedCall> = calls
        .iter()
        .filter(|c| c.path.starts_with(&prefix))
        .collect();
    let kind = |c: &ReceivedCall| c.path.rsplit('/').next().unwrap_or("").to_string();
    let mut weights: Vec<u64> = Vec::new();
    let mut rolled_back = false;
    for c in &mine {
        match kind(c).as_str() {
            "weight" => {
                let w = c.body["weight"].as_u64().unwrap_or(0);
                if rolled_back {
                    v.push(format!("set_weight {w} after a rollback"));
                }
                if weights.last() != Some(&w) {
                    weights.push(w);
                }
            }
            "promote" if rolled_back => v.push("promote after a rollback".into()),
            "rollback" => rolled_back = true,
            _ => {}
        }
    }
    if !matches!(
        weights.as_slice(),
        [] | [5] | [5, 25] | [5, 25, 50] | [5, 25, 50, 100]
    ) {
        v.push(format!("weights {weights:?} skip a step or go down"));
    }
    let keys: std::collections::BTreeSet<String> = mine
        .iter()
        .filter(|c| kind(c) == "promote")
        .filter_map(|c| {
            c.headers
                .iter()
                .find(|(k, _)| k == "idempotency-key")
                .map(|(_, v)| v.clone())
        })
        .collect();
    if keys.len() > 1 {
        v.push(format!("promoted under {} different keys", keys.len()));
    }
    if rollout["rollback_decided"] == true && !rolled_back {
        v.push(format!(
            "a rollback was decided ({}) but never reached the receiver",
            rollout["reason"]
        ));
    }
    if rolled_back && phase != "rolled_back" {
        v.push(format!("rollback delivered but the rollout ended {phase}"));
    }
    match case.fate {
        Fate::Healthy if phase != "succeeded" => v.push(format!(
            "healthy canary ended {phase}: {}",
            rollout["reason"]
        )),
        Fate::Healthy if weights != [5, 25, 50, 100] || keys.is_empty() => v.push(format!(
            "succeeded without the full path: {weights:?}, promote {}",
            keys.len()
        )),
        Fate::DegradeAt(_) if phase != "rolled_back" => {
            v.push(format!("degraded canary ended {phase}"))
        }
        Fate::DegradeAt(_) if !rolled_back => v.push("rollback never reached the receiver".into()),
        _ => {}
    }
    v
}

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// The window a rollout is in, from its status: where a kill of the daemon lands for it.
fn window(r: &Value) -> &'static str {
    let phase = r["phase"].as_str().unwrap_or("?");
    match (phase, r["pending"]["action"].as_str()) {
        ("failed", Some("rollback")) => "failed, rollback owed",
        (_, Some("rollback")) => "rollback saved, not confirmed",
        (_, Some("set_weight")) => "set_weight saved, not confirmed",
        (_, Some("promote")) => "promote saved, not confirmed",
        ("pending", _) => "starting",
        _ => "analysing",
    }
}

/// Done: ended, and no rollback still owed (a `failed` rollout with one pending keeps going).
fn settled(r: &Value) -> bool {
    match r["phase"].as_str() {
        Some("succeeded" | "rolled_back") => true,
        Some("failed") => r["pending"].is_null(),
        _ => false,
    }
}

/// Every wave gets a healthy canary on steady hooks, a healthy one on flaky hooks and a
/// degrading one whose rollback receiver is down; the rest is drawn from the seed.
fn draw(index_in_wave: usize, rng: &mut StdRng) -> (Fate, Hooks) {
    match index_in_wave {
        0 => (Fate::Healthy, Hooks::Steady),
        1 => (Fate::Healthy, Hooks::Flaky),
        2 => (Fate::DegradeAt(0), Hooks::RollbackOutage),
        _ => {
            let fate = match rng.random_range(0..5) {
                0 | 1 => Fate::Healthy,
                2 => Fate::DegradeAt(0),
                3 => Fate::DegradeAt(5),
                _ => Fate::DegradeAt(25),
            };
            let hooks = match (fate, rng.random_range(0..3)) {
                (_, 0) => Hooks::Steady,
                (Fate::DegradeAt(_), 1) => Hooks::RollbackOutage,
                _ => Hooks::Flaky,
            };
            (fate, hooks)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_never_loses_a_decision() {
    let seed: u64 = std::env::var("CANARYD_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    let waves = env_count("CANARYD_CRASH_WAVES", WAVES).max(1);
    let per_wave = env_count("CANARYD_CRASH_PER_WAVE", PER_WAVE).max(3);
    println!(
        "crash test seed {seed} (CANARYD_CRASH_SEED={seed} replays it), {waves} waves of {per_wave}"
    );
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let receivers = Receivers {
        steady: Arc::new(HookReceiver::start().await.expect("receiver")),
        flaky: Arc::new(HookReceiver::start().await.expect("receiver")),
        outage: Arc::new(HookReceiver::start().await.expect("receiver")),
    };

    let mut cases = Vec::new();
    let mut rule_files: Vec<PathBuf> = Vec::new();
    for i in 0..waves * per_wave {
        let name = format!("crash-{i:03}");
        let service = DemoService::start(&name, "127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("service");
        let (fate, hooks) = draw(i % per_wave, &mut rng);
        let path = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, rule_yaml(&name, receivers.for_case(hooks))).expect("rule");
        rule_files.push(path);
        cases.push(Case {
            name,
            fate,
            hooks,
            service: Arc::new(service),
            id: None,
        });
    }
    let prometheus = PrometheusProcess::start(PrometheusOptions {
        targets: cases.iter().map(|c| c.service.addr().to_string()).collect(),
        ..PrometheusOptions::default()
    })
    .await
    .expect("prometheus");
    for c in &cases {
        common::wait_for_canary_rate(&prometheus, &c.name, Duration::from_secs(60)).await;
    }
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).expect("state dir");
    let prom_url = prometheus.url();
    let start = |_: ()| Daemon::start(&prom_url, &rule_files, &state, &[]);
    let mut daemon = start(()).await;

    let began = Instant::now();
    let mut kills_per_wave: Vec<usize> = Vec::new();
    let mut landed: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut had_outage = false;
    let mut outages = 0;
    let mut recovery_ms: Vec<u128> = Vec::new();
    for wave in 0..waves {
        let range = wave * per_wave..(wave + 1) * per_wave;
        let outage_cases: Vec<String> = cases[range.clone()]
            .iter()
            .filter(|c| c.hooks == Hooks::RollbackOutage)
            .map(|c| c.name.clone())
            .collect();
        let mut outage_on = !outage_cases.is_empty();
        had_outage |= outage_on;
        if outage_on {
            receivers.outage.fail_next(u32::MAX);
        }
        for c in &mut cases[range.clone()] {
            if let Fate::DegradeAt(w) = c.fate {
                let (service, receiver, path) = (
                    c.service.clone(),
                    receivers.for_case(c.hooks)[0].clone(),
                    format!("/{}/weight", c.name),
                );
                if w == 0 {
                    service.update(Track::Canary, |p| p.error_rate = 0.3);
                } else {
                    tokio::spawn(async move {
                        let reached = |calls: &[ReceivedCall]| {
                            calls
                                .iter()
                                .any(|x| x.path == path && x.body["weight"].as_u64() == Some(w))
                        };
                        if receiver.wait_for(reached, Duration::from_secs(600)).await {
                            service.update(Track::Canary, |p| p.error_rate = 0.3);
                        }
                    });
                }
            }
            c.id = Some(daemon.start_rollout(&c.name, "v2").await);
        }
        let ids: Vec<String> = cases[range.clone()]
            .iter()
            .filter_map(|c| c.id.clone())
            .collect();
        let mut kills = 0;
        let mut last_progress = None;
        let mut still = 0;
        loop {
            tokio::time::sleep(Duration::from_millis(rng.random_range(300..2000))).await;
            let (_, list) = daemon.get("/api/v1/rollouts").await;
            let rollouts = list["rollouts"].as_array().cloned().unwrap_or_default();
            let mine: Vec<&Value> = rollouts
                .iter()
                .filter(|r| {
                    r["id"]
                        .as_str()
                        .is_some_and(|id| ids.iter().any(|i| i == id))
                })
                .collect();
            let live: Vec<String> = mine
                .iter()
                .filter(|r| !settled(r))
                .filter_map(|r| r["id"].as_str().map(String::from))
                .collect();
            if live.is_empty() {
                break;
            }
            // The rollback receiver comes back once every rollback it refused is owed.
            if outage_on
                && mine.iter().all(|r| {
                    let outage = outage_cases.iter().any(|n| r["rule"] == n.as_str());
                    !outage || r["phase"] == "failed"
                })
            {
                receivers.outage.fail_next(0);
                outage_on = false;
                outages += 1;
            }
            let progress = (
                receivers.attempts(),
                mine.iter()
                    .map(|r| r["phase"].to_string())
                    .collect::<Vec<_>>(),
            );
            if last_progress.as_ref() == Some(&progress) {
                still += 1;
            } else {
                still = 0;
                last_progress = Some(progress);
            }
            assert!(
                still < STALL_CYCLES,
                "wave {wave}: no progress across {STALL_CYCLES} restarts, live {live:?}\n{}",
                common::tail(&daemon.log_text(), 30)
            );
            for r in mine.iter().filter(|r| !settled(r)) {
                *landed.entry(window(r)).or_default() += 1;
            }
            daemon.kill_and_wait().await;
            kills += 1;
            // Calls that fail, then succeed on a retry, from the moment the daemon is back.
            receivers.flaky.fail_next(rng.random_range(0..=3));
            let restart = Instant::now();
            let since = chrono::Utc::now();
            daemon = start(()).await;
            // Restart to first tick: the first history entry judged after the restart.
            let deadline = Instant::now() + Duration::from_secs(4);
            'probe: while Instant::now() < deadline {
                for id in &live {
                    let (_, h) = daemon
                        .get(&format!("/api/v1/rollouts/{id}/history?limit=1"))
                        .await;
                    let at = h["ticks"][0]["at"]
                        .as_str()
                        .and_then(|s| s.parse::<chrono::DateTime<chrono::Utc>>().ok());
                    if at.is_some_and(|at| at > since) {
                        recovery_ms.push(restart.elapsed().as_millis());
                        break 'probe;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        receivers.flaky.fail_next(0);
        kills_per_wave.push(kills);
    }

    let calls = receivers.calls();
    let mut all_violations = Vec::new();
    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    for c in &cases {
        let id = c.id.as_deref().expect("started");
        let r = daemon.rollout(id).await;
        let fate = if c.fate == Fate::Healthy {
            "healthy"
        } else {
            "degrading"
        };
        *tally.entry(fate.to_string()).or_default() += 1;
        *tally.entry(format!("{:?}", c.hooks)).or_default() += 1;
        for v in violations(c, &r, &calls) {
            all_violations.push(format!(
                "{} ({:?}, {:?}, {id}): {v}",
                c.name, c.fate, c.hooks
            ));
        }
    }
    recovery_ms.sort_unstable();
    let pct = |p: usize| {
        recovery_ms
            .get((recovery_ms.len().saturating_sub(1)) * p / 100)
            .copied()
            .unwrap_or(0)
    };
    let kills: usize = kills_per_wave.iter().sum();
    println!(
        "crash tally: seed {seed}, rollouts {} ({} healthy, {} degrading; hooks steady {}, flaky {}, \
         rollback outage {}), kills {kills} (per wave {kills_per_wave:?}), kills landed per \
         window (rollout x kill) {landed:?}, rollback receiver outages recovered {outages}, invariant violations {}, hook calls {} (attempts {}), \
         restart-to-first-tick ms: n={} median={} p90={} max={}, wall {:.0?}",
        cases.len(),
        tally.get("healthy").unwrap_or(&0),
        tally.get("degrading").unwrap_or(&0),
        tally.get("Steady").unwrap_or(&0),
        tally.get("Flaky").unwrap_or(&0),
        tally.get("RollbackOutage").unwrap_or(&0),
        all_violations.len(),
        calls.len(),
        receivers.attempts(),
        recovery_ms.len(),
        pct(50),
        pct(90),
        recovery_ms.last().copied().unwrap_or(0),
        began.elapsed()
    );
    assert!(
        all_violations.is_empty(),
        "violations:\n{}\nlog tail:\n{}",
        all_violations.join("\n"),
        common::tail(&daemon.log_text(), 30)
    );
    assert!(
        landed.get("analysing").is_some_and(|&n| n > 0),
        "no kill landed while a rollout was analysing: {landed:?}"
    );
    assert!(
        !had_outage || landed.get("failed, rollback owed").is_some_and(|&n| n > 0),
        "no kill landed while a failed rollout owed its rollback: {landed:?}"
    );
}
