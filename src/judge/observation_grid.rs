//! Many series' points stored together on their step grid: the storage a batch answer's
//! members share (a child of `observation.rs`; [`super::Points`] is one member's view of it).
//!
//! Why: at 10,000 services a wide batch has 20,000 members of 13 points each (2 m window at
//! 10 s steps). Copied out as one `Vec` of 16-byte points per member, a tick's answers were the
//! largest holder of the daemon's peak heap (BENCHMARKS.md, "Scale — session 13"), on top of the
//! window cache's own copy. A range query's points lie on its step grid (`origin + k * step`),
//! so their times need not be kept: a member whose points are exactly on the grid and without
//! a gap is one slice of one `Vec<f64>` (8 bytes a point, one allocation for the whole batch),
//! and the same grid is both the window cache's entry and every member's answer. A member that
//! is not on it (a gap, a time off the grid, a time that is not a whole second) keeps its
//! points as they came. Either way the points read back are bit for bit the points stored: the
//! grid is used only where that holds. Pure data: no I/O, no clock.

use super::Point;

/// The points of each member, in member order; built once, then only read (shared in an `Arc`).
#[derive(Debug)]
pub struct Grid {
    /// The grid: point `k` is at `origin + k * step` (whole seconds).
    origin: i64,
    step: i64,
    /// The values of every member on the grid, member after member.
    values: Vec<f64>,
    spans: Vec<Span>,
    /// The points of members not on the grid, as they came.
    off: Vec<Vec<Point>>,
}

/// Where one member's points are.
#[derive(Debug, Clone, Copy)]
enum Span {
    /// `values[offset..offset + len]`, the first at grid slot `first`.
    Grid { offset: u32, first: u32, len: u32 },
    /// `off[i]`.
    Off(u32),
}

impl Grid {
    /// An empty grid `origin + k * step` with room for `members` members and `total` points in
    /// all (exact when every member is on the grid: no spare room is held).
    pub fn with_capacity(origin: i64, step: i64, members: usize, total: usize) -> Grid {
        Grid {
            origin,
            step,
            values: Vec::with_capacity(total),
            spans: Vec::with_capacity(members),
            off: Vec::new(),
        }
    }

    /// Stores `members`' points (each in full) on the grid `origin + k * step` where they lie
    /// on it. `total` is how many points there are in all.
    pub fn new<'a>(
        origin: i64,
        step: i64,
        total: usize,
        members: impl ExactSizeIterator<Item = &'a [Point]>,
    ) -> Grid {
        let mut grid = Grid::with_capacity(origin, step, members.len(), total);
        for m in members {
            grid.push(m.iter().copied());
        }
        grid
    }

    /// Stores the next member's points; its index is the number of members pushed before.
    pub fn push(&mut self, member: impl Iterator<Item = Point> + Clone) {
        let len = member.clone().count();
        let span = match (
            self.on_grid(member.clone()),
            u32::try_from(self.values.len()),
        ) {
            (Some(first), Ok(offset)) if u32::try_from(len).is_ok() => {
                self.values.extend(member.map(|p| p.value));
                Span::Grid {
                    offset,
                    first,
                    len: len as u32,
                }
            }
            _ => match u32::try_from(self.off.len()) {
                Ok(i) => {
                    self.off.push(member.collect());
                    Span::Off(i)
                }
                // Past 4 billion members: never in a batch (bounded far lower), but a member
                // that cannot be stored reads back empty rather than wrong.
                Err(_) => Span::Grid {
                    offset: 0,
                    first: 0,
                    len: 0,
                },
            },
        };
        self.spans.push(span);
    }

    /// The grid slot of `member`'s first point, when every point is exactly (bit for bit) at
    /// consecutive grid times from there.
    fn on_grid(&self, member: impl Iterator<Item = Point> + Clone) -> Option<u32> {
        let Some(first) = member.clone().next() else {
            return Some(0);
        };
        let t0 = whole(first.at)?;
        let ahead = t0.checked_sub(self.origin)?;
        if ahead < 0 || self.step <= 0 || ahead % self.step != 0 {
            return None;
        }
        let slot = u32::try_from(ahead / self.step).ok()?;
        let mut t = t0;
        for p in member {
            if whole(p.at) != Some(t) {
                return None;
            }
            t = t.checked_add(self.step)?;
        }
        Some(slot)
    }

    /// How many members are stored.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Member `i`'s points as stored; none past the end.
    pub fn member(&self, i: usize) -> Iter<'_> {
        match self.spans.get(i) {
            Some(&Span::Grid { offset, first, len }) => {
                let (offset, len) = (offset as usize, len as usize);
                Iter::Grid {
                    // Checked when stored: no point's time overflowed.
                    at: self
                        .origin
                        .saturating_add(i64::from(first).saturating_mul(self.step)),
                    step: self.step,
                    values: self.values[offset..offset + len].iter(),
                }
            }
            Some(&Span::Off(j)) => Iter::Off(self.off[j as usize].iter()),
            None => Iter::Off([].iter()),
        }
    }

    /// Bytes held on the heap, every member's together (what the benchmark notes count).
    pub fn heap_bytes(&self) -> usize {
        self.values.capacity() * size_of::<f64>()
            + self.spans.capacity() * size_of::<Span>()
            + self.off.capacity() * size_of::<Vec<Point>>()
            + self
                .off
                .iter()
                .map(|o| o.capacity() * size_of::<Point>())
                .sum::<usize>()
    }
}

/// `at` as whole seconds, when it is exactly one (bit for bit: `-0.0` is not `0`).
fn whole(at: f64) -> Option<i64> {
    // Within ±2^53 every whole second is exact as an `f64`, and the cast cannot saturate.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    if !(-EXACT..=EXACT).contains(&at) {
        return None;
    }
    let t = at as i64;
    ((t as f64).to_bits() == at.to_bits()).then_some(t)
}

/// One member's points, read back in order, each with its time.
#[derive(Debug, Clone)]
pub enum Iter<'a> {
    Grid {
        at: i64,
        step: i64,
        values: std::slice::Iter<'a, f64>,
    },
    Off(std::slice::Iter<'a, Point>),
}

impl Iterator for Iter<'_> {
    type Item = Point;

    fn next(&mut self) -> Option<Point> {
        match self {
            Iter::Grid { at, step, values } => {
                let value = *values.next()?;
                let p = Point {
                    at: *at as f64,
                    value,
                };
                *at = at.saturating_add(*step);
                Some(p)
            }
            Iter::Off(points) => points.next().copied(),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self {
            Iter::Grid { values, .. } => values.size_hint(),
            Iter::Off(points) => points.size_hint(),
        }
    }
}

impl ExactSizeIterator for Iter<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(at: f64, value: f64) -> Point {
        Point { at, value }
    }

    fn grid(from: i64, n: i64, step: i64) -> Vec<Point> {
        (0..n)
            .map(|k| p((from + k * step) as f64, k as f64 * 0.5 - 1.0))
            .collect()
    }

    fn stored(points: &Grid) -> Vec<Vec<Point>> {
        (0..points.len())
            .map(|i| points.member(i).collect())
            .collect()
    }

    /// Compares bit for bit (`NaN` payloads, `-0.0`), which `PartialEq` on `f64` does not.
    fn bits(members: &[Vec<Point>]) -> Vec<Vec<(u64, u64)>> {
        members
            .iter()
            .map(|m| {
                m.iter()
                    .map(|p| (p.at.to_bits(), p.value.to_bits()))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn points_on_and_off_the_grid_read_back_bit_for_bit() {
        let odd_nan = f64::from_bits(0x7ff8_0000_0000_0042);
        let members = vec![
            grid(880, 13, 10),
            vec![],
            grid(950, 6, 10),
            // NaN and -0.0 values on the grid.
            vec![p(880.0, f64::NAN), p(890.0, -0.0), p(900.0, odd_nan)],
            // A gap (no point at 900).
            vec![p(880.0, 1.0), p(890.0, 2.0), p(910.0, 3.0)],
            // Off the grid by half a second, by 5 s, before the origin.
            vec![p(880.5, 1.0), p(890.5, 2.0)],
            vec![p(885.0, 1.0), p(895.0, 2.0)],
            vec![p(870.0, 1.0), p(880.0, 2.0)],
            // Times that are not whole seconds in any sense.
            vec![p(-0.0, 1.0)],
            vec![p(f64::NAN, 1.0), p(f64::INFINITY, 2.0)],
            vec![p(1e300, 1.0)],
            // Out of order.
            vec![p(890.0, 1.0), p(880.0, 2.0)],
        ];
        let total = members.iter().map(Vec::len).sum();
        let points = Grid::new(880, 10, total, members.iter().map(Vec::as_slice));
        assert_eq!(bits(&stored(&points)), bits(&members));
        assert_eq!(points.member(members.len()).count(), 0, "none past the end");
        assert_eq!(
            points.off.len(),
            8,
            "only the gap, the off-grid, odd and unordered times are kept as points"
        );
    }

    #[test]
    fn extreme_grids_never_panic_and_read_back_what_was_stored() {
        for (origin, step) in [
            (i64::MAX, 1),
            (i64::MIN, i64::MAX),
            (0, 0),
            (0, -10),
            (-(1 << 53), 1 << 52),
            (0, 10),
        ] {
            let members = [
                vec![p(0.0, 1.0), p(10.0, 2.0)],
                vec![p(9_007_199_254_740_992.0, 1.0)],
                // On the grid but for its sign: read back as `0.0` it would not be the same.
                vec![p(-0.0, 1.0), p(10.0, 2.0)],
            ];
            let points = Grid::new(origin, step, 5, members.iter().map(Vec::as_slice));
            assert_eq!(bits(&stored(&points)), bits(&members), "{origin} {step}");
        }
    }

    #[test]
    fn points_on_the_grid_take_8_bytes_each_in_one_allocation() {
        let members: Vec<Vec<Point>> = (0..1000).map(|_| grid(880, 13, 10)).collect();
        let points = Grid::new(880, 10, 13_000, members.iter().map(Vec::as_slice));
        assert!(points.off.is_empty());
        assert_eq!(points.values.capacity(), 13_000);
        assert_eq!(
            points.heap_bytes(),
            13_000 * 8 + 1000 * size_of::<Span>(),
            "as 1000 vectors of points it was {} bytes",
            13_000 * size_of::<Point>()
        );
    }
}
