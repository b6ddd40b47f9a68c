//! A per-process memo of parsed query shapes and rewritten batch queries.
//!
//! A rollout's rendered queries are the same text every tick, and a group's members mostly the
//! same from one tick to the next; parsing tens of thousands of queries (and checking each
//! rewrite by parsing it again) on every tick would cost more CPU than the queries it saves.
//! Both maps are bounded and emptied when full, so rollouts that come and go cannot grow them
//! without end: the worst case is one tick that parses everything again.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use super::batch_rewrite::{Refused, Shape, rewrite, rewrite_wide, shape};
use super::batch_shape::Blanked;

/// Distinct query texts remembered: 10,000 rollouts of 4 window metrics render 80,000, each
/// kept as a digest, its shape's shared parts and its own values (about 200 bytes).
const MAX_SHAPES: usize = 131_072;
/// Distinct query keys whose tree is shared: one per metric template in use (a few dozen),
/// bounded so rule reloads that change templates cannot grow it.
const MAX_TREES: usize = 4_096;
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

/// A query text's SHA-256, cut to 128 bits: the memo's key instead of the text, which was
/// most of an entry (a rollout's 8 query texts are ~1.4 KB). Two texts that differ in one
/// value must never share an entry (a member would be given another's series): a collision
/// of 128 bits of SHA-256 is not something a rule file can make.
type Digest = [u8; 16];

fn digest(query: &str) -> Digest {
    use sha2::Digest as _;
    let full = sha2::Sha256::digest(query.as_bytes());
    let mut cut = [0; 16];
    cut.copy_from_slice(&full[..16]);
    cut
}

#[derive(Default)]
struct Memo {
    shapes: HashMap<Digest, Parsed>,
    trees: HashMap<Arc<str>, Arc<Blanked>>,
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
    let digests: Vec<Digest> = queries.iter().map(|q| digest(q)).collect();
    let known: Vec<Option<Parsed>> = {
        let m = memo();
        digests.iter().map(|d| m.shapes.get(d).cloned()).collect()
    };
    known
        .into_iter()
        .zip(queries.iter().zip(digests))
        .map(|(known, (query, d))| known.unwrap_or_else(|| remember(d, shape(query))))
        .collect()
}

/// Files one freshly parsed query, its tree and names replaced by the memo's ones for its key.
fn remember(query: Digest, parsed: Result<Shape, Refused>) -> Parsed {
    let mut m = memo();
    if m.shapes.len() >= MAX_SHAPES {
        m.shapes.clear();
        m.trees.clear();
    }
    let parsed = parsed.map(|s| Arc::new(m.share(s)));
    m.shapes.insert(query, parsed.clone());
    parsed
}

/// The shape of one query, parsed now and not remembered by its text: for a caller that keeps
/// the shape itself for as long as the text stays the same (a live rollout's queries,
/// [`crate::controller::gather_memo`]), so the memo does not hold a second entry per query.
/// Its tree and names are still shared with every other shape of its key.
pub fn parsed(query: &str) -> Parsed {
    let parsed = shape(query);
    let mut m = memo();
    if m.trees.len() >= MAX_TREES {
        m.trees.clear();
    }
    parsed.map(|s| Arc::new(m.share(s)))
}

impl Memo {
    /// `s` with its tree and names replaced by the memo's ones for its key: one tree and one
    /// list of names per key, however many queries share it.
    fn share(&mut self, s: Shape) -> Shape {
        match self.trees.get(s.key()) {
            Some(blanked) => s.sharing(blanked.clone()),
            None => {
                self.trees.insert(s.key().clone(), s.blanked.clone());
                s
            }
        }
    }
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
        .values()
        .filter(|(label, _)| !values.contains_key(*label))
        .map(|(label, value)| (label.to_string(), value.to_string()))
        .collect();
    let key = (shape.key().clone(), fixed, values.clone());
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::shapes;

    #[test]
    fn queries_of_one_key_share_their_tree_and_names_and_keep_their_own_values() {
        let a = r#"sum(rate(memo_test_total{service="a", track="canary"}[1m]))"#;
        let b = r#"sum(rate(memo_test_total{service="b", track="canary"}[1m]))"#;
        let got = shapes(&[a, b]);
        let [Ok(sa), Ok(sb)] = &got[..] else {
            panic!("two shapes: {got:?}");
        };
        let got = shapes(&[a]);
        let [Ok(again)] = &got[..] else {
            panic!("one shape: {got:?}");
        };
        assert!(
            Arc::ptr_eq(sa, again),
            "a text seen before is not parsed again"
        );
        assert!(Arc::ptr_eq(&sa.blanked, &sb.blanked));
        let values = |s: &super::Shape| {
            s.values()
                .map(|(n, v)| format!("{n}={v}"))
                .collect::<Vec<_>>()
        };
        assert_eq!(values(sa), ["service=a", "track=canary"]);
        assert_eq!(values(sb), ["service=b", "track=canary"]);
    }

    /// A live rollout's memo holds 8 shapes: each is a pointer to what its key shares and
    /// its values in one allocation (it was 72 bytes: a key, a tree and names apart, values
    /// as text and ends). Structural, not a measurement.
    #[test]
    fn a_shape_is_a_shared_pointer_and_its_packed_values() {
        assert!(std::mem::size_of::<super::Shape>() <= 24);
    }

    /// A memo keyed by anything coarser than the whole text would give a member another's
    /// shape, and so another service's series.
    #[test]
    fn texts_that_differ_in_one_character_never_share_an_entry() {
        let queries: Vec<String> = (0..2_000)
            .map(|i| format!(r#"sum(memo_digest_total{{service="s{i}"}})"#))
            .collect();
        let refs: Vec<&str> = queries.iter().map(String::as_str).collect();
        // Twice: the second answer comes from the memo.
        shapes(&refs);
        for (i, parsed) in shapes(&refs).into_iter().enumerate() {
            let Ok(s) = parsed else {
                panic!("{i} refused");
            };
            assert_eq!(
                s.values().map(|(_, v)| v).collect::<Vec<_>>(),
                [format!("s{i}")]
            );
        }
    }
}
