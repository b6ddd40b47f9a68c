//! A controller in the test's own process, with one rule and a store of the test's choosing, whose
//! Prometheus is a closed port: for tests of what the controller does around analysis (saving,
//! history, the API's inputs), where every query failing is the point or never happens.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use canaryd::actions::HookRunner;
use canaryd::controller::Controller;
use canaryd::demo::receiver::HookReceiver;
use canaryd::rules::{Rule, parse_rule};
use canaryd::source::{PrometheusConfig, PrometheusSource};
use canaryd::store::Store;

/// A source that is refused at once: port 9 (discard) has no listener on loopback.
pub fn closed_source(timeout: Duration) -> PrometheusSource {
    PrometheusSource::new(&PrometheusConfig {
        url: "http://127.0.0.1:9".into(),
        timeout,
        bearer_token: None,
        basic_auth: None,
    })
    .expect("source")
}

/// Rule `name` with one metric (`up` of the canary, rolled back below 1), two steps (5 % held an
/// hour, then 100 %), the `analysis:` mapping given (YAML flow style, without braces), and its
/// weight hook on `receiver`.
pub fn up_rule(name: &str, analysis: &str, receiver: &HookReceiver) -> Rule {
    let text = format!(
        "name: {name}\nselector: {{ canary: 'track=\"canary\"', baseline: 'track=\"baseline\"' }}\n\
         steps: [{{ weight: 5, hold: 1h }}, {{ weight: 100 }}]\nanalysis: {{ {analysis} }}\n\
         metrics:\n  - {{ name: up, query: 'sum(up{{ {{{{selector}}}} }})', rollback_below: 1 }}\n\
         hooks:\n  set_weight: {{ url: \"{}\" }}\n",
        receiver.url("/weight")
    );
    parse_rule(std::path::Path::new(&format!("{name}.yaml")), &text).expect("rule")
}

/// A controller running `rules` over `store`, asking the closed source.
pub fn controller(rules: Vec<Rule>, store: Arc<dyn Store>, timeout: Duration) -> Controller {
    let rules: BTreeMap<String, Arc<Rule>> = rules
        .into_iter()
        .map(|r| (r.name().to_string(), Arc::new(r)))
        .collect();
    Controller::new(
        rules,
        store,
        closed_source(timeout),
        HookRunner::new().expect("hooks"),
    )
}
