//! `canaryd rollout wait` and `status --watch` as a pipeline runs them: the real binary against a
//! real daemon (with a real Prometheus), one exit code per outcome.

use crate::common;

use std::process::Output;
use std::time::Duration;

use common::{RuleOpts, Stack};
use serde_json::json;
use tokio::io::AsyncBufReadExt;

fn cli(url: &str, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_canaryd"));
    cmd.arg("rollout")
        .arg("--url")
        .arg(url)
        .args(args)
        .env_remove("CANARYD_API_TOKEN")
        .env_remove("CANARYD_URL")
        .kill_on_drop(true);
    cmd
}

async fn finish(cmd: &mut tokio::process::Command) -> Output {
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("the CLI did not exit within 60 s")
        .expect("run the CLI")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_exits_0_1_2_and_watch_prints_plain_lines_when_piped() {
    let s = Stack::start(
        "waiting",
        RuleOpts {
            hold: "60s",
            ..RuleOpts::default()
        },
    )
    .await;
    let url = s.daemon.url.clone();

    // 0: succeeded. `wait` and `status --watch` (stdout is a pipe here) follow the same rollout.
    let id = s.start_at_first_step("v2").await;
    let mut wait = cli(&url, &["wait", &id, "--interval", "200ms"]).spawn_output();
    let mut watch = cli(&url, &["status", &id, "--watch", "--interval", "200ms"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn watch");
    // The watcher has shown the live rollout before it ends.
    let mut lines = tokio::io::BufReader::new(watch.stdout.take().expect("stdout")).lines();
    let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("no line from --watch in 20 s")
        .expect("read")
        .expect("a line");
    let (status, _) = s
        .daemon
        .post(
            &format!("/api/v1/rollouts/{id}/promote"),
            Some(json!({"full": true})),
        )
        .await;
    assert_eq!(status, 200);
    let w = wait.result().await;
    assert_eq!(w.status.code(), Some(0), "{}", stdout(&w));
    assert!(
        stdout(&w).starts_with(&format!("succeeded {id}: waiting v2")),
        "{}",
        stdout(&w)
    );
    let mut all = vec![first];
    while let Some(l) = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("--watch did not end")
        .expect("read")
    {
        all.push(l);
    }
    assert_eq!(watch.wait().await.expect("watch exit").code(), Some(0));
    let lines = all;
    assert!(
        !lines.concat().contains('\u{1b}'),
        "escape codes in piped output: {lines:?}"
    );
    assert!(
        lines[0].starts_with(&format!("progressing {id} step 1/4 weight 5% hold ")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("succeeded {id} "))),
        "{lines:?}"
    );
    // Plain mode prints a line per change, not per poll: never the same line twice in a row
    // (the hold's elapsed time is part of a line, so how many lines depends on the machine).
    assert!(
        lines.windows(2).all(|w| w[0] != w[1]),
        "a line repeated: {lines:?}"
    );

    // 1: rolled back, with the reason.
    let id = s.start_at_first_step("v3").await;
    let mut wait = cli(&url, &["wait", &id, "--interval", "200ms"]).spawn_output();
    let (status, _) = s
        .daemon
        .post(
            &format!("/api/v1/rollouts/{id}/abort"),
            Some(json!({"reason": "bad canary"})),
        )
        .await;
    assert_eq!(status, 200);
    let w = wait.result().await;
    assert_eq!(w.status.code(), Some(1), "{}", stdout(&w));
    assert!(
        stdout(&w).contains("rolled_back") && stdout(&w).contains("aborted: bad canary"),
        "{}",
        stdout(&w)
    );

    // 2: timeout on a rollout still holding its 60 s step.
    let id = s.start_at_first_step("v4").await;
    let w = finish(&mut cli(
        &url,
        &["wait", &id, "--timeout", "1s", "--interval", "200ms"],
    ))
    .await;
    assert_eq!(w.status.code(), Some(2), "{}", stdout(&w));
    assert!(
        stdout(&w).contains("still not ended after 1s"),
        "{}",
        stdout(&w)
    );

    // 2: an unknown rollout.
    let w = finish(&mut cli(&url, &["wait", "ro-nosuchthing"])).await;
    assert_eq!(w.status.code(), Some(2), "{}", stdout(&w));

    // 2: the daemon cannot be reached (a port nobody listens on) past the grace period.
    let port = canaryd::demo::free_loopback_port().expect("port");
    let dead = format!("http://127.0.0.1:{port}");
    let w = finish(&mut cli(
        &dead,
        &["wait", &id, "--grace", "1s", "--interval", "200ms"],
    ))
    .await;
    assert_eq!(w.status.code(), Some(2), "{}", stdout(&w));
    assert!(stdout(&w).contains("unreachable"), "{}", stdout(&w));
}

/// A CLI child whose output is collected when it exits.
struct Running(tokio::process::Child);

impl Running {
    async fn result(&mut self) -> Output {
        let child = std::mem::replace(
            &mut self.0,
            tokio::process::Command::new("true")
                .spawn()
                .expect("placeholder"),
        );
        tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .expect("the CLI did not exit within 60 s")
            .expect("CLI output")
    }
}

trait SpawnOutput {
    fn spawn_output(&mut self) -> Running;
}

impl SpawnOutput for tokio::process::Command {
    fn spawn_output(&mut self) -> Running {
        Running(
            self.stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn the CLI"),
        )
    }
}
