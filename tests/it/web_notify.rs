//! Notifications that act: a gate that waits for approval, and a paused rollout, send a Slack
//! message that links to the rollout's page in the web view (below `external_url`), and the
//! link opens that page on the running daemon.

use crate::common;

use std::time::Duration;

use canaryd::demo::receiver::HookReceiver;
use common::{Daemon, RuleOpts, Stack, calls_to};

fn slack_texts(notify: &HookReceiver) -> Vec<String> {
    calls_to(&notify.calls(), "/slack")
        .iter()
        .filter_map(|c| c.body["text"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gate_and_pause_messages_link_to_the_rollout_page() {
    let opts = RuleOpts {
        hold: "1s",
        warmup: "1s",
        ..RuleOpts::default()
    };
    let mut stack = Stack::start("gated", opts).await;
    stack.daemon.kill_and_wait().await;
    // The second step is a gate.
    let rule_path = stack.dir.path().join("gated.yaml");
    let yaml = std::fs::read_to_string(&rule_path).expect("rule");
    let gated = yaml.replacen("hold: 1s }", "hold: 1s, approval: true }", 2);
    assert_ne!(gated, yaml, "the rule has a step to gate");
    std::fs::write(
        &rule_path,
        gated.replacen("hold: 1s, approval: true }", "hold: 1s }", 1),
    )
    .expect("write rule");
    let notify = HookReceiver::start().await.expect("receiver");
    let config = stack.dir.path().join("canaryd.yaml");
    // The external URL names canaryd's own port, so the config is written for each port tried.
    let daemon = Daemon::start_on_free_port_with(
        &stack.prometheus.url(),
        &[rule_path],
        stack.dir.path(),
        &[],
        |port| {
            std::fs::write(
                &config,
                format!(
                    "external_url: \"http://127.0.0.1:{port}/\"\nnotifications:\n  - {{ kind: slack, url: \"{}\", events: [waiting] }}\n",
                    notify.url("/slack"),
                ),
            )
            .expect("config");
            vec!["--config".into(), config.to_str().expect("utf-8").into()]
        },
    )
    .await;
    let port = daemon.port();

    let id = daemon.start_rollout("gated", "v4.2.0").await;
    daemon
        .wait_phase(&id, &["waiting_approval"], Duration::from_secs(30))
        .await;
    let link = format!("http://127.0.0.1:{port}/rollouts/{id}");
    assert!(
        notify
            .wait_for(
                |c| !calls_to(c, "/slack").is_empty(),
                Duration::from_secs(10)
            )
            .await,
        "no Slack message for the gate"
    );
    let texts = slack_texts(&notify);
    assert_eq!(texts.len(), 1, "{texts:#?}");
    assert!(
        texts[0].contains("gated v4.2.0 waits for approval at step 2 of 4"),
        "{texts:#?}"
    );
    assert!(texts[0].contains(&link), "{texts:#?}");

    let (status, _) = daemon
        .post(&format!("/api/v1/rollouts/{id}/pause"), None)
        .await;
    assert_eq!(status, 200);
    assert!(
        notify
            .wait_for(
                |c| calls_to(c, "/slack").len() >= 2,
                Duration::from_secs(10)
            )
            .await,
        "no Slack message for the pause"
    );
    let texts = slack_texts(&notify);
    assert!(texts[1].contains("gated v4.2.0 is paused"), "{texts:#?}");
    assert!(texts[1].contains("Reason: paused by user"), "{texts:#?}");
    assert!(texts[1].contains(&link), "{texts:#?}");

    // The link opens the rollout's page.
    let page = reqwest::get(&link).await.expect("follow link");
    assert_eq!(page.status(), 200);
    let html = page.text().await.expect("page");
    assert!(
        html.contains("v4.2.0") && html.contains("data-phase=\"paused\""),
        "{html}"
    );
}
