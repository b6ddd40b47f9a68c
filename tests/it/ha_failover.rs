//! Two replicas on a real PostgreSQL and a real Prometheus: kill -9 the leader, again and again,
//! alternating between replicas; each time the follower takes over, resumes the rollout in
//! flight from the shared store and the rollouts finish as their (healthy) canaries deserve.
//!
//! CI runs 3 kills. The soak is `CANARYD_HA_KILLS=100 cargo test --test it ha_failover:: -- --nocapture`;
//! it prints every failover time and their median and p90 (BENCHMARKS.md "PostgreSQL HA").
//! Invariants checked: every rollout promoted, once (one Idempotency-Key per promotion), weights
//! never going down, hook calls in epoch order and every one carrying its epoch.

use crate::common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use common::pg::{HaStack, epoch_of, wait_leader, wait_role};
use common::{Daemon, RuleOpts, calls_to};

/// Starts a rollout through `via` (a follower forwards it), retrying while no leader is known.
async fn start_via(via: &Daemon, rule: &str, version: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = via
            .post(
                "/api/v1/rollouts",
                Some(serde_json::json!({"rule": rule, "version": version})),
            )
            .await;
        if status == 201 {
            return body["id"].as_str().expect("id").to_string();
        }
        assert!(
            status == 503 && Instant::now() < deadline,
            "start through {}: {status} {body}",
            via.url
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Ticks of a rollout judged after `since`, as the shared store holds them.
async fn ticks_after(d: &Daemon, id: &str, since: SystemTime) -> Vec<SystemTime> {
    let (_, h) = d.get(&format!("/api/v1/rollouts/{id}/history")).await;
    h["ticks"]
        .as_array()
        .map(|ts| {
            ts.iter()
                .filter_map(|t| t["at"].as_str())
                .filter_map(|at| chrono::DateTime::parse_from_rfc3339(at).ok())
                .map(SystemTime::from)
                .filter(|at| *at > since)
                .collect()
        })
        .unwrap_or_default()
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_hands_every_rollout_to_the_follower() {
    let kills: usize = std::env::var("CANARYD_HA_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    // Short by default so CI is quick; `CANARYD_HA_LEASE=6s CANARYD_HA_RENEW=2s` measures the
    // shipped defaults.
    let knob = |name: &str, default: &'static str| -> &'static str {
        std::env::var(name).map_or(default, |v| Box::leak(v.into_boxed_str()))
    };
    let (lease, renew) = (
        knob("CANARYD_HA_LEASE", "2s"),
        knob("CANARYD_HA_RENEW", "500ms"),
    );
    // The README's promise: a successor leads within `lease + renew_interval` of the leader's
    // death. The slack covers what the test adds: its 25 ms polling, the HTTP round trip to the
    // follower and a loaded two-core scheduler (measured overshoot: p90 ≈ 50 ms, BENCHMARKS.md).
    let promised = humantime::parse_duration(lease).expect("lease")
        + humantime::parse_duration(renew).expect("renew");
    let bound = promised + Duration::from_millis(2500);
    let s = HaStack::start("ha-kill", RuleOpts::default(), lease, renew).await;
    let mut leader = s.replica("r0").await;
    let mut epoch = wait_leader(&leader, Duration::from_secs(15)).await;
    let mut follower = s.replica("r1").await;
    wait_role(&follower, "follower", Duration::from_secs(10)).await;

    // A follower answers a write with the leader's answer, errors included.
    let bad = Some(serde_json::json!({"rule": "no-such-rule", "version": "v1"}));
    assert_eq!(
        follower.post("/api/v1/rollouts", bad.clone()).await,
        leader.post("/api/v1/rollouts", bad).await
    );
    assert_eq!(
        follower.post("/api/v1/rollouts/ro-none/abort", None).await,
        leader.post("/api/v1/rollouts/ro-none/abort", None).await
    );
    let mut ids = vec![start_via(&follower, &s.rule, "v1").await];
    let mut failovers_ms = Vec::new();
    let mut first_tick_ms = Vec::new();
    for k in 0..kills {
        let id = ids.last().cloned().expect("a rollout");
        // Let the current leader act on it first (a tick of its own), then kill it mid-flight.
        let since = SystemTime::now();
        let deadline = Instant::now() + Duration::from_secs(30);
        while ticks_after(&follower, &id, since).await.is_empty() {
            assert!(
                Instant::now() < deadline,
                "no tick by the leader of epoch {epoch}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let killed = Instant::now();
        let killed_at = SystemTime::now();
        leader.kill_and_wait().await;
        let next = wait_leader(&follower, Duration::from_secs(15)).await;
        failovers_ms.push(killed.elapsed().as_secs_f64() * 1000.0);
        assert!(
            next > epoch,
            "a takeover bumps the epoch ({epoch} → {next})"
        );
        epoch = next;
        // Failover as the issue measures it: leader killed → first tick by the new leader.
        let live = follower.rollout(&id).await;
        if !live["phase"]
            .as_str()
            .is_some_and(|p| ["succeeded", "rolled_back", "failed"].contains(&p))
        {
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                if let Some(first) = ticks_after(&follower, &id, killed_at).await.first() {
                    let ms = first
                        .duration_since(killed_at)
                        .unwrap_or_default()
                        .as_secs_f64()
                        * 1000.0;
                    first_tick_ms.push(ms);
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the new leader never ticked rollout {id}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        println!(
            "kill {k}: epoch {epoch}, leader elected after {:.0} ms",
            failovers_ms[k]
        );
        // The survivor leads; a fresh replica takes the dead one's place as follower.
        leader = std::mem::replace(&mut follower, s.replica(&format!("r{}", k + 2)).await);
        wait_role(&follower, "follower", Duration::from_secs(10)).await;
        let r = leader.rollout(&id).await;
        if r["phase"] == "succeeded" {
            ids.push(start_via(&follower, &s.rule, &format!("v{}", k + 2)).await);
        }
    }

    // Every rollout finishes as its healthy canary deserves.
    for id in &ids {
        let r = leader.wait_ended(id, Duration::from_secs(90)).await;
        assert_eq!(r["phase"], "succeeded", "{r}");
    }
    let calls = s.receiver.calls();
    // Fencing across takeovers: hooks arrive in epoch order, never from a deposed leader after
    // its successor acted.
    let epochs: Vec<u64> = calls.iter().filter_map(epoch_of).collect();
    assert_eq!(
        epochs.len(),
        calls.len(),
        "every hook call carries the leader epoch"
    );
    assert!(
        epochs.windows(2).all(|w| w[0] <= w[1]),
        "epochs out of order: {epochs:?}"
    );
    // Each promotion decided once: every promote call of a rollout has the same key, and each
    // rollout's weights only go up.
    let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for c in calls_to(&calls, "/promote") {
        let key = c
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("idempotency-key"));
        keys.entry(c.body["rollout_id"].as_str().unwrap_or("").to_string())
            .or_default()
            .push(key.map(|(_, v)| v.clone()).unwrap_or_default());
    }
    for id in &ids {
        let k = keys.get(id).cloned().unwrap_or_default();
        assert!(
            !k.is_empty() && k.iter().all(|x| *x == k[0]),
            "promote keys of {id}: {k:?}"
        );
        let w: Vec<u64> = calls_to(&calls, "/weight")
            .iter()
            .filter(|c| c.body["rollout_id"] == id.as_str())
            .filter_map(|c| c.body["weight"].as_u64())
            .collect();
        assert!(
            w.windows(2).all(|p| p[0] <= p[1]) && w.last() == Some(&100),
            "weights of {id}: {w:?}"
        );
    }

    failovers_ms.sort_by(f64::total_cmp);
    first_tick_ms.sort_by(f64::total_cmp);
    println!(
        "kills {kills}, rollouts {}: leader elected median {:.0} ms p90 {:.0} ms; first tick by the new leader median {:.0} ms p90 {:.0} ms (n={})",
        ids.len(),
        quantile(&failovers_ms, 0.5),
        quantile(&failovers_ms, 0.9),
        if first_tick_ms.is_empty() {
            f64::NAN
        } else {
            quantile(&first_tick_ms, 0.5)
        },
        if first_tick_ms.is_empty() {
            f64::NAN
        } else {
            quantile(&first_tick_ms, 0.9)
        },
        first_tick_ms.len(),
    );
    assert!(
        failovers_ms
            .iter()
            .all(|ms| *ms < bound.as_secs_f64() * 1000.0),
        "a failover took longer than lease + renew_interval ({promised:?}) plus {:?} of test slack: {failovers_ms:?} ms",
        bound - promised
    );
}
