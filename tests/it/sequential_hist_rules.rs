//! `test: sequential_histogram` and `max_tick_factor` in rule files: a mistake is reported at
//! load as `file:line:col: message` pointing at the metric, as every rule error is.

use std::path::Path;

use canaryd::rules::parse_rule;
use canaryd::rules::schema::MetricKind;

const HEAD: &str = r#"name: demo
selector:
  canary: 'service="demo", track="canary"'
  baseline: 'service="demo", track="baseline"'
steps:
  - { weight: 5, hold: 1h }
  - { weight: 100 }
metrics:
"#;

fn rule(metric: &str) -> Result<canaryd::rules::Rule, Vec<String>> {
    parse_rule(Path::new("rule.yaml"), &format!("{HEAD}{metric}"))
        .map_err(|e| e.iter().map(ToString::to_string).collect())
}

fn only_error(metric: &str) -> String {
    match rule(metric) {
        Ok(_) => panic!("loaded:\n{metric}"),
        Err(e) => {
            assert_eq!(e.len(), 1, "{e:#?}");
            e[0].clone()
        }
    }
}

#[test]
fn a_histogram_test_loads_and_counts_as_sequential() {
    let r = rule(
        "  - name: latency_vs_baseline
    test: sequential_histogram
    histogram: http_request_duration_seconds
    alpha: 0.01
    margin: 0.2
    max_tick_factor: 8
",
    )
    .expect("loads");
    let m = r.metrics().next().expect("metric");
    assert_eq!(
        m.kind(),
        MetricKind::Histogram {
            histogram: "http_request_duration_seconds"
        }
    );
    assert_eq!(r.sequential_metrics(), 1);
    assert_eq!(m.sequential_config(1).max_tick_factor, Some(8.0));
}

#[test]
fn a_histogram_test_with_an_edge_or_counters_is_refused_where_it_is_declared() {
    for extra in [
        "    slower_than: 0.5\n",
        "    events: 'x_total'\n",
        "    query: 'up'\n",
    ] {
        let e = only_error(&format!(
            "  - name: latency_vs_baseline\n    test: sequential_histogram\n    histogram: h\n{extra}"
        ));
        assert!(e.starts_with("rule.yaml:9:5: "), "{e}");
        assert!(
            e.contains("`test: sequential_histogram` needs `histogram`"),
            "{e}"
        );
    }
}

#[test]
fn a_tick_cap_must_be_above_one() {
    for cap in ["1", "0.5", "-3"] {
        let e = only_error(&format!(
            "  - name: errors_vs_baseline\n    test: sequential\n    events: 'a_total{{ {{{{selector}}}} }}'\n    requests: 'b_total{{ {{{{selector}}}} }}'\n    max_tick_factor: {cap}\n"
        ));
        assert!(e.starts_with("rule.yaml:9:5: "), "{e}");
        assert!(
            e.contains("max_tick_factor must be a number above 1"),
            "{e}"
        );
    }
}

#[test]
fn a_histogram_name_that_is_not_promql_is_refused() {
    let e = only_error(
        "  - name: latency_vs_baseline\n    test: sequential_histogram\n    histogram: 'bad name{'\n",
    );
    assert!(e.starts_with("rule.yaml:11:16: "), "{e}");
    assert!(e.contains("not valid PromQL"), "{e}");
}

/// The tightening null: loads with its settle counted in the rule's ticks, a grid relative to
/// each edge's null (ratios below 1 + margin are fine), and is refused when it would loosen,
/// when half of it is given, or on a count test.
#[test]
fn a_settled_margin_loads_in_ticks_and_is_refused_when_it_makes_no_sense() {
    let ok = "  - name: latency_vs_baseline
    test: sequential_histogram
    histogram: http_request_duration_seconds
    margin: 0.2
    settled_margin: 0.15
    settle: 8h
    grid: [1.1, 1.5]
";
    let r = rule(ok).expect("loads");
    let m = r.metrics().next().expect("metric");
    let cfg = m.sequential_config_every(1, std::time::Duration::from_secs(60));
    assert_eq!(cfg.settled_margin, Some(0.15));
    assert_eq!(cfg.settle_ticks, 480);
    for (bad, says) in [
        (
            "    settled_margin: 0.3\n    settle: 8h\n",
            "between 0 and margin",
        ),
        ("    settled_margin: 0.1\n", "go together"),
        ("    settle: 8h\n", "go together"),
    ] {
        let e = only_error(&format!(
            "  - name: latency_vs_baseline\n    test: sequential_histogram\n    histogram: h\n    margin: 0.2\n{bad}"
        ));
        assert!(e.starts_with("rule.yaml:9:5: ") && e.contains(says), "{e}");
    }
    let e = only_error(
        "  - name: errors_vs_baseline\n    test: sequential\n    events: 'a_total{ {{selector}} }'\n    requests: 'b_total{ {{selector}} }'\n    margin: 0.2\n    settled_margin: 0.1\n    settle: 1h\n",
    );
    assert!(e.contains("belongs to `test: sequential_histogram`"), "{e}");
}
