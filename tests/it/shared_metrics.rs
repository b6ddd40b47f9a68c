//! Rules naming one metric template hold one copy of its metric (issue 14: one rule file per
//! service made every rule carry a full copy, 3.6 KB a rule). Sharing must never change what a
//! rule judges: an override keeps its own metric, a reload its own copies, and `check`'s
//! warnings still point into the rule file where the metric is used.

use canaryd::rules::shared::Shared;
use canaryd::rules::{MetricSpec, Rule, RuleError, load_paths};

const TEMPLATES: &str = "kind: metric_templates
vars:
  rate: 1m
templates:
  - name: lat
    query: sum(rate(h{ {{selector}} }[{{rate}}]))
    compare: mann_whitney
    rollback_above: 2
";

/// A rule whose metrics start on line 5 (after `blank` blank lines more), with a rollback hook
/// whose URL has `password` in it.
fn rule_with(name: &str, blank: usize, metrics: &str, password: &str) -> String {
    format!(
        "name: {name}\n\
         selector: {{ canary: 'svc=\"{name}\", track=\"canary\"', baseline: 'svc=\"{name}\", track=\"baseline\"' }}\n\
         steps: [{{ weight: 5, hold: 1h }}, {{ weight: 100 }}]\n\
         {}metrics:\n{metrics}\
         hooks: {{ rollback: {{ url: 'http://deploy:{password}@deploy.example/rollback' }} }}\n",
        "\n".repeat(blank)
    )
}

fn rule(name: &str, blank: usize, metrics: &str) -> String {
    rule_with(name, blank, metrics, "s1")
}

fn load(files: &[(&str, String)]) -> (tempfile::TempDir, Vec<Rule>, Vec<RuleError>) {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).expect("write");
    }
    let (mut rules, errors) = load_paths(&[dir.path().display().to_string()]);
    rules.sort_by(|a, b| a.name().cmp(b.name()));
    (dir, rules, errors)
}

fn metric(rule: &Rule, i: usize) -> &Shared<MetricSpec> {
    &rule.spec.metrics.value[i].value
}

#[test]
fn rules_naming_a_template_share_its_metric_and_an_override_keeps_its_own() {
    let uses = "  - { name: lat, template: lat }\n";
    let (_dir, rules, errors) = load(&[
        ("t.yaml", TEMPLATES.to_string()),
        ("a.yaml", rule("a", 0, uses)),
        // Written further down its file: the places differ, the metric does not.
        ("b.yaml", rule("b", 3, uses)),
        (
            "c.yaml",
            rule(
                "c",
                0,
                "  - { name: lat, template: lat, rollback_above: 3 }\n",
            ),
        ),
        (
            "d.yaml",
            rule_with(
                "d",
                1,
                "  - { name: lat, template: lat, rollback_above: 3 }\n",
                "s2",
            ),
        ),
    ]);
    assert!(errors.is_empty(), "{errors:?}");
    let [a, b, c, d] = &rules[..] else {
        panic!("four rules: {rules:?}")
    };
    assert!(Shared::ptr_eq(metric(a, 0), metric(b, 0)), "one copy");
    assert!(
        Shared::ptr_eq(&a.spec.metrics.value, &b.spec.metrics.value),
        "one list of metrics"
    );
    assert!(
        Shared::ptr_eq(&a.spec.steps.value, &c.spec.steps.value),
        "one plan of steps"
    );
    let rollback = |r: &Rule| r.spec.hooks.rollback.clone().expect("a rollback hook");
    assert!(Shared::ptr_eq(&rollback(a), &rollback(c)), "one hook");
    // d's URL differs from c's only in the password, which a hook's JSON redacts.
    assert!(!Shared::ptr_eq(&rollback(c), &rollback(d)));
    assert!(
        rollback(d)
            .value
            .url
            .as_deref()
            .is_some_and(|u| u.contains(":s2@"))
    );
    assert!(
        !Shared::ptr_eq(metric(a, 0), metric(c, 0)),
        "an override is a different metric"
    );
    assert!(
        Shared::ptr_eq(metric(c, 0), metric(d, 0)),
        "equal overrides share too"
    );
    assert_eq!(a.metrics().next().and_then(|m| m.rollback_above), Some(2.0));
    assert_eq!(c.metrics().next().and_then(|m| m.rollback_above), Some(3.0));
    // Each rule still renders its own selector into the shared query.
    let ctx = canaryd::rules::QueryContext::default();
    let q = |r: &Rule| {
        r.render_query(
            r.metrics().next().expect("a metric"),
            canaryd::rules::Group::Canary,
            &ctx,
        )
        .expect("renders")
    };
    assert!(q(a).contains(r#"svc="a""#) && q(b).contains(r#"svc="b""#));
    // An edit (as `demo` trims a rule's metrics) copies only the edited rule's.
    let mut edited = a.clone();
    edited.spec.metrics.value[0].value.rollback_above = Some(9.0);
    edited.spec.steps.value[0].value.weight = 7;
    assert_eq!(b.metrics().next().and_then(|m| m.rollback_above), Some(2.0));
    assert_eq!(a.steps().next().map(|s| s.weight), Some(5));
    assert_eq!(edited.steps().next().map(|s| s.weight), Some(7));
}

#[test]
fn a_reload_makes_its_own_copies_so_a_template_change_never_reaches_running_rules() {
    let uses = || rule("a", 0, "  - { name: lat, template: lat }\n");
    let (_d1, first, e1) = load(&[("t.yaml", TEMPLATES.into()), ("a.yaml", uses())]);
    let (_d2, again, e2) = load(&[("t.yaml", TEMPLATES.into()), ("a.yaml", uses())]);
    let changed = TEMPLATES.replace("rollback_above: 2", "rollback_above: 5");
    let (_d3, later, e3) = load(&[("t.yaml", changed), ("a.yaml", uses())]);
    assert!(e1.is_empty() && e2.is_empty() && e3.is_empty());
    assert!(!Shared::ptr_eq(metric(&first[0], 0), metric(&again[0], 0)));
    assert_eq!(
        later[0].metrics().next().and_then(|m| m.rollback_above),
        Some(5.0)
    );
    assert_eq!(
        first[0].metrics().next().and_then(|m| m.rollback_above),
        Some(2.0)
    );
}

/// The lines `canaryd check` printed before metrics were shared: at the `template:` value for
/// the template's query, at the rule's own query, and at the metric entry.
#[test]
fn check_warnings_still_point_into_the_rule_file() {
    let metrics = "  - { name: lat, template: lat }
  - name: own
    query: sum(rate(h{ {{selector}} }[5m]))
    compare: mann_whitney
    allowed_increase: 1.0
  - name: lat2
    template: lat
    allowed_increase: 1.0
";
    let (dir, rules, errors) = load(&[
        ("t.yaml", TEMPLATES.replace("{{rate}}", "5m")),
        ("a.yaml", rule("a", 0, metrics)),
    ]);
    assert!(errors.is_empty(), "{errors:?}");
    let prefix = format!("{}/", dir.path().display());
    let got: Vec<String> = rules[0]
        .warnings
        .iter()
        .map(|w| {
            let w = w.to_string().replace(&prefix, "");
            w.split(": metric").next().unwrap_or_default().to_string()
        })
        .collect();
    assert_eq!(
        got,
        [
            "a.yaml:5:28",
            "a.yaml:7:12",
            "a.yaml:6:5",
            "a.yaml:11:15",
            "a.yaml:10:5"
        ]
    );
}

/// Analysis timing and alert matchers written alike are one copy too; a rule timed otherwise
/// keeps its own, and an edit of one rule's timing reaches no other rule.
#[test]
fn rules_timed_alike_share_their_analysis_and_alerts() {
    let uses = "  - { name: lat, template: lat }\n";
    let timed = |name: &str, interval: &str| {
        format!(
            "{}analysis: {{ interval: {interval} }}\n",
            rule(name, 0, uses)
        )
    };
    let (_dir, rules, errors) = load(&[
        ("t.yaml", TEMPLATES.to_string()),
        ("a.yaml", timed("a", "30s")),
        ("b.yaml", timed("b", "30s")),
        ("c.yaml", timed("c", "2m")),
    ]);
    assert!(errors.is_empty(), "{errors:?}");
    let [a, b, c] = &rules[..] else {
        panic!("three rules: {rules:?}")
    };
    assert!(Shared::ptr_eq(&a.spec.analysis, &b.spec.analysis));
    assert!(!Shared::ptr_eq(&a.spec.analysis, &c.spec.analysis));
    assert_eq!(a.spec.analysis.interval.as_secs(), 30);
    assert_eq!(c.spec.analysis.interval.as_secs(), 120);
    assert!(
        Shared::ptr_eq(&a.spec.alerts, &c.spec.alerts),
        "no alerts, one copy"
    );
    let mut edited = a.clone();
    edited.spec.analysis.interval = std::time::Duration::from_secs(5);
    assert_eq!(b.spec.analysis.interval.as_secs(), 30);
    assert_eq!(a.spec.analysis.interval.as_secs(), 30);
}
