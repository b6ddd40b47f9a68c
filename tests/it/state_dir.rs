//! A state dir that lost its database never starts empty by accident, and one state dir has one
//! daemon whatever happens to the files in it.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use canaryd::demo::receiver::HookReceiver;
use common::{Daemon, RuleOpts, Stack};

/// What a `canaryd serve` that should refuse to start did: its exit code (`None` if it was
/// still running at the deadline and had to be killed) and its stderr.
struct Outcome {
    code: Option<i32>,
    stderr: String,
}

/// Runs `canaryd serve` as [`Daemon::start`] would, but waits for it to exit instead of for
/// its API.
async fn serve_expecting_exit(
    prometheus_url: &str,
    rules: &[PathBuf],
    dir: &Path,
    extra: &[&str],
) -> Outcome {
    let port = canaryd::demo::free_loopback_port().expect("free port");
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_canaryd"));
    cmd.arg("serve")
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--prometheus-url")
        .arg(prometheus_url)
        .arg("--state-dir")
        .arg(dir)
        .args(extra)
        .env_remove("CANARYD_API_TOKEN")
        .env_remove("CANARYD_INIT_STATE")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for r in rules {
        cmd.arg("--rules").arg(r);
    }
    let mut child = cmd.spawn().expect("spawn canaryd");
    let code = match tokio::time::timeout(Duration::from_secs(20), child.wait()).await {
        Ok(status) => status.expect("wait").code(),
        Err(_) => {
            child.kill().await.expect("kill");
            None
        }
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        use tokio::io::AsyncReadExt as _;
        pipe.read_to_string(&mut stderr).await.expect("stderr");
    }
    Outcome { code, stderr }
}

fn rule_files(stack: &Stack) -> Vec<PathBuf> {
    vec![stack.dir.path().join(format!("{}.yaml", stack.rule))]
}

/// A stack with one live rollout at its first step, then kill -9: the state dir holds a
/// rollout that a restart must resume.
async fn stack_with_a_live_rollout(rule: &str) -> (Stack, String) {
    let mut stack = Stack::start(
        rule,
        RuleOpts {
            hold: "1h",
            ..RuleOpts::default()
        },
    )
    .await;
    let id = stack.start_at_first_step("v2").await;
    stack.daemon.kill_and_wait().await;
    (stack, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_a_truncated_database_of_live_rollouts_and_names_the_file() {
    let (stack, id) = stack_with_a_live_rollout("truncated").await;
    let dir = stack.dir.path();
    let db = dir.join("canaryd.db");
    assert!(
        dir.join("canaryd.db-wal").exists(),
        "kill -9 leaves the WAL"
    );
    std::fs::File::create(&db).expect("truncate the database to zero bytes");

    let out = serve_expecting_exit(&stack.prometheus.url(), &rule_files(&stack), dir, &[]).await;
    assert!(
        out.code.is_some_and(|c| c != 0),
        "serve started on a truncated database (exit {:?}): rollout {id} is forgotten\n{}",
        out.code,
        out.stderr
    );
    let db_text = db.display().to_string();
    assert!(
        out.stderr.contains(&db_text) && out.stderr.contains("empty"),
        "the error names the file: {}",
        out.stderr
    );
    assert!(out.stderr.contains("--init-state"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_database_is_refused_and_init_state_starts_empty_only_once() {
    let (stack, _id) = stack_with_a_live_rollout("deleted").await;
    let dir = stack.dir.path();
    for f in ["canaryd.db", "canaryd.db-wal", "canaryd.db-shm"] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    let (prom, rules) = (stack.prometheus.url(), rule_files(&stack));

    // Only the marker is left to say a store was here.
    let out = serve_expecting_exit(&prom, &rules, dir, &[]).await;
    assert!(
        out.code.is_some_and(|c| c != 0),
        "serve started without its database (exit {:?})\n{}",
        out.code,
        out.stderr
    );
    assert!(
        out.stderr
            .contains(&dir.join("canaryd.db").display().to_string())
            && out.stderr.contains("missing")
            && out.stderr.contains("canaryd.state"),
        "{}",
        out.stderr
    );

    // Said once, explicitly: starts with no rollouts, and the marker is kept aside.
    let mut daemon = Daemon::start(&prom, &rules, dir, &["--init-state"]).await;
    let (_, list) = daemon.get("/api/v1/rollouts").await;
    assert_eq!(list["rollouts"], serde_json::json!([]), "{list}");
    let stale = std::fs::read_dir(dir)
        .expect("ls")
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("canaryd.state.stale-")
        })
        .count();
    assert_eq!(stale, 1, "the old marker is kept aside");
    daemon.kill_and_wait().await;

    // Left in place, the flag is refused: it must not hide a later loss.
    let out = serve_expecting_exit(&prom, &rules, dir, &["--init-state"]).await;
    assert!(
        out.code.is_some_and(|c| c != 0) && out.stderr.contains("already holds a store"),
        "exit {:?}\n{}",
        out.code,
        out.stderr
    );
    let mut daemon = Daemon::start(&prom, &rules, dir, &[]).await;
    daemon.kill_and_wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_is_refused_even_after_the_lock_file_is_deleted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = HookReceiver::start().await.expect("receiver");
    let rule = dir.path().join("locked.yaml");
    std::fs::write(
        &rule,
        common::rule_yaml("locked", &receiver, &RuleOpts::default()),
    )
    .expect("rule");
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).expect("state dir");
    // Prometheus is never asked: no rollout starts.
    let prom = "http://127.0.0.1:9";
    let mut first = Daemon::start(prom, std::slice::from_ref(&rule), &state, &[]).await;
    // What an operator cleaning up, or a tmp reaper, might do.
    for entry in std::fs::read_dir(&state)
        .expect("ls")
        .filter_map(Result::ok)
    {
        if entry.file_name().to_string_lossy().ends_with(".lock") {
            std::fs::remove_file(entry.path()).expect("delete lock file");
        }
    }

    let began = Instant::now();
    let out = serve_expecting_exit(prom, std::slice::from_ref(&rule), &state, &[]).await;
    assert!(
        out.code.is_some_and(|c| c != 0),
        "a second daemon ran on the same state dir (exit {:?} after {:?})\n{}",
        out.code,
        began.elapsed(),
        out.stderr
    );
    assert!(
        out.stderr.contains("another canaryd is using state_dir")
            && out.stderr.contains(&state.display().to_string()),
        "{}",
        out.stderr
    );
    // The first daemon is untouched.
    let (status, _) = first.get("/health/live").await;
    assert_eq!(status, 200);
    first.kill_and_wait().await;
}
