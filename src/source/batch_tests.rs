//! Unit tests of batching: which queries are batched, that the rewritten regexes select exactly
//! the members' values (hostile ones included), and how answers are split or fall back.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use prometheus_http_query::response::Data;
use promql_parser::label::MatchOp;
use promql_parser::parser::{Expr, LabelModifier, parse};

use super::*;
use crate::judge::observation::{Point, Series};
use crate::source::batch_split::{Extra, split};
use crate::source::prometheus::series;

fn request(query: &str) -> RangeRequest {
    RangeRequest {
        query: query.to_string(),
        end: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        window: Duration::from_secs(600),
        step: Duration::from_secs(60),
    }
}

/// As the rule templates escape a value into a double-quoted PromQL string.
fn quoted(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn error_rate(service: &str, track: &str) -> String {
    let sel = format!("service=\"{}\", track=\"{track}\"", quoted(service));
    format!(
        "sum(rate(http_requests_total{{ {sel}, code=~\"5..\" }}[1m])) / sum(rate(http_requests_total{{ {sel} }}[1m]))"
    )
}

const HOSTILE: &[&str] = &[
    "pay.ments",
    "a|b",
    "(.*)",
    "quo\"te",
    "back\\slash",
    "^anchored$",
    "brace{1,2}",
    "star*plus+",
    "[set]",
    "new\nline",
    "ünïcødé",
    "a",
];

/// Every selector of a batch query, with the regex matcher it has for `label`.
fn regexes(expr: &Expr, label: &str, out: &mut Vec<regex::Regex>) {
    match expr {
        Expr::Aggregate(a) => {
            let Some(LabelModifier::Include(by)) = &a.modifier else {
                panic!("aggregation without by: {expr}");
            };
            assert!(by.labels.iter().any(|l| l == label), "{expr}");
            regexes(&a.expr, label, out);
        }
        Expr::Binary(b) => {
            regexes(&b.lhs, label, out);
            regexes(&b.rhs, label, out);
        }
        Expr::Paren(p) => regexes(&p.expr, label, out),
        Expr::Unary(u) => regexes(&u.expr, label, out),
        Expr::Call(c) => c.args.args.iter().for_each(|a| regexes(a, label, out)),
        Expr::MatrixSelector(m) => regexes(&Expr::VectorSelector(m.vs.clone()), label, out),
        Expr::VectorSelector(vs) => {
            let found: Vec<_> = vs
                .matchers
                .matchers
                .iter()
                .filter(|m| m.name == label)
                .collect();
            assert_eq!(found.len(), 1, "{expr}");
            let MatchOp::Re(re) = &found[0].op else {
                panic!("{label} is not a regex matcher in {expr}");
            };
            out.push(re.clone());
        }
        _ => {}
    }
}

fn batches(jobs: &[Job]) -> Vec<(&str, &[String], usize)> {
    jobs.iter()
        .filter_map(|j| match j {
            Job::Batch {
                query,
                labels,
                members,
            } => Some((query.as_str(), labels.as_slice(), members.len())),
            Job::Single(_) | Job::Wide { .. } => None,
        })
        .collect()
}

#[test]
fn hostile_values_are_selected_exactly_by_the_batch_regex() {
    let reqs: Vec<_> = HOSTILE
        .iter()
        .map(|s| request(&error_rate(s, "canary")))
        .collect();
    let jobs = plan(&reqs, &Limits::default());
    let b = batches(&jobs);
    assert_eq!(b.len(), 1, "{jobs:?}");
    assert_eq!(b[0].1, ["service".to_string()]);
    let expr = parse(b[0].0).expect("batch query parses");
    let mut res = Vec::new();
    regexes(&expr, "service", &mut res);
    assert_eq!(res.len(), 2);
    // Near misses: what an unescaped value would also have matched.
    let misses = [
        "payXments",
        "b",
        "",
        "x",
        "quo",
        "anchored",
        "braceee",
        "starrplus",
        "s",
    ];
    for re in res {
        for v in HOSTILE {
            assert!(re.is_match(v), "{re} should match {v:?}");
        }
        for v in misses.iter().chain(&["pay.mentsa", "a|b|c", "ab"]) {
            assert!(!re.is_match(v), "{re} should not match {v:?}");
        }
    }
}

#[test]
fn shipped_rules_queries_are_batched_one_query_per_shape() {
    let dir = env!("CARGO_MANIFEST_DIR");
    let (rules, errors) = crate::rules::load_paths(&[format!("{dir}/rules/*.yaml")]);
    assert!(errors.is_empty() && !rules.is_empty(), "{errors:?}");
    let ctx = crate::rules::QueryContext {
        rollout: "r1",
        version: "v\"2",
    };
    let mut reqs = Vec::new();
    let mut keys = std::collections::BTreeSet::new();
    for rule in &rules {
        for m in rule.metrics() {
            if let crate::rules::schema::MetricKind::Window(q) = m.kind() {
                for g in [crate::rules::Group::Canary, crate::rules::Group::Baseline] {
                    let query = rule.render(q, g, &ctx).expect("renders");
                    keys.insert(
                        crate::source::batch_rewrite::shape(&query)
                            .expect("parses")
                            .key()
                            .clone(),
                    );
                    reqs.push(request(&query));
                }
            }
        }
    }
    let jobs = plan(&reqs, &Limits::default());
    assert!(
        jobs.iter().all(|j| matches!(j, Job::Batch { .. })),
        "{jobs:?}"
    );
    let b = batches(&jobs);
    assert_eq!(b.len(), keys.len());
    assert_eq!(b.iter().map(|x| x.2).sum::<usize>(), reqs.len());
    for (query, labels, _) in b {
        let expr = parse(query).expect("batch query parses");
        for l in labels {
            let mut res = Vec::new();
            regexes(&expr, l, &mut res);
            assert!(res.iter().all(|r| r.is_match("canary") || l != "track"));
        }
    }
}

#[test]
fn unsafe_shapes_are_asked_alone() {
    let unsafe_queries = [
        "sum without (pod) (rate(x{S}[1m]))",
        "topk(1, rate(x{S}[1m]))",
        "quantile(0.9, rate(x{S}[1m]))",
        "count_values(\"v\", x{S})",
        "sum(absent(x{S}))",
        "scalar(sum(x{S}))",
        "sum(x{S}) / vector(1)",
        "sum(label_replace(x{S}, \"service\", \"z\", \"\", \"\"))",
        "sum(label_join(x{S}, \"service\", \",\", \"track\"))",
        "sum(x{S}) / on() sum(y{S})",
        "sum(x{S}) / ignoring(code) sum(y{S})",
        "sum by (pod) (x{S}) / on(pod) group_left sum by (pod) (y{S})",
        "rate(x{S}[1m])",
        "sum(x{S}) or sum(y{S})",
        "sum(max_over_time(sum(x{S})[5m:1m]))",
        "sum(x{S} @ 1700000000)",
        "sum(x{S}) / sum(y)",
        "sum(x{S} or z{S})",
    ];
    for q in unsafe_queries {
        let reqs: Vec<_> = ["a", "b"]
            .iter()
            .map(|s| request(&q.replace("{S}", &format!("{{service=\"{s}\"}}"))))
            .collect();
        let jobs = plan(&reqs, &Limits::default());
        assert_eq!(jobs, vec![Job::Single(0), Job::Single(1)], "{q}");
    }
}

#[test]
fn members_that_cannot_be_told_apart_are_asked_alone() {
    let reqs = [
        request("sum(x{service=\"a\"}) / sum(y{service=\"a\"})"),
        request("sum(x{service=\"b\"}) / sum(y{service=\"b\"})"),
        // Two services in one query: grouping by service would pair a with a, not a with c.
        request("sum(x{service=\"a\"}) / sum(y{service=\"c\"})"),
        // The empty value also matches series without the label.
        request("sum(x{service=\"\"}) / sum(y{service=\"\"})"),
    ];
    let jobs = plan(&reqs, &Limits::default());
    assert!(
        jobs.contains(&Job::Single(2)) && jobs.contains(&Job::Single(3)),
        "{jobs:?}"
    );
    assert_eq!(batches(&jobs).len(), 1);
}

#[test]
fn identical_queries_share_one_answer_and_groups_respect_the_limits() {
    let same = vec![request("sum(x{service=\"a\"})"); 3];
    let jobs = plan(&same, &Limits::default());
    assert_eq!(batches(&jobs), vec![("sum(x{service=\"a\"})", &[][..], 3)]);

    let many: Vec<_> = (0..25)
        .map(|i| request(&error_rate(&format!("s{i:02}"), "canary")))
        .collect();
    let limits = Limits {
        max_members: 10,
        wide: false,
        ..Limits::default()
    };
    let b = batches(&plan(&many, &limits))
        .iter()
        .map(|x| x.2)
        .collect::<Vec<_>>();
    assert_eq!(b, vec![10, 10, 5]);
    let limits = Limits {
        max_regex_bytes: 20,
        wide: false,
        ..Limits::default()
    };
    let jobs = plan(&many, &limits);
    assert!(batches(&jobs).iter().all(|x| x.2 == 2), "{jobs:?}");
    let singles = jobs.iter().filter(|j| matches!(j, Job::Single(_))).count();
    assert_eq!(batches(&jobs).len() * 2 + singles, 25, "{jobs:?}");
}

type Labeled<'a> = (&'a [(&'a str, &'a str)], &'a [f64]);

fn matrix(series: &[Labeled<'_>]) -> Data {
    let result: Vec<serde_json::Value> = series
        .iter()
        .map(|(labels, values)| {
            let metric: serde_json::Map<String, serde_json::Value> = labels
                .iter()
                .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
                .collect();
            let values: Vec<_> = values
                .iter()
                .enumerate()
                .map(|(i, v)| serde_json::json!([i as f64, v.to_string()]))
                .collect();
            serde_json::json!({"metric": metric, "values": values})
        })
        .collect();
    serde_json::from_value(serde_json::json!({"resultType": "matrix", "result": result}))
        .expect("matrix")
}

fn points(values: &[f64]) -> Series {
    Series::Points {
        points: values
            .iter()
            .enumerate()
            .map(|(i, v)| Point {
                at: i as f64,
                value: *v,
            })
            .collect(),
    }
}

#[test]
fn split_gives_each_member_its_series_or_refuses_ambiguity() {
    let labels = ["service".to_string(), "track".to_string()];
    let keys = [
        vec!["a".into(), "canary".into()],
        vec!["quo\"te".into(), "canary".into()],
        vec!["gone".into(), "canary".into()],
    ];
    let data = matrix(&[
        (&[("service", "a"), ("track", "canary")], &[1.0, 2.0]),
        (&[("service", "quo\"te"), ("track", "canary")], &[3.0]),
        // A combination of the regexes no member asked for.
        (&[("service", "a"), ("track", "baseline")], &[9.0]),
    ]);
    let got = split(&data, &labels, &keys, Extra::Combinations).expect("splits");
    assert_eq!(got, vec![points(&[1.0, 2.0]), points(&[3.0]), points(&[])]);

    let missing = matrix(&[(&[("service", "a")], &[1.0])]);
    assert!(split(&missing, &labels, &keys, Extra::Combinations).is_err());
    let twice = matrix(&[
        (
            &[("service", "a"), ("track", "canary"), ("code", "200")],
            &[1.0],
        ),
        (
            &[("service", "a"), ("track", "canary"), ("code", "500")],
            &[1.0],
        ),
    ]);
    assert!(split(&twice, &labels, &keys, Extra::Combinations).is_err());
}

/// Answers from a table; records every query asked.
struct Table {
    asked: Mutex<Vec<String>>,
    answer: fn(&str) -> Result<Data, String>,
}

impl RangeSource for Table {
    async fn range_data(
        &self,
        query: &str,
        _: SystemTime,
        _: Duration,
        _: Duration,
    ) -> Result<Data, QueryFailure> {
        self.asked.lock().expect("lock").push(query.to_string());
        (self.answer)(query).map_err(QueryFailure::Unusable)
    }
}

#[tokio::test]
async fn a_failed_or_ambiguous_batch_is_asked_again_per_member() {
    let reqs = [
        request("sum(x{service=\"a\"})"),
        request("sum(x{service=\"b\"})"),
    ];
    let per_member = |q: &str| {
        let v = if q.contains("\"a\"") { 1.0 } else { 2.0 };
        Ok::<Data, String>(matrix(&[(&[], &[v])]))
    };
    let failing = Table {
        asked: Mutex::default(),
        answer: |q| {
            if q.contains("=~") {
                Err("Prometheus answer is larger than max_response_bytes".into())
            } else {
                let v = if q.contains("\"a\"") { 1.0 } else { 2.0 };
                Ok(matrix(&[(&[], &[v])]))
            }
        },
    };
    let got = range_many(&failing, &reqs, &Limits::default()).await;
    assert_eq!(got, vec![points(&[1.0]), points(&[2.0])]);
    assert_eq!(failing.asked.lock().expect("lock").len(), 3);

    let ambiguous = Table {
        asked: Mutex::default(),
        answer: |q| {
            if q.contains("=~") {
                Ok(matrix(&[(&[("pod", "p")], &[1.0])]))
            } else {
                Ok(matrix(&[
                    (&[("pod", "p")], &[5.0]),
                    (&[("pod", "q")], &[6.0]),
                ]))
            }
        },
    };
    let got = range_many(&ambiguous, &reqs, &Limits::default()).await;
    assert_eq!(got, vec![Series::Ambiguous { series: 2 }; 2]);

    let batched = Table {
        asked: Mutex::default(),
        answer: |q| {
            assert!(q.contains("by (service)"), "{q}");
            Ok(matrix(&[
                (&[("service", "a")], &[1.0]),
                (&[("service", "b")], &[2.0]),
            ]))
        },
    };
    assert_eq!(
        range_many(&batched, &reqs, &Limits::default()).await,
        vec![
            per_member(&reqs[0].query).map(|d| series(&d)).expect("a"),
            points(&[2.0])
        ]
    );
    assert_eq!(batched.asked.lock().expect("lock").len(), 1);
}

#[test]
fn a_plan_from_the_memo_is_the_plan_parsed_afresh() {
    let reqs: Vec<_> = HOSTILE
        .iter()
        .flat_map(|s| {
            [
                request(&error_rate(s, "canary")),
                request(&error_rate(s, "baseline")),
            ]
        })
        .chain([request("sum(x{service=\"a\"}) / sum(y{service=\"c\"})")])
        .collect();
    let first = plan(&reqs, &Limits::default());
    assert_eq!(plan(&reqs, &Limits::default()), first);
    assert_eq!(batches(&first).len(), 1);
    assert!(first.contains(&Job::Single(reqs.len() - 1)));
}
