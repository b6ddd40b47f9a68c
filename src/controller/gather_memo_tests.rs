//! Unit tests of the per-rollout query memo: built once and reused, built again for another
//! rollout, a query that cannot render still judged `error` with its own reason, and every
//! query sent alone (a fallback) is the rollout's own text.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use prometheus_http_query::response::Data;

use super::*;
use crate::controller::analysis::{self, Fetched, TickQuery, judge_gathered};
use crate::controller::gather_many::{fetch_known, requests};
use crate::judge::observation::Series;
use crate::rollout::Phase;
use crate::source::batch::{Limits, RangeSource, range_many_by};
use crate::source::prometheus::QueryFailure;
use crate::source::{PrometheusConfig, PrometheusSource};
use crate::verdict::Verdict;

/// Two window metrics over `service`; `slow` loops twice over the version, which renders for
/// a short version and runs out of fuel for a long one.
fn rule(service: &str) -> Arc<Rule> {
    let yaml = format!(
        r#"name: {service}
selector:
  canary: 'service="{service}", track="canary"'
  baseline: 'service="{service}", track="baseline"'
steps:
  - {{ weight: 10, hold: 1m }}
  - {{ weight: 100 }}
metrics:
  - name: errors
    query: sum(rate(errors{{ {{{{selector}}}}, version="{{{{version}}}}" }}[1m]))
    rollback_above: 0.05
  - name: slow
    query: 'sum(rate(slow{{ {{{{selector}}}} }}[1m])){{% for a in version %}}{{% for b in version %}}{{% endfor %}}{{% endfor %}}'
    rollback_above: 0.05
hooks: {{}}
"#
    );
    let rule = crate::rules::parse_rule(std::path::Path::new("r.yaml"), &yaml)
        .unwrap_or_else(|e| panic!("{e:?}"));
    Arc::new(rule)
}

fn rollout(service: &str, version: &str) -> Rollout {
    let mut r = Rollout::new(
        format!("ro-{service}"),
        service.into(),
        version.into(),
        chrono::Utc::now(),
    );
    r.phase = Phase::Progressing;
    r.step_started_at = Some(chrono::Utc::now() - chrono::TimeDelta::seconds(600));
    r
}

/// The texts `analysis::fetch` would send for `rollout`'s window metrics, canary then baseline.
fn rendered(rule: &Rule, rollout: &Rollout) -> Vec<String> {
    let ctx = QueryContext {
        rollout: &rollout.id,
        version: &rollout.version,
    };
    window_queries(rule)
        .flat_map(|(_, q)| [Group::Canary, Group::Baseline].map(|g| rule.render(q, g, &ctx)))
        .map(|r| r.unwrap_or_else(|e| panic!("{e}")))
        .collect()
}

/// The set-aside values of each memo shape, in the order `rendered` gives the texts.
fn values(known: &Known) -> Vec<Vec<String>> {
    known
        .metrics
        .iter()
        .flat_map(|k| match k {
            KnownMetric::Rendered { canary, baseline } => [canary, baseline]
                .map(|p| match p {
                    Ok(s) => s.values().map(|(n, v)| format!("{n}={v}")).collect(),
                    Err(e) => panic!("refused: {e}"),
                })
                .to_vec(),
            KnownMetric::Failed(why) => panic!("failed: {why}"),
        })
        .collect()
}

#[test]
fn the_memo_is_built_once_and_every_later_tick_reuses_it() {
    let (rule, r) = (rule("sa"), rollout("sa", "v2"));
    let memo = QueryMemo::default();
    let first = memo.known(&rule, &r);
    // Each shape is the parse of the text `analysis::fetch` renders.
    let from_texts: Vec<Vec<String>> = rendered(&rule, &r)
        .iter()
        .map(|q| match parsed(q) {
            Ok(s) => s.values().map(|(n, v)| format!("{n}={v}")).collect(),
            Err(e) => panic!("{e}"),
        })
        .collect();
    assert_eq!(values(&first), from_texts);
    assert_eq!(from_texts[0], ["service=sa", "track=canary", "version=v2"]);
    // A later tick, with the rollout's state moved on (a new `Arc<Rollout>`): the same memo.
    let mut later = r.clone();
    later.step = 1;
    later.nodata_ticks = 3;
    assert!(Arc::ptr_eq(&first, &memo.known(&rule, &later)));
}

#[test]
fn a_memo_is_built_again_for_another_rollout_version_or_rule() {
    let (rule_a, a) = (rule("sa"), rollout("sa", "v2"));
    let memo = QueryMemo::default();
    let first = memo.known(&rule_a, &a);
    for (rule, r) in [
        (rule_a.clone(), rollout("sa", "v3")),
        (rule_a.clone(), rollout("sb", "v2")),
        (rule("sa"), a.clone()),
    ] {
        let again = memo.known(&rule, &r);
        assert!(!Arc::ptr_eq(&first, &again), "{} {}", r.id, r.version);
        let texts = rendered(&rule, &r);
        let parsed: Vec<Vec<String>> = texts
            .iter()
            .map(|q| match parsed(q) {
                Ok(s) => s.values().map(|(n, v)| format!("{n}={v}")).collect(),
                Err(e) => panic!("{e}"),
            })
            .collect();
        assert_eq!(values(&again), parsed);
    }
}

fn nowhere() -> PrometheusSource {
    PrometheusSource::new(&PrometheusConfig {
        url: "http://127.0.0.1:9".into(),
        timeout: Duration::from_secs(1),
        bearer_token: None,
        basic_auth: None,
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn a_query_that_cannot_render_is_error_with_the_reason_fetch_gives() {
    let rule = rule("sa");
    // Two loops over a 1,000-character version: 10⁶ iterations, out of fuel.
    let r = rollout("sa", &"v".repeat(1_000));
    let memo = QueryMemo::default();
    let known = memo.known(&rule, &r);
    let [_, KnownMetric::Failed(why)] = &known.metrics[..] else {
        panic!("{known:?}");
    };
    assert!(why.contains("steps to render"), "{why}");
    let end = SystemTime::now();
    let window = rule.spec.analysis.window;
    let source = nowhere();
    // Twice: from the memo just built, and again from the memo.
    for _ in 0..2 {
        let got = fetch_known(
            &source,
            &[(&rule, &r, &memo)],
            end,
            window,
            &Limits::default(),
            None,
        )
        .await;
        let alone = analysis::fetch(
            &source,
            &rule,
            &r,
            TickQuery {
                end,
                window,
                by: None,
            },
        )
        .await;
        assert_eq!(got[0].metrics.get("slow"), alone.metrics.get("slow"));
        let Some(Fetched::Window { canary, baseline }) = got[0].metrics.get("slow") else {
            panic!("{got:?}");
        };
        for s in [canary, baseline] {
            assert!(
                matches!(s, Series::Failed { message } if message == why),
                "{s:?}"
            );
        }
        let tick = judge_gathered(&rule, &r, &got[0]);
        let slow = tick.checks.iter().find(|c| &*c.metric == "slow");
        assert_eq!(slow.map(|c| c.verdict), Some(Verdict::Error), "{tick:?}");
    }
}

/// Refuses every batch (a regex or wide query: an answer that came but cannot be used), so
/// each member is asked alone; answers a single with one point numbered by the order asked.
#[derive(Default)]
struct Refusing {
    singles: Mutex<Vec<String>>,
}

impl RangeSource for Refusing {
    async fn range_data(
        &self,
        query: &str,
        _: SystemTime,
        _: Duration,
        _: Duration,
    ) -> Result<Data, QueryFailure> {
        if query.contains("=~") || !query.contains("service=") {
            return Err(QueryFailure::Unusable("too large".into()));
        }
        let mut singles = self.singles.lock().expect("lock");
        singles.push(query.to_string());
        let n = singles.len();
        Ok(serde_json::from_value(serde_json::json!({
            "resultType": "matrix",
            "result": [{"metric": {}, "values": [[1.0, n.to_string()]]}]
        }))
        .expect("matrix"))
    }
}

#[tokio::test]
async fn a_fallback_sends_every_rollouts_own_text_and_gives_it_its_own_answer() {
    let services = ["sa", "sb", "sc", "sd"];
    let rules: Vec<Arc<Rule>> = services.iter().map(|s| rule(s)).collect();
    let rollouts: Vec<Rollout> = services.iter().map(|s| rollout(s, "v2")).collect();
    let memos: Vec<QueryMemo> = services.iter().map(|_| QueryMemo::default()).collect();
    let items: Vec<_> = rules
        .iter()
        .zip(&rollouts)
        .zip(&memos)
        .map(|((rule, r), memo)| (rule.as_ref(), r, memo))
        .collect();
    let known: Vec<_> = items.iter().map(|(ru, r, m)| m.known(ru, r)).collect();
    let range = (SystemTime::now(), Duration::from_secs(600));
    let reqs = requests(&items, &known, &range);
    // Every rollout's texts, in the order of the requests.
    let expected: Vec<String> = items
        .iter()
        .flat_map(|(rule, r, _)| rendered(rule, r))
        .collect();
    assert_eq!(reqs.len(), expected.len());
    let source = Refusing::default();
    let limits = Limits {
        max_members: 4,
        ..Limits::default()
    };
    let got = range_many_by(&source, &reqs, &limits, None).await;
    let singles = source.singles.lock().expect("lock").clone();
    assert_eq!(
        singles.iter().collect::<BTreeSet<_>>(),
        expected.iter().collect::<BTreeSet<_>>(),
        "each text sent alone, exactly the rendered ones"
    );
    assert_eq!(singles.len(), expected.len());
    // Request i got the answer to its own text.
    for (i, series) in got.iter().enumerate() {
        let Series::Points { points } = series else {
            panic!("{i}: {series:?}");
        };
        let asked = points.to_vec()[0].value as usize;
        assert_eq!(singles[asked - 1], expected[i], "request {i}");
    }
}
