//! The web view in a real browser: Debian's Chromium, headless, driven through chromedriver
//! (WebDriver), against a real `canaryd serve` judging a real Prometheus.
//!
//! `CANARYD_WEB_BENCH=N` raises the latency rounds of `measures_update_and_abort_latency` from 1
//! to N and prints the table BENCHMARKS.md quotes.

#[path = "web_support/browser.rs"]
mod browser;
use crate::common;

use std::time::{Duration, Instant, SystemTime};

use browser::Browser;
use common::{RuleOpts, Stack, calls_to};
use fantoccini::Locator;
use serde_json::json;

const TOKEN: &str = "web-view-test-token-0123456789";

/// A stack whose rollouts hold their first step for a minute, so one stays running while the
/// browser looks at it.
async fn stack(rule: &str) -> Stack {
    let opts = RuleOpts {
        hold: "60s",
        ..RuleOpts::default()
    };
    Stack::start_with(rule, opts, "", &[("CANARYD_API_TOKEN", TOKEN)]).await
}

fn artifacts() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/web-artifacts");
    std::fs::create_dir_all(&dir).expect("artifact dir");
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_sees_a_live_rollout_aborts_it_only_with_the_token_then_retries_and_promotes_to_the_end()
 {
    let mut s = stack("webcheckout").await;
    s.daemon.token = Some(TOKEN.into());
    let browser = Browser::start().await;
    let id = s.start_at_first_step("v2.0.1").await;
    let b = &browser;

    // The list shows the running rollout and links to its page.
    b.client.goto(&s.daemon.url).await.expect("open list");
    let row = format!("tr[data-id='{id}']");
    b.wait_js(
        "the rollout in the list",
        &format!("return document.querySelector(\"{row}\") !== null"),
        Duration::from_secs(10),
    )
    .await;
    let row_text = b.text_of(&row).await;
    assert!(
        row_text.contains("webcheckout") && row_text.contains("v2.0.1"),
        "{row_text}"
    );
    assert!(
        row_text.contains("progressing") && row_text.contains("step 1/4"),
        "{row_text}"
    );
    b.click(&format!("{row} a")).await;

    // Every page says to the browser that only this origin's script and styles may run.
    for path in [
        "/".to_string(),
        format!("/rollouts/{id}"),
        "/static/app.js".into(),
    ] {
        let resp = s
            .daemon
            .http
            .get(format!("{}{path}", s.daemon.url))
            .send()
            .await
            .expect("get");
        let csp = resp
            .headers()
            .get("content-security-policy")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
            "{path}: {csp:?}"
        );
    }

    // Its page shows every metric with numbers, and redraws as ticks arrive (no reload).
    let canary_cell = "tr[data-metric='error_rate'] td.canary";
    let number = b
        .wait_js(
            "error_rate with a canary number",
            &format!(
                "const c = document.querySelector(\"{canary_cell}\"); \
                 return c && /[0-9]/.test(c.textContent) ? c.textContent : null"
            ),
            Duration::from_secs(20),
        )
        .await;
    assert!(
        number.as_str().is_some_and(|n| n.parse::<f64>().is_ok()),
        "{number}"
    );
    for metric in ["p95_latency", "db_pool_utilization", "cpu_utilization"] {
        let base = b
            .text_of(&format!("tr[data-metric='{metric}'] td.baseline"))
            .await;
        assert!(base.parse::<f64>().is_ok(), "{metric} baseline {base:?}");
    }
    b.wait_js(
        "charts with a few ticks drawn",
        "const p = document.querySelector('figure.metric svg path'); \
         return document.querySelectorAll('figure.metric svg path').length >= 4 && \
         p.getAttribute('d').split('L').length > 4",
        Duration::from_secs(20),
    )
    .await;
    let png = b.client.screenshot().await.expect("screenshot");
    std::fs::write(artifacts().join("rollout.png"), &png).expect("save screenshot");

    // A state change elsewhere (the API) shows without a reload: the live feed refreshes it.
    b.client
        .execute("window.__sameDocument = true; return true", vec![])
        .await
        .expect("mark document");
    let (status, body) = s
        .daemon
        .post(&format!("/api/v1/rollouts/{id}/pause"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    b.wait_js(
        "paused on the page",
        "const l = document.getElementById('live'); \
         return l && l.dataset.phase === 'paused' && window.__sameDocument === true",
        Duration::from_secs(10),
    )
    .await;
    b.click("button[data-action='resume']").await; // no token: refused
    b.wait_js(
        "the refusal",
        "return /refused \\(401\\)/.test(document.getElementById('action-status').textContent)",
        Duration::from_secs(10),
    )
    .await;

    // Without the token, abort is refused and the rollout keeps running.
    s.daemon
        .post(&format!("/api/v1/rollouts/{id}/resume"), None)
        .await;
    b.wait_js(
        "progressing again",
        "return document.getElementById('live').dataset.phase === 'progressing'",
        Duration::from_secs(10),
    )
    .await;
    b.click("button[data-action='abort']").await;
    b.wait_js(
        "the abort refusal",
        "const t = document.getElementById('action-status').textContent; \
         return /Abort: refused \\(401\\)/.test(t)",
        Duration::from_secs(10),
    )
    .await;
    let r = s.daemon.rollout(&id).await;
    assert_eq!(r["phase"], "progressing", "{r}");
    assert!(calls_to(&s.receiver.calls(), "/rollback").is_empty());

    // With the token (and a reason that is markup), abort rolls back and the hook is called.
    let xss = "<script>window.__xss=1</script><img src=x onerror=\"window.__xss=2\">";
    b.type_into("#token", TOKEN).await;
    b.type_into("#reason", xss).await;
    b.click("button[data-action='abort']").await;
    assert!(
        s.receiver
            .wait_for(
                |c| !calls_to(c, "/rollback").is_empty(),
                Duration::from_secs(20)
            )
            .await,
        "rollback hook not called; log:\n{}",
        common::tail(&s.daemon.log_text(), 30)
    );
    s.daemon
        .wait_phase(&id, &["rolled_back"], Duration::from_secs(20))
        .await;
    b.wait_js(
        "rolled back on the page",
        "return document.getElementById('live').dataset.phase === 'rolled_back'",
        Duration::from_secs(10),
    )
    .await;
    let shown = b.text_of("#reason-text").await;
    assert!(
        shown.contains("<script>window.__xss=1</script>"),
        "reason shown as text: {shown}"
    );
    let ran = b
        .client
        .execute("return typeof window.__xss", vec![])
        .await
        .expect("script");
    assert_eq!(ran, json!("undefined"), "the reason's markup ran as code");
    assert!(
        b.client
            .find_all(Locator::Css("#live img, #live script"))
            .await
            .expect("query")
            .is_empty(),
        "the reason's markup became elements"
    );
    let rollback = calls_to(&s.receiver.calls(), "/rollback")[0].body.clone();
    assert_eq!(rollback["version"], "v2.0.1", "{rollback}");

    // Retry from the rolled-back page opens the new run; "promote to the end" finishes it.
    b.click("button[data-action='retry']").await;
    b.wait_js(
        "the new run's page",
        &format!(
            "return location.pathname.startsWith('/rollouts/') && \
             location.pathname !== '/rollouts/{id}'"
        ),
        Duration::from_secs(10),
    )
    .await;
    let new_id = b
        .client
        .execute(
            "return decodeURIComponent(location.pathname.split('/').pop())",
            vec![],
        )
        .await
        .expect("script");
    let new_id = new_id.as_str().expect("id").to_string();
    let run = s.daemon.rollout(&new_id).await;
    assert_eq!(run["retry_of"], json!(id), "{run}");
    assert_eq!(run["run"], 2, "{run}");
    // Promote is refused while a hook is in flight: wait until the first weight is confirmed.
    let settled = Instant::now();
    loop {
        let r = s.daemon.rollout(&new_id).await;
        if r["phase"] == "progressing" && r["weight"] == 5 && r["pending"].is_null() {
            break;
        }
        assert!(
            settled.elapsed() < Duration::from_secs(20),
            "the retried run never settled at 5 %: {r}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let promotes_before = calls_to(&s.receiver.calls(), "/promote").len();
    b.click("button[data-action='promote'][data-full='true']")
        .await;
    let done = s
        .daemon
        .wait_phase(&new_id, &["succeeded"], Duration::from_secs(20))
        .await;
    assert_eq!(
        calls_to(&s.receiver.calls(), "/promote").len(),
        promotes_before + 1,
        "one promote hook call for the promoted run"
    );
    let controls = done["controls"].as_array().expect("controls recorded");
    assert!(
        controls
            .iter()
            .any(|c| c["action"] == "promote_full" && c["by"] == "default"),
        "promote_full recorded with the token's name: {done}"
    );

    // Readable on a phone: one column, nothing wider than the screen.
    b.client.set_window_size(390, 844).await.expect("resize");
    let overflow = b
        .client
        .execute(
            "return document.documentElement.scrollWidth - window.innerWidth",
            vec![],
        )
        .await
        .expect("script");
    assert!(
        overflow.as_i64().is_some_and(|o| o <= 0),
        "page overflows a phone by {overflow}"
    );
    let png = b.client.screenshot().await.expect("screenshot");
    std::fs::write(artifacts().join("rollout-phone.png"), &png).expect("save screenshot");

    // An open page (its live feed connected) does not hold up a graceful stop.
    assert_eq!(
        b.text_of("#feed").await,
        "●",
        "the page's feed is connected"
    );
    let pid = s.daemon.pid().expect("pid");
    let term = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(term.success());
    let stopped = Instant::now();
    while process_alive(pid) {
        assert!(
            stopped.elapsed() < Duration::from_secs(10),
            "canaryd still running 10 s after SIGTERM with a page open; log:\n{}",
            common::tail(&s.daemon.log_text(), 20)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Running, not exited (a zombie waiting to be reaped has exited).
fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat
                .rsplit(')')
                .next()?
                .split_whitespace()
                .next()?
                .to_string();
            Some(state != "Z")
        })
        .unwrap_or(false)
}

/// Median of a non-empty set of milliseconds.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn measures_update_and_abort_latency() {
    let rounds: usize = std::env::var("CANARYD_WEB_BENCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .clamp(1, 100);
    let mut s = stack("webbench").await;
    s.daemon.token = Some(TOKEN.into());
    let b = Browser::start().await;
    let (mut shown, mut hooked, mut roundtrip) = (Vec::new(), Vec::new(), Vec::new());
    let mut reread = Vec::new();
    for _ in 0..rounds {
        let before = s.receiver.calls().len();
        let id = s.start_at_first_step("v3.0.0").await;
        b.client
            .goto(&format!("{}/rollouts/{id}", s.daemon.url))
            .await
            .expect("open page");
        assert_eq!(b.phase_shown().await, "progressing");

        // What a WebDriver call alone costs: the measurement's floor.
        let t = Instant::now();
        b.phase_shown().await;
        roundtrip.push(t.elapsed().as_secs_f64() * 1e3);

        // State change through the API → the browser's DOM shows it.
        let t0 = Instant::now();
        let (status, _) = s
            .daemon
            .post(&format!("/api/v1/rollouts/{id}/pause"), None)
            .await;
        assert_eq!(status, 200);
        while b.phase_shown().await != "paused" {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "page never showed paused"
            );
        }
        shown.push(t0.elapsed().as_secs_f64() * 1e3);
        // What one re-read of the page costs the browser (request to last byte): the part of a
        // refresh that polling would pay too, on top of waiting for its next poll.
        let fetch = b
            .client
            .execute(
                "const e = performance.getEntriesByType('resource')\
                   .filter(e => e.name.endsWith(location.pathname)).pop(); \
                 return e ? e.duration : null",
                vec![],
            )
            .await
            .expect("script");
        reread.push(fetch.as_f64().expect("the refresh's resource timing"));

        // Abort click → the rollback hook receives its call.
        b.type_into("#token", TOKEN).await;
        let clicked = SystemTime::now();
        b.click("button[data-action='abort']").await;
        assert!(
            s.receiver
                .wait_for(
                    |c| !calls_to(&c[before..], "/rollback").is_empty(),
                    Duration::from_secs(20)
                )
                .await,
            "rollback hook not called"
        );
        let calls = s.receiver.calls();
        let at = calls_to(&calls[before..], "/rollback")[0].at;
        hooked.push(at.duration_since(clicked).unwrap_or_default().as_secs_f64() * 1e3);
        s.daemon
            .wait_phase(&id, &["rolled_back"], Duration::from_secs(20))
            .await;
    }
    println!(
        "\n| rounds | WebDriver round trip | page re-read | state change → page shows it | \
         abort click → rollback hook |"
    );
    println!("|---|---|---|---|---|");
    println!(
        "| {rounds} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms |",
        median(roundtrip),
        median(reread.clone()),
        median(shown.clone()),
        median(hooked.clone())
    );
    println!("all (ms): re-read {reread:.1?} shown {shown:.1?} hook {hooked:.1?}");
    s.daemon.kill_and_wait().await;
}
