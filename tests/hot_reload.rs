//! Rule files are watched: a broken edit keeps the last good rules (a rollout can still start),
//! says where the error is and sets `canaryd_rules_reload_success 0`; the fixed file is picked up.

mod common;

use std::time::{Duration, Instant};

use common::Daemon;

fn rule(name: &str) -> String {
    format!(
        "name: {name}\nselector: {{ canary: 'track=\"canary\"', baseline: 'track=\"baseline\"' }}\n\
         steps: [{{ weight: 5, hold: 1h }}, {{ weight: 100 }}]\n\
         analysis: {{ interval: 1h }}\n\
         metrics:\n  - {{ name: up, query: 'sum(up{{ {{{{selector}}}} }})', rollback_below: 1 }}\n"
    )
}

async fn wait_until(what: &str, d: &Daemon, mut ok: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if ok().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{what} never happened; log:\n{}",
        common::tail(&d.log_text(), 20)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_rule_file_keeps_the_old_rules_and_the_fixed_one_is_picked_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(&rules).expect("rules dir");
    std::fs::write(rules.join("a.yaml"), rule("alpha")).expect("rule");
    let port = canaryd::demo::free_loopback_port().expect("port");
    let pattern = format!("{}/*.yaml", rules.display());
    let d = Daemon::start(
        &format!("http://127.0.0.1:{port}"),
        &[pattern.into()],
        dir.path(),
        &[],
    )
    .await;

    // Line 3 gets an unknown key.
    std::fs::write(
        rules.join("a.yaml"),
        rule("alpha").replace("steps:", "stepz: 1\nsteps:"),
    )
    .expect("break");
    wait_until("reload rejected", &d, async || {
        d.metrics().await.contains("canaryd_rules_reload_success 0")
    })
    .await;
    let log = d.log_text();
    assert!(
        log.contains("a.yaml:3:1"),
        "error must name file:line:col:\n{log}"
    );
    let (_, listed) = d.get("/api/v1/rules").await;
    assert_eq!(
        listed["rules"][0]["name"], "alpha",
        "old rules kept: {listed}"
    );
    let id = d.start_rollout("alpha", "v1").await;

    // Fixed, and a second rule added: both picked up; the running rollout is untouched.
    std::fs::write(rules.join("a.yaml"), rule("alpha")).expect("fix");
    std::fs::write(rules.join("b.yaml"), rule("beta")).expect("add");
    wait_until("fixed rules loaded", &d, async || {
        d.get("/api/v1/rules").await.1.to_string().contains("beta")
            && d.metrics().await.contains("canaryd_rules_reload_success 1")
    })
    .await;
    assert_eq!(d.rollout(&id).await["phase"], "progressing");
    d.start_rollout("beta", "v1").await;
}
