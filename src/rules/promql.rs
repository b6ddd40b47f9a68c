//! Every query a rule can send, rendered and parsed at load time, so a selector or a template
//! that breaks PromQL is a file:line:col error in `canaryd check` and not an `error` verdict at
//! 3 a.m.
//!
//! Rendering also proves where values land. The version arrives at run time, from whoever may
//! call the API, so it is rendered here as a hostile sample: a value that ends strings and
//! brackets. Only inside a double-quoted string, where `templates` escapes it, does the query
//! still parse; placed anywhere else (a metric name, a regex, a single-quoted string) it could
//! change the query, and the rule is refused.

use serde_saphyr::Spanned;

use super::schema::{MetricKind, MetricSpec, RuleSpec};
use super::shared::Text;
use super::templates;
use super::validate::{Finding, at};
use super::{Group, QueryContext};

/// What a query is rendered with at load time: plain values of the shapes canaryd produces.
const SAMPLE: QueryContext<'static> = QueryContext {
    rollout: "ro-0123456789ab",
    version: "v1.2.3",
};

/// The injection of issue 9 plus every other character that can end a PromQL string or token.
const HOSTILE: &str = "x\"}[10s])) * 0 or vector(0) #'`\\\n";

/// Values that come from outside the rule file, each checked with [`HOSTILE`] in its place.
const RUNTIME_VALUES: &[&str] = &["version", "rollout"];

/// Renders and parses every query of every metric, for both groups.
pub(super) fn check(spec: &RuleSpec, out: &mut Vec<Finding>) {
    for m in &spec.metrics.value {
        let m = &m.value;
        for (key, template) in [
            ("query", m.query.as_ref()),
            ("events", m.events.as_deref()),
            ("requests", m.requests.as_deref()),
        ] {
            if let Some(t) = template {
                check_template(spec, m, key, t, out);
            }
        }
        if let (MetricKind::Slow { histogram, .. } | MetricKind::Histogram { histogram }, Some(h)) =
            (m.kind(), &m.histogram)
        {
            check_histogram(spec, m, histogram, h, out);
        }
    }
}

fn check_template(
    spec: &RuleSpec,
    m: &MetricSpec,
    key: &str,
    t: &Spanned<Text>,
    out: &mut Vec<Finding>,
) {
    let name = &m.name;
    // Unknown variables and syntax are reported by `validate`; nothing to render then.
    if templates::check_vars(&t.value, &spec.vars).is_err() {
        return;
    }
    for group in [Group::Canary, Group::Baseline] {
        let vars = super::query_vars(spec, group, &SAMPLE);
        let query = match templates::render_query(&t.value, &vars) {
            Ok(q) => q,
            // Out of fuel lands here too: the rule would wedge nothing, but never render either.
            Err(e) => {
                out.push(at(t, format!("metric {name}: {key}: {e}")));
                return;
            }
        };
        if let Err(e) = promql_parser::parser::parse(&query) {
            out.push(at(
                t,
                format!(
                    "metric {name}: {key} for the {} is not valid PromQL: {}; rendered: {query}",
                    group.as_str(),
                    one_line(&e)
                ),
            ));
            return;
        }
        if group == Group::Baseline {
            continue;
        }
        // Where a value lands does not depend on the group: one hostile render is enough.
        let used = templates::variables(&t.value).unwrap_or_default();
        for value in RUNTIME_VALUES.iter().filter(|v| used.contains(**v)) {
            let mut hostile = vars.clone();
            hostile
                .values
                .insert(value.to_string(), HOSTILE.to_string());
            let parsed = templates::render_query(&t.value, &hostile)
                .map_err(|e| e.to_string())
                .and_then(|q| promql_parser::parser::parse(&q).map(|_| ()));
            if let Err(e) = parsed {
                out.push(at(t, format!(
                    "metric {name}: {key}: `{{{{{value}}}}}` must sit inside a double-quoted string of an exact matcher, e.g. {value}=\"{{{{{value}}}}}\", where canaryd escapes it; elsewhere a {value} like {HOSTILE:?} breaks the query ({})",
                    one_line(&e)
                )));
            }
        }
    }
}

/// Sequential histogram metrics query `<histogram>_bucket` and `_count` with each selector.
fn check_histogram(
    spec: &RuleSpec,
    m: &MetricSpec,
    histogram: &str,
    h: &Spanned<Text>,
    out: &mut Vec<Finding>,
) {
    for sel in [&spec.selector.canary, &spec.selector.baseline] {
        for suffix in ["_bucket", "_count"] {
            let query = format!("{histogram}{suffix}{{ {sel} }}");
            if let Err(e) = promql_parser::parser::parse(&query) {
                out.push(at(
                    h,
                    format!(
                        "metric {}: histogram query is not valid PromQL: {}; rendered: {query}",
                        m.name,
                        one_line(&e)
                    ),
                ));
                return;
            }
        }
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
