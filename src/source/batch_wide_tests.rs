//! Unit tests of the wide batch: a group too large for one regex batch is asked as one query
//! whose varying matchers are dropped, its answer filtered to the members, and it falls back to
//! the regex batches (then per member) when that answer cannot be had.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use prometheus_http_query::response::Data;

use super::*;
use crate::judge::observation::{Point, Series};

fn request(query: &str) -> RangeRequest {
    RangeRequest {
        query: query.to_string(),
        end: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        window: Duration::from_secs(600),
        step: Duration::from_secs(60),
    }
}

fn error_rate(service: &str, track: &str) -> String {
    let sel = format!("service=\"{service}\", track=\"{track}\"");
    format!(
        "sum(rate(http_requests_total{{ {sel}, code=~\"5..\" }}[1m])) / sum(rate(http_requests_total{{ {sel} }}[1m]))"
    )
}

/// Canary and baseline of `n` services.
fn group(n: usize) -> Vec<RangeRequest> {
    (0..n)
        .flat_map(|i| {
            let s = format!("s{i:03}");
            [
                request(&error_rate(&s, "canary")),
                request(&error_rate(&s, "baseline")),
            ]
        })
        .collect()
}

fn small() -> Limits {
    Limits {
        max_members: 10,
        ..Limits::default()
    }
}

fn matrix(series: &[(Vec<(&str, String)>, f64)]) -> Data {
    let result: Vec<serde_json::Value> = series
        .iter()
        .map(|(labels, v)| {
            let metric: serde_json::Map<String, serde_json::Value> = labels
                .iter()
                .map(|(k, v)| (k.to_string(), serde_json::Value::from(v.clone())))
                .collect();
            serde_json::json!({"metric": metric, "values": [[1.0, v.to_string()]]})
        })
        .collect();
    serde_json::from_value(serde_json::json!({"resultType": "matrix", "result": result}))
        .expect("matrix")
}

/// The value every source below gives service `s{i}`'s `track`: distinct per member.
fn value(service: &str, track: &str) -> f64 {
    let i: f64 = service.trim_start_matches('s').parse().unwrap_or(999.0);
    i + if track == "canary" { 0.5 } else { 0.0 }
}

fn point(v: f64) -> Series {
    Series::Points {
        points: vec![Point { at: 1.0, value: v }].into(),
    }
}

/// What each member's own query would give.
fn expected(reqs: &[RangeRequest]) -> Vec<Series> {
    reqs.iter()
        .map(|r| {
            let service = r
                .query
                .split("service=\"")
                .nth(1)
                .and_then(|s| s.split('"').next());
            let track = r
                .query
                .split("track=\"")
                .nth(1)
                .and_then(|s| s.split('"').next());
            point(value(service.unwrap_or(""), track.unwrap_or("")))
        })
        .collect()
}

/// Answers as Prometheus would with 100 services in it (more than under rollout), some series
/// without the `track` label; the wide query fails when `wide_fails`.
struct Fake {
    asked: Mutex<Vec<String>>,
    wide_fails: bool,
}

impl RangeSource for Fake {
    async fn range_data(
        &self,
        query: &str,
        _: SystemTime,
        _: Duration,
        _: Duration,
    ) -> Result<Data, QueryFailure> {
        self.asked.lock().expect("lock").push(query.to_string());
        if query.contains("service=\"") {
            let r = request(query);
            let Series::Points { points } = &expected(&[r])[0] else {
                unreachable!()
            };
            return Ok(matrix(&[(vec![], points.to_vec()[0].value)]));
        }
        let wide = !query.contains("service=~");
        if wide && self.wide_fails {
            return Err(QueryFailure::Unusable(
                "Prometheus answer is larger than max_response_bytes".into(),
            ));
        }
        // Every service Prometheus knows; a regex batch selects only its values.
        let allowed: Option<BTreeSet<String>> = query.split("service=~\"").nth(1).map(|rest| {
            rest.split('"')
                .next()
                .unwrap_or("")
                .split('|')
                .map(str::to_string)
                .collect()
        });
        let mut series = Vec::new();
        for i in 0..100 {
            let s = format!("s{i:03}");
            if allowed.as_ref().is_some_and(|a| !a.contains(&s)) {
                continue;
            }
            for track in ["canary", "baseline"] {
                series.push((
                    vec![("service", s.clone()), ("track", track.to_string())],
                    value(&s, track),
                ));
            }
        }
        if wide {
            // Series of a service without a track label: no member's query reads them.
            series.push((vec![("service", "s001".to_string())], 42.0));
        }
        Ok(matrix(&series))
    }
}

#[test]
fn a_group_larger_than_one_regex_batch_is_one_wide_query() {
    let reqs = group(25);
    let jobs = plan(&reqs, &small());
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let Job::Wide {
        query,
        labels,
        members,
        fallback,
    } = &jobs[0]
    else {
        panic!("not wide: {jobs:?}");
    };
    assert_eq!(labels, &["service".to_string(), "track".to_string()]);
    assert_eq!(members.len(), 50);
    assert_eq!(
        query,
        "sum by (service, track) (rate(http_requests_total{code=~\"5..\"}[1m])) / \
         sum by (service, track) (rate(http_requests_total[1m]))"
    );
    // The fallback is the plan without the wide mode: five regex batches of ten.
    let regex_plan = plan(
        &reqs,
        &Limits {
            wide: false,
            ..small()
        },
    );
    let (indices, keys): (Vec<usize>, Vec<Vec<String>>) = members.iter().cloned().unzip();
    assert_eq!(fallback.jobs(&reqs, labels, &indices, &keys), regex_plan);
    assert_eq!(regex_plan.len(), 5);

    // A group that fits one regex batch stays a regex batch.
    let few = group(5);
    assert!(matches!(&plan(&few, &small())[..], [Job::Batch { .. }]));
}

#[test]
fn the_wide_query_costs_one_query_per_shape_whatever_the_group_size() {
    for n in [6, 60, 600] {
        let jobs = plan(&group(n), &small());
        assert_eq!(jobs.len(), 1, "n = {n}");
        assert!(matches!(jobs[0], Job::Wide { .. }));
    }
}

#[test]
fn a_shape_the_wide_rewrite_refuses_keeps_its_regex_batches() {
    // The varying label is the only matcher of the selector: dropped, it would leave `{}`.
    let reqs: Vec<_> = (0..25)
        .map(|i| request(&format!("sum({{service=\"s{i:03}\"}})")))
        .collect();
    let jobs = plan(&reqs, &small());
    assert!(
        jobs.iter().all(|j| !matches!(j, Job::Wide { .. })),
        "{jobs:?}"
    );
}

#[tokio::test]
async fn a_wide_answer_is_filtered_to_the_members_and_gives_what_their_own_queries_give() {
    let reqs = group(25);
    let fake = Fake {
        asked: Mutex::default(),
        wide_fails: false,
    };
    let got = range_many(&fake, &reqs, &small()).await;
    assert_eq!(got, expected(&reqs));
    assert_eq!(fake.asked.lock().expect("lock").len(), 1);
}

#[tokio::test]
async fn a_wide_query_that_fails_falls_back_to_the_regex_batches_never_to_a_pass() {
    let reqs = group(25);
    let fake = Fake {
        asked: Mutex::default(),
        wide_fails: true,
    };
    let got = range_many(&fake, &reqs, &small()).await;
    assert_eq!(got, expected(&reqs));
    let asked = fake.asked.lock().expect("lock").clone();
    assert_eq!(asked.len(), 1 + 5, "{asked:#?}");
    assert!(asked[1..].iter().all(|q| q.contains("service=~")));
}
