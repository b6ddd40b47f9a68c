//! A per-process memo of parsed query shapes and rewritten batch queries.
//!
//! A rollout's rendered queries are the same text every tick, and a group's members mostly the
//! same from one tick to the next; parsing tens of thousands of queries (and checking each
//! rewrite by parsing it again) on every tick would cost more CPU than the queries it saves.
//! Both maps are bounded and emptied when full, so rollouts that come and go cannot grow them
//! without end: the worst case is one tick that parses everything again.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use promql_parser::parser::Expr;

use super::batch_rewrite::{Refused, Shape, rewrite, rewrite_wide, shape};

/// Distinct query texts remembered: 10,000 rollouts of 4 window metrics render 80,000, about
/// 300 bytes each with their values.
const MAX_SHAPES: usize = 131_072;
/// Distinct batch queries remembered (one per group and chunk; a few hundred at 10,000
/// rollouts).
const MAX_REWRITES: usize = 4_096;

pub type Parsed = Result<Arc<Shape>, Refused>;

/// What a rewrite depends on: the shape, the values of the positions not batched, and the
/// batched labels' values.
type RewriteKey = (
    Arc<str>,
    Vec<(String, String)>,
    BTreeMap<String, BTreeSet<String>>,
);

#[derive(Default)]
struct Memo {
    shapes: HashMap<String, Parsed>,
    trees: HashMap<Arc<str>, Arc<Expr>>,
    rewrites: HashMap<RewriteKey, Result<String, Refused>>,
}

fn memo() -> MutexGuard<'static, Memo> {
    static MEMO: OnceLock<Mutex<Memo>> = OnceLock::new();
    MEMO.get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The shape of every query, parsing (outside the lock) only texts not seen before.
///
/// Each fresh text is parsed and its tree shared with the memo's before the next is parsed:
/// a parsed tree carries its compiled regex matchers (a few KB), and holding every fresh tree
/// of a first tick at once cost 38 KB per rollout at the peak (77 MB at 2,000 rollouts,
/// BENCHMARKS "Scale"), although the memo keeps one tree per shape.
pub fn shapes(queries: &[&str]) -> Vec<Parsed> {
    let known: Vec<Option<Parsed>> = {
        let m = memo();
        queries.iter().map(|q| m.shapes.get(*q).cloned()).collect()
    };
    known
        .into_iter()
        .zip(queries)
        .map(|(known, query)| known.unwrap_or_else(|| remember(query, shape(query))))
        .collect()
}

/// Files one freshly parsed query, its tree replaced by the memo's one for its key.
fn remember(query: &str, parsed: Result<Shape, Refused>) -> Parsed {
    let mut m = memo();
    if m.shapes.len() >= MAX_SHAPES {
        m.shapes.clear();
        m.trees.clear();
    }
    let parsed = parsed.map(|mut s| {
        // One tree per key, however many queries share it.
        match m.trees.get_key_value(&s.key) {
            Some((key, tree)) => (s.key, s.expr) = (key.clone(), tree.clone()),
            None => {
                m.trees.insert(s.key.clone(), s.expr.clone());
            }
        }
        Arc::new(s)
    });
    m.shapes.insert(query.to_string(), parsed.clone());
    parsed
}

/// [`rewrite`], remembered.
pub fn rewritten(
    shape: &Shape,
    values: &BTreeMap<String, BTreeSet<String>>,
) -> Result<String, Refused> {
    remembered(shape, values, || rewrite(shape, values))
}

/// [`rewrite_wide`], remembered (its key: every batch label with no values, which no regex
/// batch has).
pub fn rewritten_wide(shape: &Shape, labels: &[String]) -> Result<String, Refused> {
    let values: BTreeMap<String, BTreeSet<String>> = labels
        .iter()
        .map(|l| (l.clone(), BTreeSet::new()))
        .collect();
    remembered(shape, &values, || rewrite_wide(shape, labels))
}

fn remembered(
    shape: &Shape,
    values: &BTreeMap<String, BTreeSet<String>>,
    rewrite: impl FnOnce() -> Result<String, Refused>,
) -> Result<String, Refused> {
    let fixed: Vec<(String, String)> = shape
        .values
        .iter()
        .filter(|(label, _)| !values.contains_key(label))
        .cloned()
        .collect();
    let key = (shape.key.clone(), fixed, values.clone());
    if let Some(done) = memo().rewrites.get(&key) {
        return done.clone();
    }
    let done = rewrite();
    let mut m = memo();
    if m.rewrites.len() >= MAX_REWRITES {
        m.rewrites.clear();
    }
    m.rewrites.insert(key, done.clone());
    done
}
