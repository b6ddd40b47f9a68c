//! PostgreSQL restarted mid-rollout: the leader cannot renew, its term runs out and it stops
//! acting (it never acts on a state it cannot save or re-read); when the database is back it
//! takes the lease again under a new epoch, resumes the rollout from the store, and promotes.

use crate::common;

use std::time::{Duration, Instant};

use common::RuleOpts;
use common::pg::{HaStack, epoch_of, wait_leader, wait_role};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_pauses_the_leader_and_it_resumes() {
    let mut s = HaStack::start("ha-pg", RuleOpts::default(), "2s", "500ms").await;
    let d = s.replica("a").await;
    let first = wait_leader(&d, Duration::from_secs(15)).await;
    let id = d.start_rollout(&s.rule, "v2").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while d.rollout(&id).await["weight"] != 5 {
        assert!(Instant::now() < deadline, "first weight never confirmed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    s.pg.stop();
    wait_role(&d, "follower", Duration::from_secs(10)).await;
    let attempts = s.receiver.attempts();
    // The outage lasts longer than a step's hold (4 s): a leader acting blind would have
    // called the next weight by now.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        s.receiver.attempts(),
        attempts,
        "hook attempts while the store was down"
    );
    let (status, ready) = d.get("/health/ready").await;
    assert_eq!(status, 503, "the store outage shows in readiness: {ready}");

    s.pg.restart();
    let second = wait_leader(&d, Duration::from_secs(20)).await;
    assert!(
        second > first,
        "a new term after the outage ({first} → {second})"
    );
    let done = d.wait_ended(&id, Duration::from_secs(60)).await;
    assert_eq!(done["phase"], "succeeded", "{done}");
    let calls = s.receiver.calls();
    let promote: Vec<_> = calls.iter().filter(|c| c.path == "/promote").collect();
    assert!(!promote.is_empty() && promote.iter().all(|c| epoch_of(c) == Some(second)));
}
