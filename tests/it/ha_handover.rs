//! A leader stopped gracefully (SIGTERM, as in a rolling update) hands its lease back: the
//! follower leads at once instead of after the lease expires.

use crate::common;

use std::time::{Duration, Instant};

use common::RuleOpts;
use common::pg::{HaStack, wait_leader, wait_role};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_leader_hands_the_lease_over() {
    let s = HaStack::start("ha-term", RuleOpts::default(), "30s", "1s").await;
    let old = s.replica("a").await;
    let first = wait_leader(&old, Duration::from_secs(15)).await;
    let new = s.replica("b").await;
    wait_role(&new, "follower", Duration::from_secs(10)).await;
    let pid = old.pid().expect("pid").to_string();
    let stopped = Instant::now();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .is_ok_and(|s| s.success())
    );
    // Well inside the 30 s lease: only a handed-back lease can be taken this soon.
    let next = wait_leader(&new, Duration::from_secs(10)).await;
    assert!(next > first);
    assert!(stopped.elapsed() < Duration::from_secs(10));
    assert!(
        old.log_text().contains("leader.released"),
        "{}",
        common::tail(&old.log_text(), 20)
    );
}
