//! Metric templates (issue 14, item 1): named metrics defined once in `kind: metric_templates`
//! files and used by name from rules. Resolution and overrides, every error located in the file
//! it is about (both files when both matter), hostile names, bounds, the CLI, and a running
//! rollout keeping its snapshot across a template change on a real daemon and Prometheus
//! (`metric_templates_reload` below).

use crate::common;
#[path = "metric_templates/reload.rs"]
mod reload;

use std::path::{Path, PathBuf};
use std::process::Command;

use canaryd::rules::catalog::{MAX_NAME_CHARS, MAX_TEMPLATES_PER_FILE};
use canaryd::rules::{Group, QueryContext, Rule, RuleError, load_paths, parse_rule};

/// Lines 1-13: a template file with one required and one defaulted variable.
const TEMPLATES: &str = r#"kind: metric_templates
vars:
  job: null
  codes: "5.."
templates:
  - name: http_error_rate
    query: sum(rate(http_requests_total{ {{selector}}, job="{{job}}", code=~"{{codes}}" }[{{step}}]))
    direction: increase
    warn_above: 0.01
    rollback_above: 0.05
    for: 3m
    critical: true
  - name: cpu
    query: avg(rate(process_cpu_seconds_total{ {{selector}} }[{{step}}]))
    rollback_above: 0.9
"#;

/// A rule whose metrics (from line 6) are `metrics`, one list item per line.
fn rule(name: &str, metrics: &str) -> String {
    format!(
        "name: {name}\n\
         selector: {{ canary: 'track=\"canary\"', baseline: 'track=\"baseline\"' }}\n\
         steps: [{{ weight: 5, hold: 1h }}, {{ weight: 100 }}]\n\
         vars: {{ job: api }}\n\
         metrics:\n{metrics}"
    )
}

/// Writes `files` into a fresh folder; returns it with the paths in the order given.
fn folder(files: &[(&str, &str)]) -> (tempfile::TempDir, Vec<PathBuf>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let paths = files
        .iter()
        .map(|(name, text)| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).expect("write");
            p
        })
        .collect();
    (dir, paths)
}

fn load(paths: &[PathBuf]) -> (Vec<Rule>, Vec<RuleError>) {
    load_paths(
        &paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>(),
    )
}

/// The errors of loading `files`, with the folder left out of every path.
fn errors_of(files: &[(&str, &str)]) -> Vec<String> {
    let (dir, paths) = folder(files);
    let (_, errors) = load(&paths);
    let prefix = format!("{}/", dir.path().display());
    errors
        .iter()
        .map(|e| e.to_string().replace(&prefix, ""))
        .collect()
}

/// Asserts one error starts with `file:line:col:` and says every one of `says`.
fn assert_one_error(errors: &[String], at: &str, says: &[&str]) {
    assert_eq!(errors.len(), 1, "expected one error: {errors:#?}");
    assert!(
        errors[0].starts_with(&format!("{at}: ")),
        "expected {at}: …, got {}",
        errors[0]
    );
    for s in says {
        assert!(errors[0].contains(s), "expected {s:?} in {}", errors[0]);
    }
}

#[test]
fn a_rule_metric_is_the_template_with_the_rules_keys_over_it_in_either_file_order() {
    let uses = "  - { name: errors, template: http_error_rate, rollback_above: 0.02, critical: false }\n  - { name: cpu, template: cpu }\n";
    let text = rule("api", uses).replace("job: api", "job: api, codes: '4..|5..'");
    for order in [[0, 1], [1, 0]] {
        let files = [("t.yaml", TEMPLATES), ("api.yaml", text.as_str())];
        let (_dir, paths) = folder(&[files[order[0]], files[order[1]]]);
        let (rules, errors) = load(&paths);
        assert!(errors.is_empty(), "{errors:#?}");
        let r = &rules[0];
        let m = r.metrics().find(|m| m.name == "errors").expect("errors");
        // Set by the rule: the rule's; `critical: false` is a key set, not a default.
        assert_eq!((m.rollback_above, m.critical), (Some(0.02), false));
        // Left out: the template's.
        assert_eq!(m.warn_above, Some(0.01));
        assert_eq!(m.hold_for, Some(std::time::Duration::from_secs(180)));
        assert_eq!(m.direction, canaryd::verdict::Direction::Increase);
        assert_eq!(
            m.template.as_ref().map(|t| t.value.as_str()),
            Some("http_error_rate")
        );
        // The rule's vars over the template file's defaults, the required one from the rule.
        let q = r
            .render_query(m, Group::Canary, &QueryContext::default())
            .expect("renders");
        assert!(q.contains(r#"job="api", code=~"4..|5..""#), "{q}");
        let cpu = r.metrics().find(|m| m.name == "cpu").expect("cpu");
        assert_eq!(cpu.rollback_above, Some(0.9));
    }
}

#[test]
fn a_rules_snapshot_rebuilds_it_alone_whatever_the_template_file_says_later() {
    let text = rule("api", "  - { name: errors, template: http_error_rate }\n");
    let (dir, paths) = folder(&[("t.yaml", TEMPLATES), ("api.yaml", &text)]);
    let (rules, errors) = load(&paths);
    assert!(errors.is_empty(), "{errors:#?}");
    std::fs::write(
        &paths[0],
        TEMPLATES.replace("rollback_above: 0.05", "rollback_above: 0.5"),
    )
    .expect("edit");
    // What a recovering daemon does with the stored text: no files involved.
    let again = parse_rule(Path::new("api.yaml"), &rules[0].source().expect("writes"))
        .expect("snapshot parses");
    let m = again.metrics().next().expect("metric");
    assert_eq!(m.rollback_above, Some(0.05));
    assert_eq!(
        again.source().expect("kept"),
        rules[0].source().expect("writes"),
        "a snapshot of a snapshot is itself"
    );
    // The files now give the new threshold.
    let (now, _) = load(&paths);
    assert_eq!(
        now[0].metrics().next().and_then(|m| m.rollback_above),
        Some(0.5)
    );
    // A rule without templates keeps its own text, as before templates existed.
    let plain = rule(
        "plain",
        "  - { name: up, query: 'sum(up{ {{selector}} })', rollback_below: 1 }\n",
    );
    std::fs::write(dir.path().join("plain.yaml"), &plain).expect("plain");
    let (rules, _) = load_paths(&[dir.path().display().to_string()]);
    let p = rules.iter().find(|r| r.name() == "plain").expect("plain");
    assert_eq!(p.source().expect("kept"), plain);
}

#[test]
fn an_unknown_template_is_an_error_at_its_use() {
    let text = rule("api", "  - { name: errors, template: http_eror_rate }\n");
    let errors = errors_of(&[("t.yaml", TEMPLATES), ("api.yaml", &text)]);
    assert_one_error(
        &errors,
        "api.yaml:6:31",
        &["unknown template \"http_eror_rate\"", "http_error_rate"],
    );
}

#[test]
fn a_template_defined_twice_across_files_names_both_places() {
    let other = "kind: metric_templates\ntemplates:\n  - { name: cpu, query: 'up{ {{selector}} }', rollback_below: 1 }\n";
    let errors = errors_of(&[("a.yaml", TEMPLATES), ("b.yaml", other)]);
    assert_one_error(
        &errors,
        "b.yaml:3:5",
        &["template name \"cpu\" is already defined at", "a.yaml:13:5"],
    );
}

#[test]
fn a_templates_own_error_is_in_its_file_and_its_use_points_there() {
    let broken = TEMPLATES.replace(
        "[{{step}}]))\n    rollback_above: 0.9",
        "[{{stepp}}]))\n    rollback_above: 0.9",
    );
    let text = rule("api", "  - { name: cpu, template: cpu }\n");
    let errors = errors_of(&[("t.yaml", &broken), ("api.yaml", &text)]);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(
        errors[0]
            .starts_with("t.yaml:14:12: template cpu: query unknown template variable `stepp`"),
        "{}",
        errors[0]
    );
    assert_eq!(
        errors[1],
        "api.yaml:6:28: metric cpu: template \"cpu\" has errors (template cpu at t.yaml:13:5)"
    );
}

#[test]
fn an_override_that_breaks_the_metric_is_an_error_at_the_use_naming_the_template() {
    let text = rule(
        "api",
        "  - { name: errors, template: http_error_rate, warn_above: 0.1 }\n",
    );
    let errors = errors_of(&[("t.yaml", TEMPLATES), ("api.yaml", &text)]);
    assert_one_error(
        &errors,
        "api.yaml:6:5",
        &[
            "warn_above (0.1) is beyond rollback_above (0.05)",
            "(template http_error_rate at ",
            "t.yaml:6:5)",
        ],
    );
    // A `for:` longer than this rule's window: only the use knows the window.
    let text = rule("api", "  - { name: errors, template: http_error_rate }\n")
        .replace("vars:", "analysis: { window: 2m }\nvars:");
    let errors = errors_of(&[("t.yaml", TEMPLATES), ("api.yaml", &text)]);
    assert_one_error(
        &errors,
        "api.yaml:7:5",
        &[
            "for (3m) is longer than the analysis window (2m)",
            "t.yaml:6:5)",
        ],
    );
}

#[test]
fn a_use_cannot_redefine_the_query_and_a_required_var_must_be_set() {
    let text = rule("api", "  - { name: errors, template: cpu, query: 'up' }\n");
    let errors = errors_of(&[("t.yaml", TEMPLATES), ("api.yaml", &text)]);
    assert_one_error(
        &errors,
        "api.yaml:6:5",
        &["`query` cannot be set over a template", "t.yaml:13:5"],
    );
    let text =
        rule("api", "  - { name: errors, template: cpu }\n").replace("vars: { job: api }\n", "");
    let errors = errors_of(&[("t.yaml", TEMPLATES), ("api.yaml", &text)]);
    assert_one_error(
        &errors,
        "api.yaml:5:31",
        &["vars.job must be set", "t.yaml:3:8"],
    );
}

#[test]
fn two_template_files_disagreeing_on_a_default_must_be_settled_by_the_rule() {
    let other = "kind: metric_templates\nvars: { codes: '5..|429' }\ntemplates:\n  - { name: up, query: 'up{ {{selector}} }', rollback_below: 1 }\n";
    let uses = "  - { name: cpu, template: cpu }\n  - { name: up, template: up }\n";
    let errors = errors_of(&[
        ("a.yaml", TEMPLATES),
        ("b.yaml", other),
        ("api.yaml", &rule("api", uses)),
    ]);
    assert_one_error(
        &errors,
        "api.yaml:7:27",
        &[
            "vars.codes defaults to \"5..\" in",
            "and to \"5..|429\" at",
            "b.yaml:2:16",
        ],
    );
    let settled = rule("api", uses).replace("job: api", "job: api, codes: '5..'");
    let (_dir, paths) = folder(&[
        ("a.yaml", TEMPLATES),
        ("b.yaml", other),
        ("api.yaml", &settled),
    ]);
    assert!(load(&paths).1.is_empty());
}

#[test]
fn hostile_template_names_are_refused_where_they_are_defined() {
    let long = "n".repeat(MAX_NAME_CHARS + 1);
    for name in [
        "a\"b",
        "x{y=\"1\"}",
        "../../etc/passwd",
        "a|b",
        ".*",
        "a b",
        "a\\nb",
        "rate(x[5m])",
        "",
        &long,
    ] {
        let file = format!(
            "kind: metric_templates\ntemplates:\n  - name: {}\n    query: 'up{{ {{{{selector}}}} }}'\n    rollback_below: 1\n",
            serde_json::to_string(name).expect("json")
        );
        let errors = errors_of(&[("t.yaml", &file)]);
        assert_one_error(
            &errors,
            "t.yaml:3:5",
            &["must be 1 to 100 letters, digits, '-' or '_'"],
        );
    }
    // A hostile name at a use is just an unknown name, quoted.
    let text = rule("api", "  - { name: e, template: 'x\"}) or vector(1) #' }\n");
    let errors = errors_of(&[("t.yaml", TEMPLATES), ("api.yaml", &text)]);
    assert_one_error(
        &errors,
        "api.yaml:6:26",
        &[r#"unknown template "x\"}) or vector(1) #""#],
    );
}

#[test]
fn template_files_are_bounded_like_rule_files() {
    let one = "  - { name: tNAME, query: 'up{ {{selector}} }', rollback_below: 1 }\n";
    let many: String = (0..=MAX_TEMPLATES_PER_FILE)
        .map(|i| one.replace("NAME", &i.to_string()))
        .collect();
    let errors = errors_of(&[(
        "t.yaml",
        &format!("kind: metric_templates\ntemplates:\n{many}"),
    )]);
    assert_one_error(
        &errors,
        "t.yaml:3:3",
        &["1001 templates; a file may define at most 1000"],
    );
    let huge = format!(
        "kind: metric_templates\n# {}\ntemplates: []\n",
        "x".repeat(1 << 20)
    );
    let errors = errors_of(&[("t.yaml", &huge)]);
    assert_one_error(
        &errors,
        "t.yaml:1:1",
        &["larger than the 1048576 bytes allowed"],
    );
    let errors = errors_of(&[("t.yaml", "kind: metric_template\ntemplates: []\n")]);
    assert_one_error(&errors, "t.yaml:1:7", &["unknown kind \"metric_template\""]);
}

fn canaryd(args: &[&std::ffi::OsStr]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_canaryd"))
        .args(args)
        .output()
        .expect("runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_resolves_templates_and_judge_uses_the_templates_beside_the_rule() {
    let text = rule(
        "api",
        "  - { name: errors, template: http_error_rate, rollback_above: 0.5, for: 0s }\n",
    );
    let (dir, paths) = folder(&[("api.yaml", &text), ("t.yaml", TEMPLATES)]);
    let (code, out, err) = canaryd(&["check".as_ref(), dir.path().as_os_str()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("rule \"api\" OK") && out.contains("t.yaml: metric templates OK"),
        "{out}"
    );
    let (code, _, err) = canaryd(&["check".as_ref(), paths[0].as_os_str()]);
    assert_eq!(code, 1, "the rule alone cannot resolve: {err}");
    assert!(
        err.contains("api.yaml:6:31: metric errors: unknown template"),
        "{err}"
    );
    // 0.1 is over the template's 0.05 and under the rule's 0.5: passing proves the override.
    let samples = dir.path().join("samples.json");
    std::fs::write(
        &samples,
        r#"{"errors": {"canary": [0.1, 0.1, 0.1], "baseline": [0.1, 0.1, 0.1]}}"#,
    )
    .expect("samples");
    let (code, out, err) = canaryd(&[
        "judge".as_ref(),
        "--rule".as_ref(),
        paths[0].as_os_str(),
        "--samples".as_ref(),
        samples.as_os_str(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    std::fs::write(&paths[0], text.replace(", rollback_above: 0.5", "")).expect("edit");
    let (code, out, err) = canaryd(&[
        "judge".as_ref(),
        "--rule".as_ref(),
        paths[0].as_os_str(),
        "--samples".as_ref(),
        samples.as_os_str(),
    ]);
    assert_eq!(code, 1, "the template's own line fails it: {out}{err}");
}

#[test]
fn simulate_reads_the_shipped_rules_with_their_shared_templates() {
    // Default: every rules/*.yaml that is a rule; the template file is read by each of them.
    let out = Command::new(env!("CARGO_BIN_EXE_canaryd"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "simulate",
            "--runs",
            "1",
            "--only",
            "errors x20",
            "--traffic",
            "high",
            "--hold",
            "1h",
        ])
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in [
        "budgetbuddy-api",
        "documents-app",
        "hotrodan",
        "money-flow",
        "spend-api",
    ] {
        assert!(
            stdout.contains(&format!("| {name} ")),
            "{name} missing:\n{stdout}"
        );
    }
    assert!(
        !stdout.contains("signals"),
        "the template file is not a rule:\n{stdout}"
    );
}
