//! A leader paused past its lease (SIGSTOP) while its follower takes over and rolls the canary
//! back; when it resumes (SIGCONT) it calls no hook (not even the retry it was waiting to
//! send) and writes nothing, and steps down.

use crate::common;

use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use common::pg::{HaStack, epoch_of, wait_leader, wait_role};
use common::{RuleOpts, tail};

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_wakes_fenced_and_steps_down() {
    let s = HaStack::start("ha-stop", RuleOpts::default(), "2s", "500ms").await;
    let old = s.replica("a").await;
    let old_epoch = wait_leader(&old, Duration::from_secs(15)).await;
    let new = s.replica("b").await;
    wait_role(&new, "follower", Duration::from_secs(10)).await;
    let id = old.start_rollout(&s.rule, "v2").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while old.rollout(&id).await["weight"] != 5 {
        assert!(Instant::now() < deadline, "first weight never confirmed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Paused between two attempts of a hook: the next weight's first attempt fails, and the
    // leader is stopped before its retry. Awake and unfenced, it would send that retry; and its
    // next tick (overdue, on a canary that now fails) would decide and call a rollback.
    let pid = old.pid().expect("pid");
    let attempts = s.receiver.attempts();
    // The failing answer is held for 1 s, so the stop lands while that attempt is in flight
    // (before its retry) however busy the machine is; the delay is taken when it arrives.
    s.receiver
        .set_path_delay("/weight", Duration::from_millis(1000));
    s.receiver.fail_next(1);
    let deadline = Instant::now() + Duration::from_secs(20);
    while s.receiver.attempts() == attempts {
        assert!(Instant::now() < deadline, "no further hook attempt");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    signal(pid, "-STOP");
    s.receiver.set_path_delay("/weight", Duration::ZERO);
    let stopped_at = SystemTime::now();
    s.service
        .update(canaryd::demo::service::Track::Canary, |p| {
            p.error_rate = 0.5
        });
    let new_epoch = wait_leader(&new, Duration::from_secs(15)).await;
    assert!(new_epoch > old_epoch);
    let done = new.wait_ended(&id, Duration::from_secs(60)).await;
    assert_eq!(done["phase"], "rolled_back", "{done}");
    let (_, history) = new.get(&format!("/api/v1/rollouts/{id}/history")).await;
    let calls_before = s.receiver.calls().len();
    let attempts_before = s.receiver.attempts();

    signal(pid, "-CONT");
    // It wakes knowing its term ran out, sees the lease taken, and stops its tasks.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !old.log_text().contains("rollouts.stand_down") {
        assert!(
            Instant::now() < deadline,
            "old leader never stood down:\n{}",
            tail(&old.log_text(), 30)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_role(&old, "follower", Duration::from_secs(5)).await;

    let calls = s.receiver.calls();
    assert_eq!(
        calls.len(),
        calls_before,
        "hook calls after the old leader woke"
    );
    assert_eq!(
        s.receiver.attempts(),
        attempts_before,
        "hook attempts after the old leader woke"
    );
    assert!(
        old.log_text().contains("no longer leads"),
        "the old leader's pending retry was refused by its fence:\n{}",
        tail(&old.log_text(), 30)
    );
    for c in calls.iter().filter(|c| c.at > stopped_at) {
        assert_eq!(
            epoch_of(c),
            Some(new_epoch),
            "a call after the pause from epoch {:?}: {} {}",
            epoch_of(c),
            c.path,
            c.body
        );
    }
    assert!(
        calls
            .iter()
            .any(|c| c.path == "/rollback" && epoch_of(c) == Some(new_epoch))
    );
    // Nothing written: the rollout, its ticks and its deliveries are as the new leader left them.
    assert_eq!(new.rollout(&id).await, done);
    assert_eq!(
        new.get(&format!("/api/v1/rollouts/{id}/history")).await.1,
        history
    );
    // Reads still work on the old leader, now a follower, from the shared store.
    assert_eq!(old.rollout(&id).await["phase"], "rolled_back");
    assert!(old.metrics().await.contains("canaryd_leader 0"));
}
