//! Rule files that used to pass `canaryd check` and then wedge, panic or mislead the daemon
//! (issue 9, findings 1, 4, 7, 10) are now errors at file:line:col: queries that are not PromQL
//! or that place the version outside a string, templates that never finish rendering, durations
//! that overflow the clock, score cut-offs that are not numbers, files too large to hold.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use canaryd::rules::{RuleError, parse_rule};

/// Lines 1-4.
const HEAD: &str = r#"name: demo
selector:
  canary: 'service="demo", track="canary"'
  baseline: 'service="demo", track="baseline"'
"#;

/// Lines 5-7.
const STEPS: &str = "steps:
  - { weight: 5, hold: 1h }
  - { weight: 100 }
";

/// Lines 8-11 after HEAD and STEPS.
const METRICS: &str = "metrics:
  - name: error_rate
    query: sum(rate(http_requests_total{ {{selector}} }[{{step}}]))
    rollback_above: 0.05
";

fn errors(text: &str) -> Vec<RuleError> {
    match parse_rule(Path::new("rule.yaml"), text) {
        Ok(rule) => panic!("expected errors, but {:?} loaded", rule.name()),
        Err(errors) => errors,
    }
}

/// Asserts the one error of `text` is at `line:column` and says `says`.
fn assert_error(text: &str, line: u32, column: u32, says: &str) {
    let errors = errors(text);
    assert_eq!(errors.len(), 1, "expected one error, got {errors:#?}");
    let got = errors[0].to_string();
    let at = format!("rule.yaml:{line}:{column}: ");
    assert!(got.starts_with(&at), "expected {at}…, got {got}");
    assert!(got.contains(says), "expected {says:?} in {got}");
}

fn with_query(query: &str) -> String {
    let query = query.replace('\'', "''");
    format!("{HEAD}{STEPS}metrics:\n  - name: e\n    query: '{query}'\n    rollback_above: 1\n")
}

// ---- finding 1: every rendered query is PromQL, and the version lands inside a string ----

#[test]
fn a_selector_that_breaks_the_query_is_an_error_at_the_query() {
    let text = format!(
        "{}{STEPS}{METRICS}",
        HEAD.replace(r#"track="canary"'"#, r#"track="canary"}'"#)
    );
    assert_error(
        &text,
        10,
        12,
        "metric error_rate: query for the canary is not valid PromQL",
    );
}

#[test]
fn a_query_that_is_not_promql_is_an_error_showing_the_rendered_text() {
    assert_error(
        &with_query("sum(rate(x{ {{selector}} }[{{step}}])"),
        10,
        12,
        r#"rendered: sum(rate(x{ service="demo", track="canary" }[15s])"#,
    );
}

#[test]
fn the_version_outside_a_double_quoted_string_is_refused() {
    for (query, why) in [
        ("x{ {{selector}}, version=`{{version}}` }", "raw string"),
        ("x{ {{selector}}, version='{{version}}' }", "single quotes"),
        ("x{ {{selector}}, version=~\"{{version}}.*\" }", "regex"),
    ] {
        let got: Vec<String> = errors(&with_query(query))
            .iter()
            .map(ToString::to_string)
            .collect();
        assert!(
            got.iter().any(|e| e.starts_with("rule.yaml:10:12: ")
                && e.contains("`{{version}}` must sit inside a double-quoted string")),
            "{why}: {got:#?}"
        );
    }
}

#[test]
fn the_version_inside_a_label_matcher_string_loads() {
    let rule = parse_rule(
        Path::new("rule.yaml"),
        &with_query(r#"sum(rate(x{ {{selector}}, version="{{version}}" }[1m]))"#),
    );
    assert!(rule.is_ok(), "{rule:?}");
}

#[test]
fn a_filter_cannot_mark_the_version_safe_to_splice() {
    let text = with_query(r#"x{ {{selector}}, version="{{ version|safe }}" }"#);
    let got = errors(&text)[0].to_string();
    assert!(got.starts_with("rule.yaml:10:12: "), "{got}");
    assert!(got.contains("safe"), "{got}");
}

// ---- finding 4: templates have fuel ----

/// Three nested loops over a 2,000-character `vars` string: 8·10⁹ iterations without fuel.
fn looping_rule() -> String {
    format!(
        "{HEAD}vars:\n  x: {}\n{STEPS}metrics:\n  - name: e\n    query: 'x{{ {{{{selector}}}} }}{{% for a in x %}}{{% for b in x %}}{{% for c in x %}}{{% endfor %}}{{% endfor %}}{{% endfor %}}'\n    compare: mann_whitney\n",
        "y".repeat(2000)
    )
}

#[test]
fn a_template_that_loops_over_loops_is_an_error_at_its_query() {
    let started = Instant::now();
    assert_error(&looping_rule(), 12, 12, "template needs more than");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn canaryd_check_fails_fast_on_a_template_that_loops_over_loops() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("loops.yaml");
    std::fs::write(&path, looping_rule()).expect("write");
    let mut child = Command::new(env!("CARGO_BIN_EXE_canaryd"))
        .arg("check")
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("canaryd runs");
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("canaryd check still running after 20 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains(&format!("{}:12:12: ", path.display()))
            && stderr.contains("steps to render"),
        "stderr: {stderr}"
    );
}

// ---- finding 7: durations are bounded ----

#[test]
fn a_hold_of_a_billion_years_is_an_error_at_the_step() {
    let text = format!(
        "{HEAD}steps:\n  - {{ weight: 5, hold: 1000000000y }}\n  - {{ weight: 100 }}\n{METRICS}"
    );
    assert_error(
        &text,
        6,
        5,
        "step hold 1000000000years is longer than the 1year allowed",
    );
}

#[test]
fn analysis_durations_beyond_their_bounds_are_errors_at_the_analysis_block() {
    for (analysis, says) in [
        (
            "warmup: 2y",
            "warmup 2years is longer than the 1year allowed",
        ),
        (
            "interval: 2d",
            "interval 2days is longer than the 1day allowed",
        ),
        ("window: 60d", "is longer than the 30days allowed"),
        (
            "window: 1d, step: 1s",
            "is more than the 11000 points per series Prometheus answers",
        ),
        ("step: 1500us", "step 1ms 500us must be whole milliseconds"),
    ] {
        let text = format!("{HEAD}{STEPS}analysis: {{ {analysis} }}\n{METRICS}");
        let got: Vec<String> = errors(&text).iter().map(ToString::to_string).collect();
        assert!(
            got.iter()
                .any(|e| e.starts_with("rule.yaml:8:11: analysis: ") && e.contains(says)),
            "{analysis}: expected {says:?} at 8:11 in {got:#?}"
        );
    }
}

#[test]
fn hook_timeouts_and_health_intervals_are_bounded() {
    let text = format!(
        "{HEAD}{STEPS}{METRICS}health:\n  - {{ url: 'http://127.0.0.1:1/health', interval: 2d }}\nhooks:\n  rollback: {{ command: [/bin/true], timeout: 2h }}\n"
    );
    let got: Vec<String> = errors(&text).iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        [
            "rule.yaml:15:13: hook timeout 2h is longer than the 1h allowed",
            "rule.yaml:13:5: health interval 2days is longer than the 1day allowed",
        ]
    );
}

/// The lifecycle hooks and the readiness probe are bounded like the traffic hooks (they were
/// once missing from the list the bound walked).
#[test]
fn lifecycle_hook_and_readiness_timeouts_are_bounded_too() {
    let text = format!(
        "{HEAD}{STEPS}{METRICS}hooks:\n  pre_rollout: {{ command: [/bin/true], timeout: 2h }}\n  migrate_down: {{ command: [/bin/true], timeout: 3h }}\n  readiness: {{ url: 'http://127.0.0.1:1/ready', timeout: 4h }}\n"
    );
    let got: Vec<String> = errors(&text).iter().map(ToString::to_string).collect();
    for long in ["2h", "3h", "4h"] {
        let message = format!("hook timeout {long} is longer than the 1h allowed");
        assert!(
            got.iter()
                .any(|e| e.starts_with("rule.yaml:") && e.ends_with(&message)),
            "{message:?} not in {got:#?}"
        );
    }
}

// ---- finding 10: score cut-offs and file sizes ----

#[test]
fn score_cut_offs_must_be_numbers_from_0_to_100() {
    for score in [
        "{ marginal: .nan }",
        "{ marginal: -5 }",
        "{ pass: 101, marginal: 50 }",
        "{ pass: .nan }",
        "{ pass: 90, marginal: 95 }",
    ] {
        let text = format!("{HEAD}{STEPS}analysis:\n  score: {score}\n{METRICS}");
        assert_error(&text, 9, 3, "score cut-offs must satisfy 0 <= marginal");
    }
}

#[test]
fn a_rule_file_over_one_mib_is_refused_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("huge.yaml");
    let padding = format!("# {}\n", "x".repeat(1000)).repeat(1100);
    std::fs::write(&path, format!("{HEAD}{STEPS}{METRICS}{padding}")).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_canaryd"))
        .arg("check")
        .arg(&path)
        .output()
        .expect("canaryd runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains(&format!(
            "{}:1:1: rule file is larger than the 1048576 bytes allowed",
            path.display()
        )),
        "stderr: {stderr}"
    );
}
