//! A parsed query with its equality matchers' values set aside: what tells two queries alike
//! (their key) and what tells the members of a batch apart (their values). The memo
//! (`batch_cache`) keeps one per distinct query text; the rewrite (`batch_rewrite`) starts from
//! its blanked tree.

use std::collections::BTreeSet;
use std::sync::Arc;

use promql_parser::label::MatchOp;
use promql_parser::parser::Expr;

use super::batch_rewrite::{METRIC_NAME, Refused, refuse, selectors_mut};
use super::shape_values::Values;

/// One parsed query with the values of its equality matchers set aside.
#[derive(Debug, Clone)]
pub struct Shape {
    /// What every query of its key shares (the memo hands out one per key).
    pub(super) blanked: Arc<Blanked>,
    /// The set-aside values, in the order of [`Blanked::names`].
    pub(super) values: Values,
}

/// What the queries of one key share: the key, the blanked tree and the value names. One
/// allocation behind one pointer: a live rollout's memo holds 8 shapes, and a key, a tree and
/// the names held by three pointers were 32 bytes more in each (issue 14).
#[derive(Debug)]
pub struct Blanked {
    /// The query with every equality matcher's value blanked: two queries with equal keys
    /// differ at most in those values.
    pub(super) key: Arc<str>,
    /// The blanked query, what [`super::batch_rewrite::rewrite`] starts from.
    expr: Expr,
    /// The set-aside values' label names in walk order: fixed by the key.
    names: Box<[String]>,
}

impl Shape {
    /// The query with every equality matcher's value blanked: two queries with equal keys
    /// differ at most in those values.
    pub fn key(&self) -> &Arc<str> {
        &self.blanked.key
    }

    /// The set-aside values in walk order, each with its label name.
    pub fn values(&self) -> impl Iterator<Item = (&str, &str)> + Clone {
        self.blanked
            .names
            .iter()
            .map(String::as_str)
            .zip(self.values.iter())
    }

    /// The same shape with what its key shares taken from another shape of its key.
    pub(super) fn sharing(self, blanked: Arc<Blanked>) -> Shape {
        debug_assert_eq!(blanked.names, self.blanked.names);
        Shape {
            blanked,
            values: self.values,
        }
    }

    /// The query again, the set-aside values put back (those not batched stay as written).
    pub(super) fn filled(&self) -> Result<Expr, Refused> {
        let mut expr = self.blanked.expr.clone();
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
        blanked: Arc::new(Blanked {
            key: expr.to_string().into(),
            expr,
            names: names.into(),
        }),
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
            .blanked
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
