//! Rules that use metric templates become the same `RuleSpec` the rest of canaryd reads: each
//! `template:` metric is the template's entry with every key the rule sets put over it, and the
//! templates' variable defaults sit under the rule's own `vars`. Resolution happens at load time
//! only, so a rollout keeps the rule it started with whatever the template files say later.
//!
//! Which keys a rule sets is read from the text (a second, lenient pass, as `load` does for
//! anchors): a typed `MetricSpec` cannot tell `critical: false` from a key left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_saphyr::{Location, Spanned};

use super::catalog::{Catalog, Template, TemplateFile};
use super::schema::{MetricSpec, RuleSpec};
use super::shared::{Shared, Text};
use super::validate::{Finding, at};
use super::vars::Vars;

/// Keys that make a template what it is; a rule setting one would be a different metric.
const DEFINING: &[&str] = &["query", "test", "events", "requests", "histogram"];

/// Keys a rule may set over a template's, all of `MetricSpec` but the defining ones. `merge`
/// destructures `MetricSpec` without `..`, so a new field does not compile until it is placed.
const OVERRIDABLE: &[&str] = &[
    "name",
    "template",
    "slower_than",
    "margin",
    "alpha",
    "grid",
    "max_tick_factor",
    "settled_margin",
    "settle",
    "direction",
    "rollback_above",
    "rollback_below",
    "warn_above",
    "warn_below",
    "max_ratio",
    "max_difference",
    "for",
    "compare",
    "critical",
    "allowed_increase",
    "allowed_decrease",
    "critical_increase",
    "critical_decrease",
    "nan_strategy",
    "outliers",
    "outlier_factor",
    "tolerance",
    "confidence",
    "effect_size",
    "must_have_data",
    "muted",
    "group",
    "weight",
];

/// Findings at these places in the rule file are about a templated metric; the note names the
/// template's own place, so the error points into both files.
#[derive(Debug, Clone)]
pub(crate) struct Origin {
    pub places: [Location; 2],
    pub note: String,
}

/// A rule with its templates resolved, and the template files it used (for its snapshot).
pub(crate) struct Resolved {
    pub spec: RuleSpec,
    pub files: Vec<Arc<TemplateFile>>,
    pub origins: Vec<Origin>,
}

#[derive(Default, Deserialize)]
struct MetricKeys {
    #[serde(default)]
    metrics: Vec<BTreeMap<String, IgnoredAny>>,
}

fn lenient() -> serde_saphyr::Options {
    let mut options = serde_saphyr::Options::default();
    options.non_finite_float_policy = serde_saphyr::NonFiniteFloatPolicy::PassThrough;
    options
}

/// Resolves every `template:` metric of `spec` (parsed from `text`) against `catalog`.
pub(crate) fn resolve(
    mut spec: RuleSpec,
    text: &str,
    catalog: &Catalog,
) -> Result<Resolved, Vec<Finding>> {
    let mut files: Vec<Arc<TemplateFile>> = Vec::new();
    let mut origins = Vec::new();
    if !spec
        .metrics
        .value
        .iter()
        .any(|m| m.value.template.is_some())
    {
        return Ok(Resolved {
            spec,
            files,
            origins,
        });
    }
    let keys: MetricKeys = serde_saphyr::from_str_with_options(text, lenient()).unwrap_or_default();
    let mut out = Vec::new();
    let mut first_use = Vec::new();
    let metrics = std::mem::take(&mut spec.metrics.value).into_inner();
    let mut resolved = Vec::with_capacity(metrics.len());
    for (i, m) in metrics.into_iter().enumerate() {
        let Some(name) = m.value.template.clone() else {
            resolved.push(m);
            continue;
        };
        let metric = &m.value.name;
        let Some(t) = catalog.get(&name.value) else {
            out.push(at(
                &name,
                format!("metric {metric}: {}", unknown(&name.value, catalog)),
            ));
            resolved.push(m);
            continue;
        };
        let note = format!("(template {} at {})", t.name(), t.place());
        if t.broken {
            out.push(at(
                &name,
                format!("metric {metric}: template {:?} has errors {note}", t.name()),
            ));
            resolved.push(m);
            continue;
        }
        // Never guess: an override read as absent would silently become the template's value.
        let Some(set) = keys.metrics.get(i) else {
            out.push(at(
                &m,
                format!("metric {metric}: cannot tell which keys this entry sets {note}"),
            ));
            resolved.push(m);
            continue;
        };
        let set: BTreeSet<&str> = set.keys().map(String::as_str).collect();
        let defining: Vec<&str> = set
            .iter()
            .copied()
            .filter(|k| DEFINING.contains(k))
            .collect();
        let foreign: Vec<&str> = set
            .iter()
            .copied()
            .filter(|k| !DEFINING.contains(k) && !OVERRIDABLE.contains(k))
            .collect();
        if !defining.is_empty() || !foreign.is_empty() {
            let keys = defining.iter().chain(&foreign).map(|k| format!("`{k}`"));
            out.push(at(&m, format!(
                "metric {metric}: {} cannot be set over a template; the query and test are the template's {note}",
                keys.collect::<Vec<_>>().join(", ")
            )));
            resolved.push(m);
            continue;
        }
        if !files.iter().any(|f| Arc::ptr_eq(f, &t.file)) {
            files.push(t.file.clone());
            first_use.push(name.referenced);
        }
        origins.push(Origin {
            places: [m.referenced, name.referenced],
            note,
        });
        let merged = merge(m.value.into_inner(), &set, t, name.referenced);
        resolved.push(Spanned::new(Shared::new(merged), m.referenced, m.defined));
    }
    spec.metrics.value = Shared::new(resolved);
    spec.vars = vars(&spec, &files, &first_use, &mut out);
    if out.is_empty() {
        Ok(Resolved {
            spec,
            files,
            origins,
        })
    } else {
        Err(out)
    }
}

fn unknown(name: &str, catalog: &Catalog) -> String {
    if catalog.is_empty() {
        return format!(
            "unknown template {name:?}: no metric template file is loaded (a file with `kind: {}` among the rule paths)",
            super::catalog::KIND
        );
    }
    let mut known: Vec<&str> = catalog.names().take(20).collect();
    if catalog.len() > known.len() {
        known.push("…");
    }
    format!("unknown template {name:?} (known: {})", known.join(", "))
}

/// The rule's variables: every used template file's defaults, under the rule's own `vars`. A
/// variable a template file leaves `null` must come from the rule; two files disagreeing on a
/// default must be settled by the rule, as canaryd cannot know which one a query meant.
fn vars(
    spec: &RuleSpec,
    files: &[Arc<TemplateFile>],
    first_use: &[Location],
    out: &mut Vec<Finding>,
) -> Vars {
    let mut merged: BTreeMap<String, (String, &Path)> = BTreeMap::new();
    for (file, used_at) in files.iter().zip(first_use) {
        let at_rule = |message: String| super::validate::at_loc(*used_at, message);
        for (key, value) in &file.vars {
            if spec.vars.contains_key(key) {
                continue;
            }
            let here = format!(
                "{}:{}:{}",
                file.path.display(),
                value.referenced.line(),
                value.referenced.column()
            );
            match (&value.value, merged.get(key)) {
                (None, _) => out.push(at_rule(format!(
                    "vars.{key} must be set: the metric templates of {here} need it"
                ))),
                (Some(v), Some((other, path))) if other != v => out.push(at_rule(format!(
                    "vars.{key} defaults to {other:?} in {} and to {v:?} at {here}; set it in the rule's `vars`",
                    path.display()
                ))),
                (Some(v), _) => {
                    merged.insert(key.clone(), (v.clone(), &file.path));
                }
            }
        }
    }
    let mut vars: BTreeMap<String, String> = merged.into_iter().map(|(k, (v, _))| (k, v)).collect();
    vars.extend(
        spec.vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    Vars::from(vars)
}

/// The template's spans, moved to the use site: findings about the merged metric are reported
/// in the rule file (with the template's place in the note). The text itself is shared.
fn moved(s: Option<&Spanned<Text>>, to: Location) -> Option<Spanned<Text>> {
    s.map(|s| Spanned::new(s.value.clone(), to, to))
}

/// The template's metric with every key in `set` taken from the rule's entry `m`.
fn merge(m: MetricSpec, set: &BTreeSet<&str>, t: &Template, to: Location) -> MetricSpec {
    let d = &t.spec.value;
    let MetricSpec {
        name,
        query: _,
        test: _,
        events: _,
        requests: _,
        histogram: _,
        slower_than,
        margin,
        alpha,
        grid,
        max_tick_factor,
        settled_margin,
        settle,
        direction,
        rollback_above,
        rollback_below,
        warn_above,
        warn_below,
        max_ratio,
        max_difference,
        hold_for,
        compare,
        critical,
        allowed_increase,
        allowed_decrease,
        critical_increase,
        critical_decrease,
        nan_strategy,
        outliers,
        outlier_factor,
        tolerance,
        confidence,
        effect_size,
        must_have_data,
        muted,
        group,
        weight,
        template,
        shared: _,
    } = m;
    macro_rules! pick {
        ($key:literal, $field:ident) => {
            if set.contains($key) {
                $field
            } else {
                d.$field.clone()
            }
        };
    }
    MetricSpec {
        name,
        query: moved(d.query.as_ref(), to),
        test: d.test,
        events: moved(d.events.as_deref(), to).map(Box::new),
        requests: moved(d.requests.as_deref(), to).map(Box::new),
        histogram: moved(d.histogram.as_deref(), to).map(Box::new),
        slower_than: pick!("slower_than", slower_than),
        margin: pick!("margin", margin),
        alpha: pick!("alpha", alpha),
        grid: pick!("grid", grid),
        max_tick_factor: pick!("max_tick_factor", max_tick_factor),
        settled_margin: pick!("settled_margin", settled_margin),
        settle: pick!("settle", settle),
        direction: pick!("direction", direction),
        rollback_above: pick!("rollback_above", rollback_above),
        rollback_below: pick!("rollback_below", rollback_below),
        warn_above: pick!("warn_above", warn_above),
        warn_below: pick!("warn_below", warn_below),
        max_ratio: pick!("max_ratio", max_ratio),
        max_difference: pick!("max_difference", max_difference),
        hold_for: pick!("for", hold_for),
        compare: pick!("compare", compare),
        critical: pick!("critical", critical),
        allowed_increase: pick!("allowed_increase", allowed_increase),
        allowed_decrease: pick!("allowed_decrease", allowed_decrease),
        critical_increase: pick!("critical_increase", critical_increase),
        critical_decrease: pick!("critical_decrease", critical_decrease),
        nan_strategy: pick!("nan_strategy", nan_strategy),
        outliers: pick!("outliers", outliers),
        outlier_factor: pick!("outlier_factor", outlier_factor),
        tolerance: pick!("tolerance", tolerance),
        confidence: pick!("confidence", confidence),
        effect_size: pick!("effect_size", effect_size),
        must_have_data: pick!("must_have_data", must_have_data),
        muted: pick!("muted", muted),
        group: pick!("group", group),
        weight: pick!("weight", weight),
        template,
        shared: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key `MetricSpec` accepts is either defining or overridable: serde lists them all in
    /// its unknown-field error, so a field added later fails here until it is placed.
    #[test]
    fn every_metric_key_is_defining_or_overridable() {
        let e = serde_saphyr::from_str::<MetricSpec>("no_such_key: 1\n")
            .expect_err("unknown key")
            .to_string();
        let list = e
            .split("expected one of ")
            .nth(1)
            .expect("serde lists the fields");
        let list = list.lines().next().unwrap_or_default();
        let keys: Vec<&str> = list
            .split(", ")
            .map(|k| k.trim().trim_matches('`'))
            .map(|k| k.split(' ').next().unwrap_or(k))
            .collect();
        assert!(keys.len() > 30, "{e}");
        for k in keys {
            assert!(
                DEFINING.contains(&k) || OVERRIDABLE.contains(&k),
                "MetricSpec key {k:?} is neither defining nor overridable ({e})"
            );
        }
    }
}
