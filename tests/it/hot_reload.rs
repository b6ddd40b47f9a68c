//! Rule files are watched: a broken edit keeps the last good rules (a rollout can still start),
//! says where the error is and sets `canaryd_rules_reload_success 0`; the fixed file is picked up.

use crate::common;

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

/// How many reloads the daemon logged (each one, accepted or rejected, logs one line).
fn reloads(d: &Daemon) -> usize {
    let log = d.log_text();
    log.matches("rules reloaded").count() + log.matches("rule reload rejected").count()
}

/// Polls for `d`, failing the moment the reload count leaves `expected`: the absence of a
/// reload can only be watched for a while, but a loop shows within a fraction of it.
async fn assert_reloads_stay(d: &Daemon, expected: usize, d_for: Duration) {
    let deadline = Instant::now() + d_for;
    while Instant::now() < deadline {
        let n = reloads(d);
        assert_eq!(
            n,
            expected,
            "reloads happened without a content change; log:\n{}",
            common::tail(&d.log_text(), 20)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_or_touching_rule_files_reloads_nothing_and_an_edit_reloads_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(&rules).expect("rules dir");
    let file = rules.join("a.yaml");
    std::fs::write(&file, rule("alpha")).expect("rule");
    let port = canaryd::demo::free_loopback_port().expect("port");
    let d = Daemon::start(
        &format!("http://127.0.0.1:{port}"),
        std::slice::from_ref(&rules),
        dir.path(),
        &[],
    )
    .await;

    // `cat`, many times, and a `touch` that rewrites nothing.
    for _ in 0..20 {
        let text = std::fs::read_to_string(&file).expect("read");
        assert!(text.contains("alpha"));
    }
    std::fs::File::options()
        .write(true)
        .open(&file)
        .and_then(|f| f.set_modified(std::time::SystemTime::now()))
        .expect("touch");
    assert_reloads_stay(&d, 0, Duration::from_secs(3)).await;

    std::fs::write(&file, rule("alpha").replace("interval: 1h", "interval: 2h")).expect("edit");
    wait_until("the edit reloaded", &d, async || reloads(&d) >= 1).await;
    assert_reloads_stay(&d, 1, Duration::from_secs(3)).await;
    let (_, listed) = d.get("/api/v1/rules").await;
    assert!(
        listed.to_string().contains("2h"),
        "the edit is live: {listed}"
    );
    assert!(
        d.metrics().await.contains("canaryd_rules_reloads_total 1"),
        "{}",
        d.metrics().await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_whose_template_never_finishes_is_rejected_on_reload_and_the_running_rules_stay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(&rules).expect("rules dir");
    std::fs::write(rules.join("a.yaml"), rule("alpha")).expect("rule");
    let port = canaryd::demo::free_loopback_port().expect("port");
    let d = Daemon::start(
        &format!("http://127.0.0.1:{port}"),
        std::slice::from_ref(&rules),
        dir.path(),
        &[],
    )
    .await;

    // Three nested loops over a 2,000-character string: 8·10⁹ iterations without fuel.
    let looping = rule("beta")
        .replace(
            "metrics:",
            &format!("vars: {{ x: {} }}\nmetrics:", "y".repeat(2000)),
        )
        .replace(
            " })',",
            " }){% for a in x %}{% for b in x %}{% for c in x %}{% endfor %}{% endfor %}{% endfor %}',",
        );
    assert!(looping.contains("{% for c in x %}"), "{looping}");
    std::fs::write(rules.join("b.yaml"), looping).expect("write");
    wait_until("reload rejected", &d, async || {
        d.metrics().await.contains("canaryd_rules_reload_success 0")
    })
    .await;
    let log = d.log_text();
    assert!(
        log.contains("b.yaml:7:") && log.contains("steps to render"),
        "the error names file:line and the cause:\n{log}"
    );
    let started = Instant::now();
    let (status, listed) = d.get("/api/v1/rules").await;
    assert_eq!(status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the API answers at once"
    );
    assert_eq!(
        listed["rules"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
    assert_eq!(listed["rules"][0]["name"], "alpha", "{listed}");
    d.start_rollout("alpha", "v1").await;
}
