//! Rule files and their query templates, as `canaryd check` and `serve` read them: a rule file
//! is operator input that may come from a merge request. Nothing here may panic or hang.
#![no_main]

use std::collections::BTreeMap;
use std::path::Path;

use canaryd::rules::{Group, QueryContext, matchers, parse_rule, templates};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Alert matchers (`alerts.rollback_on`) and bare templates have their own parsers.
    let _ = matchers::parse(text);
    let vars: BTreeMap<String, String> = [("rate", "4s"), ("service", "api")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if templates::check(text, &vars).is_ok() {
        let _ = templates::render(text, &vars);
    }
    let Ok(rule) = parse_rule(Path::new("fuzz.yaml"), text) else {
        return;
    };
    let ctx = QueryContext {
        rollout: "r-1",
        version: "v2",
    };
    for metric in rule.metrics() {
        for group in [Group::Canary, Group::Baseline] {
            let _ = rule.render_query(metric, group, &ctx);
        }
    }
});
