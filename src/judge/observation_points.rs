//! One series' points as the judge reads them: its own, or a view of a [`Grid`] that a whole
//! batch answer shares (a child of `observation.rs`).
//!
//! Why a view: a batched member's points are already stored once, compactly, in the window
//! cache's grid of the answer they came in; a copy per member (16 bytes a point, one vector
//! each, 80,000 of them a tick at 10,000 rollouts) was held by every rollout from the gathering
//! to its judging, most of them at once while they waited for their pacer turn. A view is an
//! `Arc` and a member index: the points are shared, read-only, and freed with the last view
//! (or the cache entry) that holds them. Readers see no difference: the same points, bit for
//! bit, in the same order, and the same serialised form (a sequence of points) either way.

use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Point;
use super::grid::{Grid, Iter};

/// The points of one series, in time order as the source gave them.
#[derive(Clone, Default)]
pub struct Points(Repr);

#[derive(Clone)]
enum Repr {
    /// Points of their own: an unbatched query, a fallback, a test.
    Own(Vec<Point>),
    /// Member `member` of a shared batch answer.
    View { grid: Arc<Grid>, member: u32 },
}

impl Default for Repr {
    fn default() -> Self {
        Repr::Own(Vec::new())
    }
}

impl Points {
    /// Member `member`'s points of `grid`, shared, not copied; `None` past the grid's end or past
    /// what a view can name (4 billion members: never a batch).
    pub fn view(grid: &Arc<Grid>, member: usize) -> Option<Points> {
        let index = u32::try_from(member).ok()?;
        (member < grid.len()).then(|| {
            Points(Repr::View {
                grid: Arc::clone(grid),
                member: index,
            })
        })
    }

    /// The points in order, each with its time.
    pub fn iter(&self) -> Iter<'_> {
        match &self.0 {
            Repr::Own(points) => Iter::Off(points.iter()),
            Repr::View { grid, member } => grid.member(*member as usize),
        }
    }

    pub fn len(&self) -> usize {
        self.iter().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of the points as a vector of their own.
    pub fn to_vec(&self) -> Vec<Point> {
        self.iter().collect()
    }

    /// The grid this is a view of, if it is one (tests check what is shared).
    pub fn shared(&self) -> Option<&Arc<Grid>> {
        match &self.0 {
            Repr::Own(_) => None,
            Repr::View { grid, .. } => Some(grid),
        }
    }

    /// Heap bytes this series holds alone: its own points' allocation; nothing for a view,
    /// whose grid is counted once for all its members ([`Grid::heap_bytes`]).
    pub fn own_heap_bytes(&self) -> usize {
        match &self.0 {
            Repr::Own(points) => points.capacity() * size_of::<Point>(),
            Repr::View { .. } => 0,
        }
    }
}

impl From<Vec<Point>> for Points {
    fn from(points: Vec<Point>) -> Self {
        Points(Repr::Own(points))
    }
}

impl FromIterator<Point> for Points {
    fn from_iter<I: IntoIterator<Item = Point>>(iter: I) -> Self {
        Points(Repr::Own(iter.into_iter().collect()))
    }
}

impl<'a> IntoIterator for &'a Points {
    type Item = Point;
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

/// Point by point, as two vectors compare: a view equals its own copy.
impl PartialEq for Points {
    fn eq(&self, other: &Points) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

/// As the vector of points it reads as, so logs and test failures look as before.
impl std::fmt::Debug for Points {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// As a sequence of points, byte for byte what a `Vec<Point>` gives.
impl Serialize for Points {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for Points {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<Point>::deserialize(d).map(Points::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(at: f64, value: f64) -> Point {
        Point { at, value }
    }

    fn bits(points: impl IntoIterator<Item = Point>) -> Vec<(u64, u64)> {
        points
            .into_iter()
            .map(|p| (p.at.to_bits(), p.value.to_bits()))
            .collect()
    }

    /// Members on the grid, off it, with a gap, with NaN and `-0.0`, and empty.
    fn members() -> Vec<Vec<Point>> {
        let odd_nan = f64::from_bits(0x7ff8_0000_0000_0042);
        vec![
            (0..13)
                .map(|k| p(880.0 + 10.0 * k as f64, k as f64))
                .collect(),
            vec![p(900.0, f64::NAN), p(910.0, -0.0), p(920.0, odd_nan)],
            vec![p(880.5, 1.0), p(890.5, 2.0)],
            vec![p(880.0, 1.0), p(890.0, 2.0), p(910.0, 3.0)],
            vec![],
            (0..4).map(|k| p(960.0 + 10.0 * k as f64, -1.5)).collect(),
        ]
    }

    fn grid(members: &[Vec<Point>]) -> Arc<Grid> {
        let total = members.iter().map(Vec::len).sum();
        Arc::new(Grid::new(880, 10, total, members.iter().map(Vec::as_slice)))
    }

    #[test]
    fn each_view_reads_back_its_own_member_bit_for_bit() {
        let members = members();
        let grid = grid(&members);
        for (i, m) in members.iter().enumerate() {
            let view = Points::view(&grid, i).expect("within the grid");
            assert_eq!(bits(&view), bits(m.iter().copied()), "member {i}");
            assert_eq!(view.len(), m.len(), "member {i}");
            assert_eq!(view.to_vec().len(), m.len());
            let own = Points::from(m.clone());
            assert_eq!(bits(&own), bits(m.iter().copied()));
            if m.iter().all(|p| !p.value.is_nan()) {
                assert_eq!(view, own, "a view equals its own copy");
            }
        }
        assert!(
            Points::view(&grid, members.len()).is_none(),
            "none past the end"
        );
    }

    #[test]
    fn views_serialise_and_print_as_the_vectors_they_read_as() {
        let members = members();
        let grid = grid(&members);
        for (i, m) in members.iter().enumerate() {
            let view = Points::view(&grid, i).expect("within the grid");
            assert_eq!(
                serde_json::to_string(&view).expect("json"),
                serde_json::to_string(m).expect("json"),
                "member {i}"
            );
            assert_eq!(format!("{view:?}"), format!("{m:?}"));
            // JSON writes NaN as `null`, which no `f64` reads back (as for a vector).
            if m.iter().all(|p| p.value.is_finite()) {
                let back: Points = serde_json::from_str(&serde_json::to_string(m).expect("json"))
                    .expect("reads back");
                assert_eq!(bits(&back), bits(m.iter().copied()));
            }
        }
    }

    #[test]
    fn a_view_holds_no_points_of_its_own() {
        let members = members();
        let grid = grid(&members);
        let views: Vec<Points> = (0..members.len())
            .map(|i| Points::view(&grid, i).expect("within the grid"))
            .collect();
        assert!(views.iter().all(|v| v.own_heap_bytes() == 0));
        assert!(
            views
                .iter()
                .all(|v| v.shared().is_some_and(|g| Arc::ptr_eq(g, &grid)))
        );
        assert_eq!(Arc::strong_count(&grid), 1 + members.len());
        assert!(size_of::<Points>() <= 24, "{}", size_of::<Points>());
        drop(views);
        assert_eq!(
            Arc::strong_count(&grid),
            1,
            "every view lets go of the grid"
        );
    }
}
