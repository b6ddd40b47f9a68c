//! The PromQL half of batching: which queries are alike, how several become one, and how one
//! answer is split back. Pure (no I/O), so every refusal can be tested without a server.
//!
//! The rewrite is sound only when, for every member, the batched query restricted to the series
//! whose batch labels carry the member's values computes exactly the member's own query. That
//! holds when every series the query reads is pinned to one member by equality matchers on every
//! batch label, and every operation that drops labels keeps the batch labels. So [`rewrite`]
//! accepts only: selectors (under an aggregation) that match every batch label by equality,
//! the plain aggregations (`sum avg min max count group stddev stdvar`, with or without `by`),
//! label-preserving functions, arithmetic and comparisons without `on`/`ignoring`/`group_*`.
//! Everything else (`without`, topk and friends, `label_replace`, `scalar`, `vector`, `absent`,
//! set operators, subqueries, `@`) is refused, and the caller asks per member.

use std::collections::{BTreeMap, BTreeSet};

use promql_parser::label::{Labels, MatchOp, Matcher};
use promql_parser::parser::token::T_EQL_REGEX;
use promql_parser::parser::{Expr, LabelModifier, VectorMatchCardinality, VectorSelector};

pub use super::batch_shape::{Shape, member_key, shape, varying_labels};

pub(super) const METRIC_NAME: &str = "__name__";

/// Aggregations that combine a group's series into one without looking at other groups.
const PLAIN_AGGREGATIONS: &[&str] = &[
    "sum", "avg", "min", "max", "count", "group", "stddev", "stdvar",
];

/// Functions that keep every label of their vector argument (some drop `__name__`, and
/// `histogram_quantile` drops `le`; a batch label dropped is caught when the answer is split).
const LABEL_KEEPING_FUNCTIONS: &[&str] = &[
    "rate",
    "irate",
    "increase",
    "delta",
    "idelta",
    "deriv",
    "predict_linear",
    "resets",
    "changes",
    "abs",
    "ceil",
    "floor",
    "round",
    "exp",
    "ln",
    "log2",
    "log10",
    "sqrt",
    "sgn",
    "clamp",
    "clamp_min",
    "clamp_max",
    "histogram_quantile",
    "avg_over_time",
    "min_over_time",
    "max_over_time",
    "sum_over_time",
    "count_over_time",
    "stddev_over_time",
    "stdvar_over_time",
    "last_over_time",
    "quantile_over_time",
];

/// Why a query (or a group of queries) is not batched; it is then asked on its own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not batched: {0}")]
pub struct Refused(pub String);

pub(super) fn refuse<T>(why: impl Into<String>) -> Result<T, Refused> {
    Err(Refused(why.into()))
}

/// One query for a whole group: each batch label's equality matchers become one anchored regex
/// matcher over `values[label]`, and every aggregation groups by the batch labels too. The text
/// is parsed again and must give the rewritten tree, so a printing quirk cannot change meaning.
pub fn rewrite(
    shape: &Shape,
    values: &BTreeMap<String, BTreeSet<String>>,
) -> Result<String, Refused> {
    let labels: Vec<String> = values.keys().cloned().collect();
    let mut regexes = Vec::new();
    for (label, set) in values {
        if set.iter().any(String::is_empty) {
            return refuse(format!("{label} has the empty value"));
        }
        let alternation: Vec<String> = set.iter().map(|v| quote_meta(v)).collect();
        let m = Matcher::new_matcher(T_EQL_REGEX, label.clone(), alternation.join("|"))
            .or_else(refuse)?;
        regexes.push(m);
    }
    rewrite_with(shape, &labels, Some(&regexes))
}

/// One query for a group of any size (the wide mode): the batch labels' equality matchers are
/// dropped instead, so the query reads every value of those labels, and every aggregation
/// groups by them. Sound for the same reason as [`rewrite`] (each member's series are exactly
/// the answer's series carrying its values); the answer also holds series nobody asked for
/// (services not under rollout, series without a batch label), which the split leaves out.
pub fn rewrite_wide(shape: &Shape, labels: &[String]) -> Result<String, Refused> {
    rewrite_with(shape, labels, None)
}

/// `regexes` (one per label, in `labels` order) replace the batch matchers; `None` drops them.
fn rewrite_with(
    shape: &Shape,
    labels: &[String],
    regexes: Option<&[Matcher]>,
) -> Result<String, Refused> {
    if labels.is_empty() {
        return refuse("no label varies");
    }
    if labels.iter().any(|l| l == METRIC_NAME) {
        return refuse("the metric name varies");
    }
    let mut expr = shape.filled()?;
    check(&mut expr, false, labels, regexes)?;
    let text = expr.to_string();
    let again = promql_parser::parser::parse(&text)
        .or_else(|e| refuse(format!("the rewritten query does not parse: {e}")))?;
    if sorted(again)? != sorted(expr)? {
        return refuse("the rewritten query does not print faithfully");
    }
    Ok(text)
}

/// The tree with each selector's matchers in one order: the parser does not keep the written
/// order when it reads the printed query, and the order of ANDed matchers means nothing.
fn sorted(mut expr: Expr) -> Result<Expr, Refused> {
    selectors_mut(&mut expr, &mut |vs| {
        vs.matchers.matchers.sort_by(|a, b| {
            (&a.name, a.op.to_string(), &a.value).cmp(&(&b.name, b.op.to_string(), &b.value))
        });
    })?;
    Ok(expr)
}

/// Walks the tree, refusing what cannot be batched and rewriting what can. `under` is true
/// below an aggregation: a selector outside one would answer raw series.
fn check(
    expr: &mut Expr,
    under: bool,
    labels: &[String],
    regexes: Option<&[Matcher]>,
) -> Result<(), Refused> {
    match expr {
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) => Ok(()),
        Expr::Paren(p) => check(&mut p.expr, under, labels, regexes),
        Expr::Unary(u) => check(&mut u.expr, under, labels, regexes),
        Expr::VectorSelector(vs) => selector(vs, under, labels, regexes),
        Expr::MatrixSelector(ms) => selector(&mut ms.vs, under, labels, regexes),
        Expr::Aggregate(a) => {
            let op = a.op.to_string();
            if !PLAIN_AGGREGATIONS.contains(&op.as_str()) || a.param.is_some() {
                return refuse(format!("aggregation {op}"));
            }
            let mut by = match a.modifier.take() {
                None => Vec::new(),
                Some(LabelModifier::Include(l)) => l.labels,
                Some(LabelModifier::Exclude(_)) => return refuse("aggregation without (...)"),
            };
            for l in labels {
                if !by.contains(l) {
                    by.push(l.clone());
                }
            }
            a.modifier = Some(LabelModifier::Include(Labels { labels: by }));
            check(&mut a.expr, true, labels, regexes)
        }
        Expr::Call(c) => {
            if !LABEL_KEEPING_FUNCTIONS.contains(&c.func.name) {
                return refuse(format!("function {}", c.func.name));
            }
            for arg in &mut c.args.args {
                check(arg, under, labels, regexes)?;
            }
            Ok(())
        }
        Expr::Binary(b) => {
            let op = b.op.to_string();
            if matches!(op.as_str(), "and" | "or" | "unless") {
                return refuse(format!("set operator {op}"));
            }
            if let Some(m) = &b.modifier {
                let fill = m.fill_values.lhs.is_some() || m.fill_values.rhs.is_some();
                if m.matching.is_some() || m.card != VectorMatchCardinality::OneToOne || fill {
                    return refuse("binary operator with on/ignoring/group_*/fill");
                }
            }
            check(&mut b.lhs, under, labels, regexes)?;
            check(&mut b.rhs, under, labels, regexes)
        }
        Expr::Subquery(_) => refuse("subquery"),
        Expr::Extension(_) => refuse("extension expression"),
    }
}

/// Replaces a selector's equality matchers on the batch labels by the batch's regex matchers
/// (or drops them: `None`); every batch label must be matched, or the selector would read other
/// members' series.
fn selector(
    vs: &mut VectorSelector,
    under: bool,
    labels: &[String],
    regexes: Option<&[Matcher]>,
) -> Result<(), Refused> {
    if !under {
        return refuse("a selector outside any aggregation");
    }
    if vs.at.is_some() {
        return refuse("@ modifier");
    }
    for (n, label) in labels.iter().enumerate() {
        let is_batch = |m: &Matcher| m.op == MatchOp::Equal && &m.name == label;
        let Some(first) = vs.matchers.matchers.iter().position(is_batch) else {
            return refuse(format!("a selector does not match {label}"));
        };
        let keep = match regexes.and_then(|r| r.get(n)) {
            Some(re) => {
                vs.matchers.matchers[first] = re.clone();
                Some(first)
            }
            None => None,
        };
        let mut i = 0;
        vs.matchers.matchers.retain(|m| {
            i += 1;
            Some(i - 1) == keep || !is_batch(m)
        });
    }
    Ok(())
}

/// Visits every selector (also inside matrix selectors and subqueries).
pub(super) fn selectors_mut(
    expr: &mut Expr,
    f: &mut impl FnMut(&mut VectorSelector),
) -> Result<(), Refused> {
    match expr {
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) => Ok(()),
        Expr::Paren(p) => selectors_mut(&mut p.expr, f),
        Expr::Unary(u) => selectors_mut(&mut u.expr, f),
        Expr::Subquery(s) => selectors_mut(&mut s.expr, f),
        Expr::Aggregate(a) => {
            if let Some(p) = &mut a.param {
                selectors_mut(p, f)?;
            }
            selectors_mut(&mut a.expr, f)
        }
        Expr::Binary(b) => {
            selectors_mut(&mut b.lhs, f)?;
            selectors_mut(&mut b.rhs, f)
        }
        Expr::Call(c) => c.args.args.iter_mut().try_for_each(|a| selectors_mut(a, f)),
        Expr::VectorSelector(vs) => {
            f(vs);
            Ok(())
        }
        Expr::MatrixSelector(ms) => {
            f(&mut ms.vs);
            Ok(())
        }
        Expr::Extension(_) => refuse("extension expression"),
    }
}

/// `value` as a regex that matches exactly it, in the syntax both RE2 (Prometheus) and Rust's
/// `regex` read the same way: Go's `regexp.QuoteMeta`.
pub fn quote_meta(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 4);
    for c in value.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
