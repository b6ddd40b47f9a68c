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
use std::sync::Arc;

use promql_parser::label::{Labels, MatchOp, Matcher};
use promql_parser::parser::token::T_EQL_REGEX;
use promql_parser::parser::{Expr, LabelModifier, VectorMatchCardinality, VectorSelector};

use super::shape_values::Values;

const METRIC_NAME: &str = "__name__";

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

fn refuse<T>(why: impl Into<String>) -> Result<T, Refused> {
    Err(Refused(why.into()))
}

/// One parsed query with the values of its equality matchers set aside.
#[derive(Debug, Clone)]
pub struct Shape {
    /// The query with every equality matcher's value blanked: two queries with equal keys
    /// differ at most in those values.
    pub key: Arc<str>,
    /// The blanked query, what [`rewrite`] starts from; shared by every query of one key.
    pub(super) expr: Arc<Expr>,
    /// The set-aside values' label names in walk order: fixed by the key, so shared by every
    /// query of one key (the memo holds one shape per query text, 8 per rollout).
    pub(super) names: Arc<[String]>,
    /// The set-aside values, in the order of `names`.
    pub(super) values: Values,
}

impl Shape {
    /// The set-aside values in walk order, each with its label name.
    pub fn values(&self) -> impl Iterator<Item = (&str, &str)> + Clone {
        self.names
            .iter()
            .map(String::as_str)
            .zip(self.values.iter())
    }

    /// The same shape with `names` and the tree shared from another shape of its key.
    pub(super) fn sharing(self, key: Arc<str>, expr: Arc<Expr>, names: Arc<[String]>) -> Shape {
        debug_assert_eq!(*names, *self.names);
        Shape {
            key,
            expr,
            names,
            values: self.values,
        }
    }

    /// The query again, the set-aside values put back (those not batched stay as written).
    fn filled(&self) -> Result<Expr, Refused> {
        let mut expr = (*self.expr).clone();
        let mut values = self.values.iter();
        selectors_mut(&mut expr, &mut |vs| {
            for m in &mut vs.matchers.matchers {
                if m.op == MatchOp::Equal
                    && m.name != METRIC_NAME
                    && let Some(v) = values.next()
                {
                    m.value = v.to_string();
                }
            }
        })?;
        Ok(expr)
    }
}

/// Parses `query` and sets its equality matchers' values aside. `__name__` matchers stay part
/// of the shape (a batch over metric names would be dropped by every aggregation).
pub fn shape(query: &str) -> Result<Shape, Refused> {
    let mut expr = promql_parser::parser::parse(query).or_else(refuse)?;
    let (mut names, mut values) = (Vec::new(), Vec::new());
    let mut bad = None;
    selectors_mut(&mut expr, &mut |vs| {
        if !vs.matchers.or_matchers.is_empty() {
            bad = Some("selector with `or` matchers");
        }
        for m in &mut vs.matchers.matchers {
            if m.op == MatchOp::Equal && m.name != METRIC_NAME {
                names.push(m.name.clone());
                values.push(std::mem::take(&mut m.value));
            }
        }
    })?;
    if let Some(why) = bad {
        return refuse(why);
    }
    Ok(Shape {
        key: expr.to_string().into(),
        expr: Arc::new(expr),
        names: names.into(),
        values: values.into_iter().collect(),
    })
}

/// A member's value of each batch label (in `labels` order), or why it has none: a member that
/// matches one label with two values, or with the empty value (which also matches series
/// without the label), cannot be told apart in a grouped answer.
pub fn member_key(shape: &Shape, labels: &[String]) -> Result<Vec<String>, Refused> {
    labels
        .iter()
        .map(|label| {
            let mut found: Option<&str> = None;
            for (name, value) in shape.values().filter(|(n, _)| n == label) {
                match found {
                    Some(v) if v != value => {
                        return refuse(format!("{name} is matched with two values"));
                    }
                    _ => found = Some(value),
                }
            }
            match found {
                Some("") => refuse(format!("{label} is matched with the empty value")),
                Some(v) => Ok(v.to_string()),
                None => refuse(format!("{label} is not matched")),
            }
        })
        .collect()
}

/// The labels whose values differ between the shapes of one group (same key).
pub fn varying_labels<'a>(shapes: impl IntoIterator<Item = &'a Shape>) -> Vec<String> {
    let mut shapes = shapes.into_iter();
    let Some(first) = shapes.next() else {
        return Vec::new();
    };
    let mut labels = BTreeSet::new();
    for s in shapes {
        for ((name, a), b) in first
            .names
            .iter()
            .zip(first.values.iter())
            .zip(s.values.iter())
        {
            if a != b {
                labels.insert(name.clone());
            }
        }
    }
    labels.into_iter().collect()
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
fn selectors_mut(expr: &mut Expr, f: &mut impl FnMut(&mut VectorSelector)) -> Result<(), Refused> {
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
