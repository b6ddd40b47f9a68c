//! A Prometheus started for a test, the demo or the scale bench leads its own process group, so
//! a signal to its parent's group never reaches it; when the parent is killed outright (SIGKILL,
//! nothing of it runs any more) the kernel kills the Prometheus (`demo::die_with_parent`), and
//! no orphan keeps its port, its CPU and its data dir run after run.

use std::process::Stdio;
use std::time::{Duration, Instant};

/// The PIDs of `parent`'s children whose command name is `comm`, read from `/proc`.
fn children_named(parent: u32, comm: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // `pid (comm) state ppid …`: comm may hold spaces, so split after its `)`.
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                return false;
            };
            let ppid = stat[close + 1..].split_whitespace().nth(1);
            &stat[open + 1..close] == comm && ppid == Some(&parent.to_string())
        })
        .collect()
}

/// Whether `pid` still runs (a zombie, killed and waiting for its new parent, does not).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let close = s.rfind(')')?;
            s[close + 1..].split_whitespace().next().map(|st| st != "Z")
        })
        .unwrap_or(false)
}

#[tokio::test]
async fn a_prometheus_dies_with_the_process_that_started_it_when_that_is_killed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut demo = tokio::process::Command::new(env!("CARGO_BIN_EXE_canaryd"))
        .args(["demo", "--hold", "600"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn canaryd demo");
    let pid = demo.id().expect("demo pid");
    let deadline = Instant::now() + Duration::from_secs(60);
    let prometheus = loop {
        if let Some(&p) = children_named(pid, "prometheus").first() {
            break p;
        }
        let exited = demo.try_wait().expect("try_wait");
        assert!(exited.is_none(), "canaryd demo exited: {exited:?}");
        assert!(
            Instant::now() < deadline,
            "the demo started no Prometheus in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    demo.start_kill().expect("SIGKILL the demo");
    demo.wait().await.expect("reap the demo");
    let deadline = Instant::now() + Duration::from_secs(10);
    while running(prometheus) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let survived = running(prometheus);
    if survived {
        // Not left behind by this test either.
        let _ = std::process::Command::new("kill")
            .args(["-9", &prometheus.to_string()])
            .status();
    }
    assert!(
        !survived,
        "Prometheus {prometheus} outlived the SIGKILLed canaryd demo {pid}"
    );
}
