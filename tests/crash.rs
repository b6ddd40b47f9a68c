//! kill -9 `canaryd serve` at random moments across 24 rollouts against a real Prometheus and a
//! real hook receiver, restart it on the same state directory each time, and check that nothing
//! a rollout promised was lost: every rollout ends as its canary deserved, weights only go up one
//! step at a time until a rollback, nothing promotes after a rollback, and every rollback
//! decision reaches the receiver at least once.
//!
//! The seed is printed; `CANARYD_CRASH_SEED=<n>` replays a run's kill schedule.

mod common;

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

const WAVES: usize = 3;
const PER_WAVE: usize = 8;

/// Short holds so 24 rollouts fit in about a minute; thresholds only (no ratio, no statistics),
/// so a healthy canary's fate is certain and any rollback of one is a bug.
fn rule_yaml(name: &str, r: &HookReceiver) -> String {
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
  set_weight: {{ url: "{base}/weight", timeout: 2s, retries: 3 }}
  promote: {{ url: "{base}/promote", timeout: 2s, retries: 3 }}
  rollback: {{ url: "{base}/rollback", timeout: 2s, retries: 3 }}
"#,
        base = r.url(&format!("/{name}")),
    )
}

/// When a degrading canary turns bad: before the rollout, or once traffic reaches 5 % or 25 %
/// (late enough to have moved, early enough that a later step's hold must catch it).
#[derive(Clone, Copy, Debug)]
enum Fate {
    Healthy,
    DegradeAt(u64),
}

struct Case {
    name: String,
    fate: Fate,
    service: Arc<DemoService>,
    id: Option<String>,
}

/// Checks one rollout's hook calls and final phase; returns the violations found.
fn violations(case: &Case, phase: &str, calls: &[ReceivedCall]) -> Vec<String> {
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
    match case.fate {
        Fate::Healthy if phase != "succeeded" => v.push(format!("healthy canary ended {phase}")),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_never_loses_a_decision() {
    let seed: u64 = std::env::var("CANARYD_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("crash test seed {seed} (CANARYD_CRASH_SEED={seed} replays it)");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Arc::new(HookReceiver::start().await.expect("receiver"));

    let mut cases = Vec::new();
    let mut rule_files: Vec<PathBuf> = Vec::new();
    for i in 0..WAVES * PER_WAVE {
        let name = format!("crash-{i:02}");
        let service = DemoService::start(&name, "127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("service");
        let fate = match rng.random_range(0..5) {
            0 | 1 => Fate::Healthy,
            2 => Fate::DegradeAt(0),
            3 => Fate::DegradeAt(5),
            _ => Fate::DegradeAt(25),
        };
        let path = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, rule_yaml(&name, &receiver)).expect("rule");
        rule_files.push(path);
        cases.push(Case {
            name,
            fate,
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
        prometheus
            .wait_for_series(
                &format!(
                    r#"sum(rate(http_requests_total{{service="{}", track="canary"}}[4s]))"#,
                    c.name
                ),
                Duration::from_secs(30),
            )
            .await
            .expect("series");
    }
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).expect("state dir");
    let prom_url = prometheus.url();
    let start = |_: ()| Daemon::start(&prom_url, &rule_files, &state, &[]);
    let mut daemon = start(()).await;

    let began = Instant::now();
    let mut kills = 0;
    let mut recovery_ms: Vec<u128> = Vec::new();
    for wave in 0..WAVES {
        let range = wave * PER_WAVE..(wave + 1) * PER_WAVE;
        for c in &mut cases[range.clone()] {
            if let Fate::DegradeAt(w) = c.fate {
                let (service, receiver, path) = (
                    c.service.clone(),
                    receiver.clone(),
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
                        if receiver.wait_for(reached, Duration::from_secs(120)).await {
                            service.update(Track::Canary, |p| p.error_rate = 0.3);
                        }
                    });
                }
            }
            c.id = Some(daemon.start_rollout(&c.name, "v2").await);
        }
        loop {
            tokio::time::sleep(Duration::from_millis(rng.random_range(300..2000))).await;
            let (_, list) = daemon.get("/api/v1/rollouts").await;
            let rollouts = list["rollouts"].as_array().cloned().unwrap_or_default();
            let live: Vec<String> = rollouts
                .iter()
                .filter(|r| {
                    !matches!(
                        r["phase"].as_str(),
                        Some("succeeded" | "rolled_back" | "failed")
                    )
                })
                .filter_map(|r| r["id"].as_str().map(String::from))
                .collect();
            if live.is_empty() {
                break;
            }
            assert!(
                began.elapsed() < Duration::from_secs(110),
                "rollouts did not finish: {live:?}"
            );
            daemon.kill_and_wait().await;
            kills += 1;
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
    }

    let calls = receiver.calls();
    let mut all_violations = Vec::new();
    let mut tally: BTreeMap<&str, usize> = BTreeMap::new();
    for c in &cases {
        let id = c.id.as_deref().expect("started");
        let r = daemon.rollout(id).await;
        let phase = r["phase"].as_str().unwrap_or("?").to_string();
        *tally
            .entry(if matches!(c.fate, Fate::Healthy) {
                "healthy"
            } else {
                "degrading"
            })
            .or_default() += 1;
        for v in violations(c, &phase, &calls) {
            all_violations.push(format!("{} ({:?}, {id}): {v}", c.name, c.fate));
        }
    }
    recovery_ms.sort_unstable();
    let pct = |p: usize| {
        recovery_ms
            .get((recovery_ms.len().saturating_sub(1)) * p / 100)
            .copied()
            .unwrap_or(0)
    };
    println!(
        "crash tally: rollouts {} ({} healthy, {} degrading), kills {kills}, invariant violations {}, \
         hook calls {}, restart-to-first-tick ms: n={} median={} p90={} max={}, wall {:.0?}",
        cases.len(),
        tally.get("healthy").unwrap_or(&0),
        tally.get("degrading").unwrap_or(&0),
        all_violations.len(),
        calls.len(),
        recovery_ms.len(),
        pct(50),
        pct(90),
        recovery_ms.last().copied().unwrap_or(0),
        began.elapsed()
    );
    assert!(
        kills >= 10,
        "only {kills} kills: the test did not exercise recovery"
    );
    assert!(
        all_violations.is_empty(),
        "violations:\n{}\nlog tail:\n{}",
        all_violations.join("\n"),
        common::tail(&daemon.log_text(), 30)
    );
}
