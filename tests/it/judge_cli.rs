//! `canaryd judge`: offline verdicts from recorded samples, JSON for machines, a table for people.

use std::process::Command;

use serde_json::Value;

const RULE: &str = r#"name: offline
selector: { canary: 'track="canary"', baseline: 'track="baseline"' }
steps: [{ weight: 5, hold: 1h }, { weight: 100 }]
metrics:
  - name: error_rate
    query: 'sum(rate(errors{ {{selector}} }[{{step}}]))'
    rollback_above: 0.05
    critical: true
  - name: p95_latency
    query: 'p95{ {{selector}} }'
    rollback_above: 10
    compare: mann_whitney
    allowed_increase: 1.1
"#;

fn run(samples: &str, format: &str) -> (i32, String, String) {
    run_rule(RULE, samples, format)
}

fn run_rule(rule_text: &str, samples: &str, format: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let rule = dir.path().join("offline.yaml");
    let s = dir.path().join("samples.json");
    std::fs::write(&rule, rule_text).expect("rule");
    std::fs::write(&s, samples).expect("samples");
    let out = Command::new(env!("CARGO_BIN_EXE_canaryd"))
        .args(["judge", "--rule"])
        .arg(&rule)
        .arg("--samples")
        .arg(&s)
        .args(["--format", format])
        .output()
        .expect("run judge");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn series(base: f64, factor: f64) -> String {
    let v: Vec<String> = (0..20)
        .map(|i| {
            format!(
                "{:.4}",
                base * factor * (1.0 + 0.02 * ((i * 7 % 11) as f64 - 5.0) / 5.0)
            )
        })
        .collect();
    format!("[{}]", v.join(","))
}

#[test]
fn slower_canary_fails_with_every_number_explained() {
    let samples = format!(
        r#"{{"error_rate": {{"canary": {e}, "baseline": {e}}}, "p95_latency": {{"canary": {c}, "baseline": {b}}}}}"#,
        e = series(0.001, 1.0),
        c = series(0.3, 1.3),
        b = series(0.3, 1.0)
    );
    let (code, out, err) = run(&samples, "json");
    assert_eq!(code, 1, "{out}{err}");
    let v: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["decision"], "fail");
    let p95 = v["metrics"]
        .as_array()
        .and_then(|m| m.iter().find(|x| x["name"] == "p95_latency"))
        .expect("p95");
    for key in [
        "verdict",
        "classification",
        "critical",
        "canary",
        "baseline",
        "threshold",
        "p_value",
        "interval",
        "estimate",
        "effect",
    ] {
        assert!(p95.get(key).is_some(), "{key} missing: {p95}");
    }
    assert_eq!(p95["verdict"], "fail");
    assert_eq!(p95["classification"], "high");
    assert!(p95["p_value"].as_f64().is_some_and(|p| p < 0.001));
    assert!(
        (p95["effect"].as_f64().unwrap_or(0.0) - 1.3).abs() < 0.02,
        "{p95}"
    );
    assert!(v["score"]["value"].as_f64().is_some_and(|s| s < 75.0));
}

#[test]
fn equal_samples_pass_and_exit_zero_with_a_table() {
    let samples = format!(
        r#"{{"error_rate": {{"canary": {e}, "baseline": {e}}}, "p95_latency": {{"canary": {c}, "baseline": {b}}}}}"#,
        e = series(0.001, 1.0),
        c = series(0.3, 1.02),
        b = series(0.3, 1.0)
    );
    let (code, out, err) = run(&samples, "text");
    assert_eq!(code, 0, "{out}{err}");
    let header = out.lines().next().unwrap_or("");
    for col in [
        "METRIC",
        "VERDICT",
        "CLASS",
        "CANARY",
        "BASELINE",
        "THRESHOLD",
        "P-VALUE",
        "INTERVAL",
        "EFFECT",
    ] {
        assert!(header.contains(col), "{header}");
    }
    assert!(out.contains("decision: pass"), "{out}");
}

#[test]
fn missing_metric_is_nodata_never_pass() {
    let (code, out, _) = run(
        r#"{"error_rate": {"canary": [0.001, 0.001, 0.001], "baseline": [0.001, 0.001, 0.001]}}"#,
        "json",
    );
    assert_eq!(code, 1);
    let v: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["decision"], "nodata");
}

#[test]
fn bad_input_exits_2_with_a_reason() {
    let (code, _, err) = run("{not json", "json");
    assert_eq!(code, 2);
    assert!(err.contains("samples.json"), "{err}");
    let (code, _, err) = run(r#"{"p99": {"canary": [1], "baseline": [1]}}"#, "json");
    assert_eq!(code, 2);
    assert!(err.contains("p99") && err.contains("p95_latency"), "{err}");
}

#[test]
fn check_warns_about_overlapping_samples_and_significance_only_effects() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rule = dir.path().join("lint.yaml");
    std::fs::write(
        &rule,
        RULE.replace(
            "query: 'p95{ {{selector}} }'",
            "query: 'rate(h{ {{selector}} }[5m])'",
        )
        .replace("allowed_increase: 1.1", "allowed_increase: 1.0"),
    )
    .expect("rule");
    let out = Command::new(env!("CARGO_BIN_EXE_canaryd"))
        .arg("check")
        .arg(&rule)
        .output()
        .expect("check");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "warnings do not fail the check: {err}"
    );
    assert!(
        err.contains(
            "warning: metric p95_latency: statistical comparison over a 5m range selector"
        ),
        "{err}"
    );
    assert!(err.contains("fails on significance alone"), "{err}");
    assert!(
        err.contains("lint.yaml:"),
        "warnings carry file:line:col: {err}"
    );
}

const SEQUENTIAL_RULE: &str = r#"name: counts
selector: { canary: 'track="canary"', baseline: 'track="baseline"' }
steps: [{ weight: 5, hold: 1h }, { weight: 100 }]
metrics:
  - name: errors
    test: sequential
    events: 'http_requests_total{ {{selector}}, code=~"5.." }'
    requests: 'http_requests_total{ {{selector}} }'
"#;

#[test]
fn per_tick_counts_say_at_which_tick_the_sequential_test_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rule = dir.path().join("counts.yaml");
    let samples = dir.path().join("counts.json");
    std::fs::write(&rule, SEQUENTIAL_RULE).expect("rule");
    // The issue's eight-tick sequence: (canary requests, baseline requests, canary errors, baseline errors).
    std::fs::write(
        &samples,
        r#"{"errors": {
            "canary":   {"requests": [100, 104, 98, 500, 510, 495, 1000, 1003], "events": [2, 3, 1, 9, 11, 12, 22, 19]},
            "baseline": {"requests": [1900, 1896, 1902, 1500, 1490, 1505, 1000, 997], "events": [19, 18, 20, 15, 14, 16, 10, 9]}
        }}"#,
    )
    .expect("samples");
    let out = Command::new(env!("CARGO_BIN_EXE_canaryd"))
        .args(["judge", "--format", "json", "--rule"])
        .arg(&rule)
        .arg("--samples")
        .arg(&samples)
        .output()
        .expect("judge");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    let m = &v["metrics"][0];
    assert_eq!(m["fails_at_tick"], 6, "{m}");
    assert_eq!(m["verdict"], "fail");
    assert!(
        (m["evidence"]["e_value"].as_f64().unwrap_or(0.0) - 104.9451).abs() < 0.01,
        "{m}"
    );
    assert_eq!(m["e_by_tick"].as_array().map(Vec::len), Some(6));
    assert!(
        m["reason"]
            .as_str()
            .unwrap_or("")
            .starts_with("fails at tick 6: evidence 104.9 : 1 (threshold 20)"),
        "{m}"
    );
}

fn one_metric_rule(metric: &str) -> String {
    format!(
        "name: offline\nselector: {{ canary: 'track=\"canary\"', baseline: 'track=\"baseline\"' }}\nsteps: [{{ weight: 5, hold: 1h }}, {{ weight: 100 }}]\nmetrics:\n  - name: p95_latency\n    query: 'p95{{ {{{{selector}}}} }}'\n    compare: mann_whitney\n{metric}"
    )
}

#[test]
fn cles_thresholds_between_zero_and_one_are_accepted_and_judge() {
    let rule = one_metric_rule(
        "    effect_size: cles\n    allowed_increase: 0.7\n    critical_increase: 0.9\n",
    );
    let samples = format!(
        r#"{{"p95_latency": {{"canary": {c}, "baseline": {b}}}}}"#,
        c = series(0.3, 1.3),
        b = series(0.3, 1.0)
    );
    let (code, out, err) = run_rule(&rule, &samples, "json");
    assert_eq!(code, 1, "{out}{err}");
    let v: Value = serde_json::from_str(&out).expect("json");
    let m = &v["metrics"][0];
    assert_eq!(m["classification"], "high", "{m}");
    assert_eq!(
        m["effect"], 1.0,
        "every canary sample is above every baseline one: {m}"
    );
    assert_eq!(m["critical_effect"], true, "{m}");
    assert_eq!(m["critical"], false, "{m}");
    assert!(
        m["reason"].as_str().is_some_and(|r| r.contains("CLES")),
        "{m}"
    );

    let similar = format!(
        r#"{{"p95_latency": {{"canary": {c}, "baseline": {b}}}}}"#,
        c = series(0.3, 1.001),
        b = series(0.3, 1.0)
    );
    let (code, out, err) = run_rule(&rule, &similar, "json");
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["metrics"][0]["critical_effect"], false);
}

#[test]
fn cles_thresholds_outside_zero_to_one_or_left_at_mean_ratio_defaults_are_refused() {
    let samples = r#"{"p95_latency": {"canary": [1, 2], "baseline": [1, 2]}}"#;
    for (metric, says) in [
        (
            "    effect_size: cles\n    allowed_increase: 1.5\n",
            "CLES probabilities",
        ),
        (
            "    effect_size: cles\n    allowed_increase: 0.4\n",
            "allowed_increase must be >= 0.5",
        ),
        ("    effect_size: cles\n", "needs allowed_increase"),
    ] {
        let (code, out, err) = run_rule(&one_metric_rule(metric), samples, "json");
        assert_eq!(code, 2, "{metric}: {out}{err}");
        assert!(err.contains(says), "{metric}: {err}");
    }
}
