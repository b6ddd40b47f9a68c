//! Rule files as users meet them: the shipped policies in `rules/` load, every mistake is
//! reported as `file:line:col: message` that points at the offending text, and no input,
//! however broken, makes the loader panic.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use canaryd::rules::{Rule, RuleError, load_paths, load_rule_file, parse_rule};
use proptest::prelude::*;

const SHIPPED: [&str; 5] = [
    "budgetbuddy-api",
    "documents-app",
    "hotrodan",
    "money-flow",
    "spend-api",
];

fn rules_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("rules")
}

fn shipped(name: &str) -> Rule {
    let path = rules_dir().join(format!("{name}.yaml"));
    // With the shared metric templates beside it, as `serve --rules rules/` loads it.
    load_rule_file(&path).unwrap_or_else(|errors| panic!("{name} does not load: {errors:?}"))
}

fn canaryd_check(paths: &[&Path]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_canaryd"))
        .arg("check")
        .args(paths)
        .output()
        .expect("canaryd runs")
}

/// The first lines of every rule below: lines 1-4.
const HEAD: &str = r#"name: demo
selector:
  canary: 'service="demo", track="canary"'
  baseline: 'service="demo", track="baseline"'
"#;

/// Lines 5-7 when placed right after `HEAD`.
const STEPS: &str = "steps:
  - { weight: 5, hold: 1h }
  - { weight: 100 }
";

/// Four lines of a valid `metrics:` block.
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

/// The one error of `text`, as `canaryd check` prints it.
fn only_error(text: &str) -> String {
    let errors = errors(text);
    assert_eq!(
        errors.len(),
        1,
        "expected exactly one error, got {errors:#?}"
    );
    errors[0].to_string()
}

/// Asserts `file:line:col:` exactly and that the message says `says`.
fn assert_error(text: &str, line: u32, column: u32, says: &str) {
    let got = only_error(text);
    let at = format!("rule.yaml:{line}:{column}: ");
    assert!(got.starts_with(&at), "expected {at}…, got {got}");
    assert!(got.contains(says), "expected {says:?} in {got}");
}

// ---- the shipped policies ----

#[test]
fn every_shipped_rule_loads_without_error() {
    let (rules, errors) = load_paths(&[rules_dir().display().to_string()]);
    assert!(errors.is_empty(), "shipped rules have errors: {errors:#?}");
    let mut names: Vec<&str> = rules.iter().map(Rule::name).collect();
    names.sort_unstable();
    assert_eq!(names, SHIPPED);
}

#[test]
fn canaryd_check_accepts_the_shipped_rules_folder() {
    let out = canaryd_check(&[&rules_dir()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in SHIPPED {
        assert!(
            stdout.contains(&format!("rule {name:?} OK")),
            "{name} missing from {stdout}"
        );
    }
}

#[test]
fn shipped_rules_step_5_25_50_100_a_day_apart() {
    let day = Duration::from_secs(24 * 3600);
    for name in SHIPPED {
        let rule = shipped(name);
        let steps: Vec<(u32, Option<Duration>)> =
            rule.steps().map(|s| (s.weight, s.hold)).collect();
        assert_eq!(
            steps,
            [
                (5, Some(day)),
                (25, Some(day)),
                (50, Some(day)),
                (100, None)
            ],
            "{name}"
        );
    }
}

#[test]
fn shipped_rules_analyse_every_minute_after_the_runbooks_fifteen_minute_check() {
    for name in SHIPPED {
        let a = &shipped(name).spec.analysis;
        assert_eq!(a.interval, Duration::from_secs(60), "{name}");
        assert_eq!(a.window, Duration::from_secs(600), "{name}");
        assert_eq!(a.step, Duration::from_secs(60), "{name}");
        assert_eq!(a.warmup, Duration::from_secs(15 * 60), "{name}");
        assert_eq!((a.failure_limit, a.nodata_limit), (3, 5), "{name}");
    }
}

#[test]
fn shipped_rules_roll_back_on_the_design_table_thresholds() {
    for name in SHIPPED {
        let rule = shipped(name);
        let metric = |m: &str| {
            rule.metrics()
                .find(|x| x.name == m)
                .unwrap_or_else(|| panic!("{name} has no {m}"))
        };
        let error_rate = metric("error_rate");
        assert_eq!(error_rate.warn_above, Some(0.01), "{name}");
        assert_eq!(error_rate.rollback_above, Some(0.05), "{name}");
        // 2x baseline is an alert (rules/prometheus/canary-alerts.yml), not a rollback, and a
        // single one-minute sample over 5 % must be confirmed (README, "Why the shipped metrics
        // are configured as they are").
        assert_eq!(error_rate.max_ratio, None, "{name}");
        assert_eq!(
            error_rate.hold_for,
            Some(std::time::Duration::from_secs(180)),
            "{name}"
        );
        assert!(
            error_rate.critical,
            "{name}: a confirmed error rate breach must roll back at once"
        );
        let p95_warn = if name == "money-flow" { 0.5 } else { 5.0 };
        assert_eq!(metric("p95_latency").warn_above, Some(p95_warn), "{name}");
        // "P95 > 10 s" is the share of requests slower than 10 s above 5 %: histogram_quantile
        // over the Go buckets never answers more than 10.
        assert_eq!(metric("p95_latency").rollback_above, None, "{name}");
        assert_eq!(
            metric("slower_than_10s").rollback_above,
            Some(0.05),
            "{name}"
        );
        let pool = metric("db_pool_utilization");
        assert_eq!(
            (pool.warn_above, pool.rollback_above),
            (Some(0.90), Some(0.95)),
            "{name}"
        );
        let cpu = metric("cpu_utilization");
        assert_eq!(
            (cpu.warn_above, cpu.rollback_above),
            (Some(0.80), Some(0.90)),
            "{name}"
        );
        // The relative comparisons are sequential, with error control over the whole rollout
        // and a margin for the few percent canary and baseline hosts differ by.
        let sequential: Vec<_> = rule.metrics().filter(|m| m.is_sequential()).collect();
        assert_eq!(sequential.len(), 2, "{name}");
        for m in sequential {
            // A histogram test's margin is a latency scale (0.2: 1.2 x as slow), a count
            // test's a ratio of rates.
            let least = if m.histogram.is_some() { 0.1 } else { 0.25 };
            assert!(
                m.alpha.is_some_and(|a| a <= 0.01) && m.margin.is_some_and(|v| v >= least),
                "{name}/{}",
                m.name
            );
        }
        assert_eq!(
            metric("p95_latency").compare,
            canaryd::rules::schema::Compare::None,
            "{name}: a repeated Mann-Whitney rolls back healthy canaries on slower hosts"
        );
        assert!(
            rule.warnings.is_empty(),
            "{name}: shipped rules must not draw `canaryd check` warnings"
        );
    }
}

#[test]
fn shipped_queries_select_each_group_and_rate_over_one_step() {
    for name in SHIPPED {
        let rule = shipped(name);
        assert_eq!(
            rule.spec.selector.canary,
            format!(r#"service="{name}", track="canary""#)
        );
        assert_eq!(
            rule.spec.selector.baseline,
            format!(r#"service="{name}", track="baseline""#)
        );
        let sequential = rule
            .metrics()
            .find(|m| m.is_sequential())
            .expect("a sequential error test");
        for q in [&sequential.events, &sequential.requests] {
            let q = &q.as_ref().expect("counter query").value;
            assert!(
                q.contains("{{selector}}") && !q.contains('['),
                "{name}: counters, not rates: {q}"
            );
        }
        for m in rule.metrics().filter(|m| !m.is_sequential()) {
            let q = &m.query.as_ref().expect("window query").value;
            assert!(q.contains("{{selector}}"), "{name}/{}: {q}", m.name);
            // Non-overlapping samples (design.md): every range selector is exactly one step.
            let ranges = q.matches('[').count();
            assert_eq!(
                q.matches("[{{step}}]").count(),
                ranges,
                "{name}/{}: {q}",
                m.name
            );
        }
    }
}

#[test]
fn shipped_rules_promote_only_tuesday_to_thursday_midday_eastern() {
    for name in SHIPPED {
        let windows = shipped(name).windows.expect("windows");
        assert_eq!(windows.timezone, chrono_tz::America::New_York, "{name}");
        assert_eq!(
            windows.allow,
            [canaryd::rules::window::Window::parse("Tue-Thu 10:00-14:00").unwrap()],
            "{name}"
        );
    }
}

#[test]
fn shipped_rules_probe_the_runbooks_health_endpoints_on_loopback() {
    let expected = [
        ("budgetbuddy-api", "http://127.0.0.1:8000/api/readyz"),
        ("documents-app", "http://127.0.0.1:3000/api/health/ready"),
        ("hotrodan", "http://127.0.0.1:3000/health"),
        ("money-flow", "http://127.0.0.1:8001/health/ready"),
        ("spend-api", "http://127.0.0.1:3000/health"),
    ];
    for (name, url) in expected {
        let urls: Vec<String> = shipped(name)
            .spec
            .health
            .iter()
            .map(|h| h.value.url.clone())
            .collect();
        assert_eq!(urls, [url], "{name}");
    }
}

#[test]
fn hotrodan_rolls_back_with_its_runbooks_github_workflow() {
    let hooks = shipped("hotrodan").spec.hooks;
    let rollback = hooks.rollback.expect("rollback hook").into_inner().value;
    assert_eq!(
        rollback.command.as_deref(),
        Some(&["gh", "workflow", "run", "rollback-production"].map(String::from)[..])
    );
    let promote = hooks.promote.expect("promote hook").into_inner().value;
    assert!(
        promote
            .command
            .expect("promote is a command")
            .contains(&"{{version}}".to_string())
    );
}

// ---- every error kind, located ----

#[test]
fn unknown_top_level_key_is_named_where_it_is() {
    assert_error(
        &format!("{HEAD}{STEPS}{METRICS}colour: red\n"),
        12,
        1,
        "unknown field `colour`, expected one of name, selector",
    );
}

#[test]
fn unknown_key_in_a_step_is_named_where_it_is() {
    let text =
        format!("{HEAD}steps:\n  - {{ weight: 5, hodl: 1h }}\n  - {{ weight: 100 }}\n{METRICS}");
    assert_error(
        &text,
        6,
        18,
        "unknown field `hodl`, expected one of weight, hold, approval",
    );
}

#[test]
fn unknown_key_in_a_metric_is_named_where_it_is() {
    let text = format!("{HEAD}{STEPS}metrics:\n  - name: e\n    query: x\n    rollback_abve: 1\n");
    assert_error(
        &text,
        11,
        5,
        "unknown field `rollback_abve`, expected one of name, query",
    );
}

#[test]
fn unknown_key_in_analysis_is_named_where_it_is() {
    let text = format!("{HEAD}{STEPS}analysis:\n  interval: 1m\n  windw: 10m\n{METRICS}");
    assert_error(
        &text,
        10,
        3,
        "unknown field `windw`, expected one of interval, window",
    );
}

#[test]
fn bad_duration_shows_the_text_and_how_to_write_one() {
    let text = format!("{HEAD}{STEPS}analysis:\n  interval: 1 minute-ish\n{METRICS}");
    assert_error(&text, 9, 13, r#"invalid duration "1 minute-ish""#);
    assert!(only_error(&text).contains("write e.g. 30s, 5m, 24h"));
}

#[test]
fn bad_hold_duration_points_at_the_hold() {
    let text =
        format!("{HEAD}steps:\n  - {{ weight: 5, hold: soon }}\n  - {{ weight: 100 }}\n{METRICS}");
    assert_error(&text, 6, 24, r#"invalid duration "soon""#);
}

#[test]
fn unknown_template_variable_in_a_query_names_it_and_the_known_ones() {
    let text = format!(
        "{HEAD}{STEPS}metrics:\n  - name: e\n    query: rate(x{{ {{{{selecter}}}} }}[1m])\n"
    );
    assert_error(&text, 10, 12, "unknown template variable `selecter`");
    assert!(
        only_error(&text).contains("selector"),
        "the known ones are listed"
    );
}

#[test]
fn unknown_template_variable_in_a_block_query_points_at_the_block() {
    let text = format!(
        "{HEAD}{STEPS}metrics:\n  - name: e\n    query: |\n      rate(x{{ {{{{rollout_id}}}} }}[1m])\n"
    );
    assert_error(
        &text,
        11,
        7,
        "metric e: query unknown template variable `rollout_id`",
    );
}

#[test]
fn steps_that_do_not_increase_are_pointed_at() {
    let text = format!(
        "{HEAD}steps:\n  - {{ weight: 50, hold: 1h }}\n  - {{ weight: 25, hold: 1h }}\n  - {{ weight: 100 }}\n{METRICS}"
    );
    assert_error(
        &text,
        7,
        5,
        "step weight 25 must be greater than the previous step's 50",
    );
}

#[test]
fn steps_must_end_at_one_hundred() {
    let text =
        format!("{HEAD}steps:\n  - {{ weight: 5, hold: 1h }}\n  - {{ weight: 50 }}\n{METRICS}");
    assert_error(&text, 7, 5, "the last step must have weight 100, not 50");
}

#[test]
fn step_weight_zero_is_refused() {
    let text =
        format!("{HEAD}steps:\n  - {{ weight: 0, hold: 1h }}\n  - {{ weight: 100 }}\n{METRICS}");
    assert_error(&text, 6, 5, "step weight 0 must be between 1 and 100");
}

#[test]
fn step_weight_above_one_hundred_is_refused() {
    let text =
        format!("{HEAD}steps:\n  - {{ weight: 5, hold: 1h }}\n  - {{ weight: 101 }}\n{METRICS}");
    let errors = errors(&text);
    assert_eq!(
        errors[0].to_string(),
        "rule.yaml:7:5: step weight 101 must be between 1 and 100"
    );
}

#[test]
fn warn_above_beyond_rollback_above_is_a_warning_that_never_fires() {
    let text = format!(
        "{HEAD}{STEPS}metrics:\n  - name: e\n    query: x\n    warn_above: 0.2\n    rollback_above: 0.1\n"
    );
    assert_error(
        &text,
        9,
        5,
        "metric e: warn_above (0.2) is beyond rollback_above (0.1); the warning would never fire",
    );
}

#[test]
fn warn_below_beyond_rollback_below_is_a_warning_that_never_fires() {
    let text = format!(
        "{HEAD}{STEPS}metrics:\n  - name: e\n    query: x\n    direction: decrease\n    warn_below: 0.1\n    rollback_below: 0.2\n"
    );
    assert_error(
        &text,
        9,
        5,
        "metric e: warn_below (0.1) is beyond rollback_below (0.2); the warning would never fire",
    );
}

#[test]
fn hook_with_both_url_and_command_is_refused() {
    let text = format!(
        "{HEAD}{STEPS}{METRICS}hooks:\n  rollback:\n    url: http://127.0.0.1:8080/rollback\n    command: [./rollback.sh]\n"
    );
    assert_error(&text, 14, 5, "hook has both `url` and `command`");
}

#[test]
fn bad_window_text_points_at_that_window() {
    let text = format!(
        "{HEAD}{STEPS}{METRICS}windows:\n  timezone: America/New_York\n  allow: [\"Tue-Thu 10:00-14:00\", \"Tus-Thu 10:00-14:00\"]\n"
    );
    assert_error(
        &text,
        14,
        34,
        r#"day "Tus" must be one of Mon Tue Wed Thu Fri Sat Sun"#,
    );
}

#[test]
fn window_that_ends_before_it_starts_points_at_that_window() {
    let text = format!(
        "{HEAD}{STEPS}{METRICS}windows:\n  timezone: America/New_York\n  allow:\n    - Tue-Thu 10:00-14:00\n    - Tue-Thu 14:00-10:00\n"
    );
    assert_error(
        &text,
        16,
        7,
        r#"window "Tue-Thu 14:00-10:00" ends before it starts"#,
    );
}

#[test]
fn unknown_time_zone_suggests_an_iana_name() {
    let text = format!(
        "{HEAD}{STEPS}{METRICS}windows:\n  timezone: America/Gotham\n  allow: [\"Tue-Thu 10:00-14:00\"]\n"
    );
    assert_error(
        &text,
        13,
        13,
        r#"unknown time zone "America/Gotham"; use an IANA name like America/New_York"#,
    );
}

#[test]
fn duplicate_metric_names_point_at_the_second_one() {
    let text = format!("{HEAD}{STEPS}{METRICS}  - name: error_rate\n    query: y\n");
    assert_error(&text, 12, 5, r#"metric "error_rate" is defined twice"#);
}

#[test]
fn empty_steps_show_an_example() {
    let text = format!("{HEAD}steps: []\n{METRICS}");
    assert_error(
        &text,
        5,
        8,
        "steps must not be empty; e.g. [{weight: 5, hold: 1h}, {weight: 100}]",
    );
}

#[test]
fn a_word_for_a_weight_says_a_whole_number_is_expected() {
    let text =
        format!("{HEAD}steps:\n  - {{ weight: five, hold: 1h }}\n  - {{ weight: 100 }}\n{METRICS}");
    assert_eq!(
        only_error(&text),
        "rule.yaml:6:15: invalid u32: expected a whole number, e.g. 25"
    );
}

#[test]
fn a_word_for_a_threshold_says_a_number_is_expected() {
    let text = format!("{HEAD}{STEPS}metrics:\n  - name: e\n    query: x\n    warn_above: lots\n");
    assert_error(&text, 11, 17, "expected a number, e.g. 0.05");
}

#[test]
fn analysis_errors_point_at_the_analysis_block_not_the_steps() {
    let text =
        format!("{HEAD}{STEPS}analysis:\n  interval: 1m\n  window: 10s\n  step: 15s\n{METRICS}");
    assert_error(
        &text,
        9,
        3,
        "analysis: window (10s) must be at least one step (15s)",
    );
}

#[test]
fn yaml_errors_carry_the_location_once() {
    let got = only_error(&format!("{HEAD}{STEPS}{METRICS}colour: red\n"));
    assert!(!got.contains(" at line "), "location repeated in {got}");
}

// ---- reporting everything at once ----

#[test]
fn several_mistakes_in_one_file_are_all_reported() {
    let text = format!(
        "{HEAD}steps:\n  - {{ weight: 50, hold: 1h }}\n  - {{ weight: 25 }}\n{METRICS}windows:\n  timezone: Mars/Olympus\n  allow: [\"Tue-Thu 10:00-14:00\"]\n"
    );
    let got: Vec<String> = errors(&text).iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        [
            "rule.yaml:7:5: step weight 25 must be greater than the previous step's 50",
            "rule.yaml:7:5: the last step must have weight 100, not 25",
            r#"rule.yaml:13:13: unknown time zone "Mars/Olympus"; use an IANA name like America/New_York"#,
        ]
    );
}

#[test]
fn canaryd_check_reports_the_bad_file_and_passes_the_good_one() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("good.yaml"),
        format!("{HEAD}{STEPS}{METRICS}"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("bad.yaml"),
        format!(
            "{}{STEPS}{METRICS}colour: red\n",
            HEAD.replace("demo", "other")
        ),
    )
    .unwrap();
    let out = canaryd_check(&[dir.path()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    let bad = dir.path().join("bad.yaml");
    assert!(
        stderr.contains(&format!("{}:12:1: unknown field `colour`", bad.display())),
        "stderr: {stderr}"
    );
    let good = dir.path().join("good.yaml");
    assert!(
        stdout.contains(&format!("{}: rule \"demo\" OK", good.display())),
        "stdout: {stdout}"
    );
    assert!(!stdout.contains("bad.yaml"), "stdout: {stdout}");
}

// ---- defaults ----

#[test]
fn minimal_rule_is_valid_and_gets_the_documented_defaults() {
    let rule = parse_rule(Path::new("rule.yaml"), &format!("{HEAD}{STEPS}{METRICS}"))
        .expect("name, selector, steps and metrics are enough");
    let a = &rule.spec.analysis;
    assert_eq!(a.interval, Duration::from_secs(60));
    assert_eq!(a.window, Duration::from_secs(600));
    assert_eq!(a.step, Duration::from_secs(15));
    assert_eq!(a.warmup, Duration::from_secs(300));
    assert_eq!(a.failure_limit, 3);
    assert_eq!(a.nodata_limit, 5);
    assert_eq!(a.score.pass, 95.0);
    assert_eq!(a.score.marginal, 75.0);
    assert!(
        rule.windows.is_none(),
        "no windows: promotion is never held back"
    );
    assert!(rule.spec.health.is_empty());
}

// ---- no input panics the loader ----

fn assert_located(result: Result<Rule, Vec<RuleError>>) -> Result<(), TestCaseError> {
    if let Err(errors) = result {
        prop_assert!(!errors.is_empty(), "a rejected rule has at least one error");
        for e in errors {
            prop_assert!(e.line >= 1 && e.column >= 1, "unlocated error: {e}");
            prop_assert_eq!(e.file.as_path(), Path::new("fuzz.yaml"));
        }
    }
    Ok(())
}

/// One random edit of a byte: replace, insert or delete at a position (taken modulo length).
#[derive(Debug, Clone)]
enum Edit {
    Replace(usize, u8),
    Insert(usize, u8),
    Delete(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    // Bytes YAML cares about are over-represented, so edits hit structure as well as values.
    let byte = prop_oneof![
        any::<u8>(),
        prop::sample::select(b" \n\t:-{}[]#'\"|>&*!%@`,?0123456789".to_vec()),
    ];
    prop_oneof![
        (any::<usize>(), byte.clone()).prop_map(|(i, b)| Edit::Replace(i, b)),
        (any::<usize>(), byte).prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<usize>().prop_map(Edit::Delete),
    ]
}

fn apply(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        match *e {
            Edit::Replace(i, b) if !bytes.is_empty() => {
                let n = bytes.len();
                bytes[i % n] = b;
            }
            Edit::Insert(i, b) => {
                let n = bytes.len() + 1;
                bytes.insert(i % n, b);
            }
            Edit::Delete(i) if !bytes.is_empty() => {
                let n = bytes.len();
                bytes.remove(i % n);
            }
            _ => {}
        }
    }
    bytes
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics_and_errors_are_located(text in any::<String>()) {
        assert_located(parse_rule(Path::new("fuzz.yaml"), &text))?;
    }

    #[test]
    fn yaml_shaped_text_never_panics_and_errors_are_located(
        text in "[a-z_:{}\\[\\] \n'\"#&*!|>,0-9.-]{0,200}"
    ) {
        assert_located(parse_rule(Path::new("fuzz.yaml"), &text))?;
    }

    #[test]
    fn edited_shipped_rules_never_panic_and_errors_are_located(
        file in prop::sample::select(SHIPPED.to_vec()),
        edits in prop::collection::vec(edit(), 1..8),
    ) {
        let original = std::fs::read(rules_dir().join(format!("{file}.yaml"))).unwrap();
        let bytes = apply(original, &edits);
        let text = String::from_utf8_lossy(&bytes);
        assert_located(parse_rule(Path::new("fuzz.yaml"), &text))?;
    }
}
