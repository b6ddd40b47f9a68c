//! The daemon as a process, as an operator runs it: which setting wins when the flag, the
//! variable and the file disagree; a short API token refused before anything starts; SIGHUP
//! reloading the rule files; SIGTERM and SIGINT stopping cleanly with the state kept for the
//! next start. Prometheus is a closed port: none of this needs data.

use crate::common;

use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, Instant};

use common::Daemon;
use serde_json::json;

fn rule(name: &str, first_weight: u32) -> String {
    format!(
        "name: {name}\nselector: {{ canary: 'track=\"canary\"', baseline: 'track=\"baseline\"' }}\n\
         steps: [{{ weight: {first_weight}, hold: 1h }}, {{ weight: 100 }}]\n\
         analysis: {{ interval: 1h }}\n\
         metrics:\n  - {{ name: up, query: 'sum(up{{ {{{{selector}}}} }})', rollback_below: 1 }}\n"
    )
}

fn port() -> u16 {
    canaryd::demo::free_loopback_port().expect("free port")
}

fn closed_prometheus() -> String {
    format!("http://127.0.0.1:{}", port())
}

/// The arguments every start here needs, minus `--listen`.
fn base_args(dir: &Path, rule: &Path) -> Vec<OsString> {
    vec![
        "--prometheus-url".into(),
        closed_prometheus().into(),
        "--state-dir".into(),
        dir.into(),
        "--rules".into(),
        rule.into(),
    ]
}

fn write_rule(dir: &Path, name: &str, first_weight: u32) -> std::path::PathBuf {
    let p = dir.join(format!("{name}.yaml"));
    std::fs::write(&p, rule(name, first_weight)).expect("rule file");
    p
}

#[tokio::test]
async fn the_listen_address_comes_from_the_flag_then_the_variable_then_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rule = write_rule(dir.path(), "precedence", 5);
    let (file_port, env_port, flag_port) = (port(), port(), port());
    let config = dir.path().join("canaryd.yaml");
    std::fs::write(&config, format!("listen: 127.0.0.1:{file_port}\n")).expect("config");
    let mut args = base_args(dir.path(), &rule);
    args.extend(["--config".into(), config.clone().into()]);
    let env_listen = format!("127.0.0.1:{env_port}");
    let env = [("CANARYD_LISTEN", env_listen.as_str())];

    let mut d = Daemon::try_start_args(file_port, dir.path(), &args, &[])
        .await
        .expect("the file's address, with no variable and no flag");
    d.kill_and_wait().await;

    let mut d = Daemon::try_start_args(env_port, dir.path(), &args, &env)
        .await
        .expect("the variable's address over the file's");
    d.kill_and_wait().await;

    args.extend(["--listen".into(), format!("127.0.0.1:{flag_port}").into()]);
    let d = Daemon::try_start_args(flag_port, dir.path(), &args, &env)
        .await
        .expect("the flag's address over the variable's");
    for other in [file_port, env_port] {
        let r = d
            .http
            .get(format!("http://127.0.0.1:{other}/health/live"))
            .send()
            .await;
        assert!(r.is_err(), "also listening on {other}");
    }
}

#[tokio::test]
async fn an_api_token_under_16_characters_is_refused_at_start_and_16_is_enough() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rule = write_rule(dir.path(), "token-length", 5);
    let short = "fifteen-chars-x";
    assert_eq!(short.len(), 15);
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{short}\n")).expect("token file");
    for (how, extra, env) in [
        (
            "file",
            vec![OsString::from("--api-token-file"), file.clone().into()],
            vec![],
        ),
        ("variable", vec![], vec![("CANARYD_API_TOKEN", short)]),
    ] {
        let p = port();
        let mut args = base_args(dir.path(), &rule);
        args.extend(["--listen".into(), format!("127.0.0.1:{p}").into()]);
        args.extend(extra);
        let log = match Daemon::try_start_args(p, dir.path(), &args, &env).await {
            Ok(_) => panic!("a 15-character token from the {how} was accepted"),
            Err(log) => log,
        };
        assert!(log.contains("at least 16 characters"), "{how}: {log}");
        assert!(
            !log.contains(short),
            "{how}: the token is in the log: {log}"
        );
    }
    let sixteen = "sixteen-chars-xy";
    assert_eq!(sixteen.len(), 16);
    std::fs::write(&file, format!("{sixteen}\n")).expect("token file");
    let p = port();
    let mut args = base_args(dir.path(), &rule);
    args.extend(["--listen".into(), format!("127.0.0.1:{p}").into()]);
    args.extend(["--api-token-file".into(), file.into()]);
    let mut d = Daemon::try_start_args(p, dir.path(), &args, &[])
        .await
        .expect("a 16-character token starts");
    let start = Some(json!({"rule": "token-length", "version": "v1"}));
    assert_eq!(d.post("/api/v1/rollouts", start.clone()).await.0, 401);
    d.token = Some(sixteen.into());
    assert_eq!(d.post("/api/v1/rollouts", start).await.0, 201);
}

#[tokio::test]
async fn sighup_reloads_the_rule_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The daemon's rule path is a link to a file in a folder it does not watch: editing the
    // target raises no event in the watched folder, so only the signal can reload it.
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let target = write_rule(elsewhere.path(), "hup", 5);
    let link = dir.path().join("hup.yaml");
    std::os::unix::fs::symlink(&target, &link).expect("symlink");
    let p = port();
    let mut args = base_args(dir.path(), &link);
    args.extend(["--listen".into(), format!("127.0.0.1:{p}").into()]);
    let d = Daemon::try_start_args(p, dir.path(), &args, &[])
        .await
        .expect("starts");
    let first_weight =
        |rules: &serde_json::Value| rules["rules"][0]["spec"]["steps"][0]["weight"].clone();
    assert_eq!(first_weight(&d.get("/api/v1/rules").await.1), 5);
    std::fs::write(&target, rule("hup", 10)).expect("edit rule");
    // No signal yet: the edit alone must not reload (the watch cannot see it).
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        first_weight(&d.get("/api/v1/rules").await.1),
        5,
        "reloaded without SIGHUP"
    );
    d.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rules = d.get("/api/v1/rules").await.1;
        if first_weight(&rules) == 10 {
            break;
        }
        assert!(Instant::now() < deadline, "SIGHUP did not reload: {rules}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(d.log_text().contains("rules reloaded"));
}

/// Starts a daemon, starts a rollout, sends `signal`, and checks it exits 0 having stopped its
/// tasks, then that the next start on the same state directory resumes the rollout.
async fn stops_cleanly_on(signal: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let rule = write_rule(dir.path(), "stop", 5);
    let p = port();
    let mut args = base_args(dir.path(), &rule);
    args.extend(["--listen".into(), format!("127.0.0.1:{p}").into()]);
    let mut d = Daemon::try_start_args(p, dir.path(), &args, &[])
        .await
        .expect("starts");
    let id = d.start_rollout("stop", "v1").await;
    d.signal(signal);
    let status = d
        .wait_exit(Duration::from_secs(20))
        .await
        .unwrap_or_else(|| panic!("still running 20 s after SIG{signal}"));
    assert!(
        status.success(),
        "SIG{signal}: exit {status}\n{}",
        d.log_text()
    );
    assert!(
        d.log_text()
            .contains("shutting down: stopping rollout tasks"),
        "{}",
        d.log_text()
    );
    let p = port();
    let mut args = base_args(dir.path(), &rule);
    args.extend(["--listen".into(), format!("127.0.0.1:{p}").into()]);
    let d = Daemon::try_start_args(p, dir.path(), &args, &[])
        .await
        .expect("restarts on the same state directory (its lock released)");
    let r = d.rollout(&id).await;
    assert_eq!(r["id"], id.as_str(), "{r}");
    assert!(
        d.log_text().contains("resuming rollout"),
        "{}",
        d.log_text()
    );
}

#[tokio::test]
async fn sigterm_stops_cleanly_and_the_next_start_resumes() {
    stops_cleanly_on("TERM").await;
}

#[tokio::test]
async fn sigint_stops_cleanly_and_the_next_start_resumes() {
    stops_cleanly_on("INT").await;
}

/// The harness's own guard against the port race that failed a CI run: another process took the
/// port chosen for canaryd and answered every request with 200 `null`, so the test's first
/// call ("start a rollout") got 200 where canaryd says 201. A foreign server on the port must
/// read as "canaryd did not start" (it exits: cannot listen), never as a running daemon.
#[tokio::test]
async fn a_port_taken_by_another_server_is_not_mistaken_for_canaryd() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().expect("tempdir");
    let rule = write_rule(dir.path(), "taken", 5);
    let squatter = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("bind");
    let p = squatter.local_addr().expect("addr").port();
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = answered.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = squatter.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf).await;
                let _ = conn
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\nnull",
                    )
                    .await;
            });
        }
    });
    let mut args = base_args(dir.path(), &rule);
    args.extend(["--listen".into(), format!("127.0.0.1:{p}").into()]);
    match Daemon::try_start_args(p, dir.path(), &args, &[]).await {
        Ok(_) => panic!("the squatter's answers were taken for canaryd's"),
        Err(log) => assert!(log.contains("cannot listen on"), "{log}"),
    }
    // Whether the harness asked the squatter before canaryd exited is a race; what matters is
    // that no answer from it was ever accepted. Show the squatter does answer like a server.
    let (status, body) = {
        let r = reqwest::get(format!("http://127.0.0.1:{p}/health/live"))
            .await
            .expect("the squatter answers");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    };
    assert_eq!((status, body.as_str()), (200, "null"));
    assert!(answered.load(std::sync::atomic::Ordering::SeqCst) >= 1);
}
