//! The k-th smallest pairwise differences `x[i] − y[j]` for several close ranks at once,
//! without materialising the n·m differences.
//!
//! Both the confidence interval and the Hodges–Lehmann estimate are order statistics of the
//! pairwise differences (see `shift.rs`). With x and y sorted, the differences form a matrix
//! whose rows and columns are sorted, so "how many differences are below p" is one linear
//! two-pointer walk. The classifier needs four such ranks at once (the interval's bounds and
//! the one or two middle ranks of the estimate), and they lie close together;
//! `kth_differences` selects them jointly by interpolation-guided probes and keeps
//! `select_one::kth_difference` (Floyd–Rivest sampling, one rank) only as the fallback for
//! shapes where interpolation does not converge.

use super::select_one::kth_difference;

/// What one counting walk learns about a pivot `p`: how many differences are `<= p`, the
/// largest of those and the smallest difference above `p` (infinite when there is none).
#[derive(Debug, Clone, Copy)]
struct Probe {
    p: f64,
    le: u64,
    below: f64,
    above: f64,
}

/// Most pivots one walk evaluates.
const MAX_PIVOTS: usize = 8;

/// Probes every pivot of `ps` with one pointer into `y` per pivot that only moves forward as
/// the walk goes down the rows of `x`: O(n + m) per pivot. Pivots go in groups of up to four
/// per walk, unrolled so that pointers, counts and neighbours stay in registers and the
/// groups' independent pointer chases overlap. Comparisons are on the computed differences
/// `x[i] − y[j]`, which are monotone in both indices, so counts and neighbours are those of
/// the actual values.
fn probe(x: &[f64], y: &[f64], ps: &[f64], out: &mut [Probe]) {
    for (o, p) in out.chunks_mut(4).zip(ps.chunks(4)) {
        match *p {
            [a] => o.copy_from_slice(&probe_group(x, y, [a])),
            [a, b] => o.copy_from_slice(&probe_group(x, y, [a, b])),
            [a, b, c] => o.copy_from_slice(&probe_group(x, y, [a, b, c])),
            [a, b, c, d] => o.copy_from_slice(&probe_group(x, y, [a, b, c, d])),
            _ => {}
        }
    }
}

fn probe_group<const P: usize>(x: &[f64], y: &[f64], ps: [f64; P]) -> [Probe; P] {
    let m = y.len();
    // Per pivot: y-index of the first difference <= p in the current row (differences fall
    // along a row as y grows), the count <= p, the largest such and the smallest above.
    let mut g = [0usize; P];
    let mut le = [0u64; P];
    let mut below = [f64::NEG_INFINITY; P];
    let mut above = [f64::INFINITY; P];
    for &xi in x {
        for q in 0..P {
            let p = ps[q];
            let mut j = g[q];
            while j < m && xi - y[j] > p {
                j += 1;
            }
            g[q] = j;
            le[q] += (m - j) as u64;
            if let Some(&yj) = y.get(j) {
                below[q] = below[q].max(xi - yj);
            }
            if let Some(&yj) = j.checked_sub(1).and_then(|i| y.get(i)) {
                above[q] = above[q].min(xi - yj);
            }
        }
    }
    std::array::from_fn(|q| Probe {
        p: ps[q],
        le: le[q],
        below: below[q],
        above: above[q],
    })
}

/// The differences in `(a, b]` (pass −∞ for no lower limit), appended to `out`: one walk with
/// two pointers per row.
fn gather(x: &[f64], y: &[f64], a: f64, b: f64, out: &mut Vec<f64>) {
    let (mut ga, mut gb) = (0usize, 0usize);
    for &xi in x {
        while let Some(&yj) = y.get(gb) {
            if xi - yj > b {
                gb += 1;
            } else {
                break;
            }
        }
        ga = ga.max(gb);
        while let Some(&yj) = y.get(ga) {
            if xi - yj > a {
                ga += 1;
            } else {
                break;
            }
        }
        out.extend(y[gb..ga].iter().map(|&yj| xi - yj));
    }
}

/// One rank being selected: the tightest known values `a < answer <= b` (as probes: `a.le`
/// differences are `<= a`, at most `k`; more than `k` are `<= b`).
#[derive(Debug, Clone, Copy)]
struct Target {
    k: u64,
    a: Probe,
    b: Probe,
    /// Rank spread to aim the next pair of pivots at, around the interpolated position.
    spread: u64,
    /// The last round shrank the bracket less than fourfold.
    stalled: bool,
    done: Option<f64>,
}

impl Target {
    fn learn(&mut self, pr: &Probe) {
        if pr.le <= self.k {
            if pr.le >= self.a.le {
                self.a = *pr;
            }
        } else if pr.le <= self.b.le {
            self.b = *pr;
        }
    }

    /// The answer when the bracket pins it down without gathering.
    fn settle(&mut self) {
        let (count, t) = (self.b.le - self.a.le, self.k - self.a.le);
        // Smallest and largest candidate in (a, b].
        let (first, last) = (self.a.above, self.b.below);
        if t == 0 {
            self.done = Some(first);
        } else if t + 1 == count || first == last {
            self.done = Some(last);
        }
    }
}

/// Largest number of candidates gathered and finished by `select_nth_unstable`.
fn gather_limit(n: usize, m: usize) -> u64 {
    (n + m).max(64) as u64
}

/// The `ks[r]`-th smallest (0-based) of all `x[i] − y[j]` for every `r`, selected together:
/// the ranks the interval and the estimate need lie close to each other, so every walk probes
/// pivots for all of them and every probe narrows all of them. Pivots come from a normal
/// approximation first and then from interpolation between the closest probes, aimed a little
/// below and above the target rank so that the bracket closes from both sides; once at most
/// `n + m` candidates remain they are gathered in one walk and finished by selection. After a
/// few rounds without convergence (pathological shapes) each rank falls back to the sampling
/// selection of [`kth_difference`]. `x` and `y` ascending, finite and non-empty; `None` when a
/// rank is out of range.
pub(super) fn kth_differences<const K: usize>(
    x: &[f64],
    y: &[f64],
    ks: [u64; K],
) -> Option<[f64; K]> {
    let (n, m) = (x.len(), y.len());
    let total = (n as u64).checked_mul(m as u64)?;
    if n == 0 || m == 0 || ks.iter().any(|&k| k >= total) {
        return None;
    }
    let lowest = Probe {
        p: f64::NEG_INFINITY,
        le: 0,
        below: f64::NEG_INFINITY,
        above: x[0] - y[m - 1],
    };
    let highest = Probe {
        p: f64::INFINITY,
        le: total,
        below: x[n - 1] - y[0],
        above: f64::INFINITY,
    };
    let limit = gather_limit(n, m);
    let mut targets = ks.map(|k| Target {
        k,
        a: lowest,
        b: highest,
        spread: 0,
        stalled: false,
        done: None,
    });
    for t in targets.iter_mut() {
        t.settle();
    }
    let mut pivots: Vec<f64> = Vec::with_capacity(MAX_PIVOTS);
    let mut probes = [lowest; MAX_PIVOTS];
    // Round 0: normal approximation of the difference distribution.
    {
        let centre = median_sorted(x) - median_sorted(y);
        let spread = (scale_sorted(x).powi(2) + scale_sorted(y).powi(2)).sqrt();
        let open = || targets.iter().filter(|t| t.done.is_none());
        let (Some(k_lo), Some(k_hi)) = (open().map(|t| t.k).min(), open().map(|t| t.k).max())
        else {
            return targets
                .map(|t| t.done)
                .into_iter()
                .collect::<Option<Vec<_>>>()?
                .try_into()
                .ok();
        };
        // The outermost ranks also get a pivot beyond them, so that every rank starts
        // bracketed by nearby probes on both sides.
        let margin = ((k_hi - k_lo) / 4).max(total / 64);
        let mut ranks: Vec<u64> = open()
            .map(|t| t.k)
            .chain([k_lo.saturating_sub(margin), (k_hi + margin).min(total - 1)])
            .collect();
        ranks.sort_unstable();
        // Adjacent ranks (the two middle ones of an even count) share their pivot.
        ranks.dedup_by(|b, a| *b <= *a + 1);
        for k in ranks {
            let q = super::rank_sum::normal_quantile((k as f64 + 0.5) / total as f64);
            let p = centre + q * spread;
            if p.is_finite() {
                pivots.push(p);
            }
        }
    }
    let mut rounds = 0;
    loop {
        pivots.sort_unstable_by(f64::total_cmp);
        pivots.dedup();
        pivots.truncate(MAX_PIVOTS);
        if !pivots.is_empty() {
            let used = pivots.len();
            probe(x, y, &pivots, &mut probes[..used]);
            for t in targets.iter_mut().filter(|t| t.done.is_none()) {
                let before = t.b.le - t.a.le;
                for pr in &probes[..used] {
                    t.learn(pr);
                }
                let after = t.b.le - t.a.le;
                // Aim about a sixteenth of the bracket either side of the interpolated rank;
                // a round that did not shrink the bracket fourfold (a staircase of tied or
                // nearly tied differences defeats interpolation) multisects by value instead.
                t.stalled = after * 4 > before;
                t.spread = after / 16;
                t.settle();
            }
        }
        pivots.clear();
        rounds += 1;
        let open = targets.iter().filter(|t| t.done.is_none()).count();
        if open == 0 {
            break;
        }
        if rounds > 8 {
            for t in targets.iter_mut().filter(|t| t.done.is_none()) {
                t.done = Some(kth_difference(x, y, t.k)?);
            }
            break;
        }
        let mut any_gather = false;
        let mut brackets = 0usize;
        for i in 0..K {
            let t = targets[i];
            let shared = targets[..i]
                .iter()
                .any(|u| u.a.le == t.a.le && u.b.le == t.b.le);
            if t.done.is_none() && t.b.le - t.a.le > limit && !shared {
                brackets += 1;
            }
        }
        let budget = (MAX_PIVOTS / brackets.max(1)).max(1);
        for i in 0..K {
            let t = targets[i];
            if t.done.is_some() {
                continue;
            }
            let count = t.b.le - t.a.le;
            if count <= limit {
                any_gather = true;
                continue;
            }
            if targets[..i]
                .iter()
                .any(|u| u.a.le == t.a.le && u.b.le == t.b.le)
            {
                continue;
            }
            // The smallest and largest candidate; pivots in [first, last) all make progress.
            let (first, last) = (t.a.above, t.b.below);
            let span = last - first;
            let room = budget.min(MAX_PIVOTS - pivots.len());
            let mut push = |p: f64| {
                if p >= first && p < last {
                    pivots.push(p);
                }
            };
            if t.stalled {
                for q in 1..=room {
                    push(first + span * (q as f64 / (room + 1) as f64));
                }
                continue;
            }
            let spread = t.spread.max(limit / 4);
            let off = t.k - t.a.le;
            let at = |r: u64| first + ((r as f64 + 0.5) / count as f64) * span;
            let lo = off.saturating_sub(spread);
            let hi = off + spread;
            if room >= 2 && lo > 0 && hi + 1 < count {
                push(at(lo));
                push(at(hi));
            } else if room >= 1 {
                push(at(off));
            }
        }
        if any_gather {
            let mut buf = Vec::new();
            for i in 0..K {
                let t = targets[i];
                if t.done.is_some() || t.b.le - t.a.le > limit {
                    continue;
                }
                buf.clear();
                gather(x, y, t.a.p, t.b.p, &mut buf);
                let off = usize::try_from(t.k - t.a.le).ok()?;
                if buf.len() as u64 != t.b.le - t.a.le || off >= buf.len() {
                    return None;
                }
                let (_, v, _) = buf.select_nth_unstable_by(off, f64::total_cmp);
                let v = *v;
                targets[i].done = Some(v);
                // Other ranks with the same bracket read their answer from the same buffer.
                for u in targets[i + 1..].iter_mut() {
                    if u.done.is_none() && u.a.le == t.a.le && u.b.le == t.b.le {
                        let off_u = usize::try_from(u.k - u.a.le).ok()?;
                        let w = if off_u == off {
                            v
                        } else if off_u == off + 1 {
                            buf[off + 1..].iter().copied().min_by(f64::total_cmp)?
                        } else {
                            *buf.select_nth_unstable_by(off_u, f64::total_cmp).1
                        };
                        u.done = Some(w);
                    }
                }
            }
        }
    }
    let mut out = [0.0; K];
    for (o, t) in out.iter_mut().zip(targets.iter()) {
        *o = t.done?;
    }
    Some(out)
}

fn median_sorted(v: &[f64]) -> f64 {
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        v[n / 2 - 1] + (v[n / 2] - v[n / 2 - 1]) / 2.0
    }
}

/// Standard deviation estimated from the interquartile range (robust to the tails).
fn scale_sorted(v: &[f64]) -> f64 {
    let n = v.len();
    (v[((3 * n) / 4).min(n - 1)] - v[n / 4]) / 1.349
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::stats::select_one::tests::brute;

    fn sorted(mut v: Vec<f64>) -> Vec<f64> {
        v.sort_unstable_by(f64::total_cmp);
        v
    }

    fn check_joint(x: &[f64], y: &[f64]) {
        let all = brute(x, y);
        let last = all.len() as u64 - 1;
        let mid = last / 2;
        let picks = [0, 1, mid / 3, mid, mid + 1, mid + mid / 5, last - 1, last];
        for w in picks.windows(4) {
            let ks = [w[0], w[1], w[2], w[3]];
            let got = kth_differences(x, y, ks).expect("in range");
            for (k, v) in ks.iter().zip(got) {
                assert_eq!(v, all[*k as usize], "rank {k} of {}", all.len());
            }
        }
        assert_eq!(kth_differences(x, y, [last + 1]), None);
    }

    #[test]
    fn joint_selection_matches_the_sorted_differences() {
        // Smooth, tie-heavy, heavy-tailed, lopsided sizes and a constant side.
        let smooth: Vec<f64> = (0..300).map(|i| ((i * 7919) % 1009) as f64 / 7.0).collect();
        let other: Vec<f64> = (0..250)
            .map(|i| ((i * 104_729) % 997) as f64 / 5.0)
            .collect();
        check_joint(&sorted(smooth.clone()), &sorted(other.clone()));
        let ties: Vec<f64> = (0..400).map(|i| ((i * 31) % 7) as f64).collect();
        let ties2: Vec<f64> = (0..350).map(|i| ((i * 17) % 5) as f64 * 1.5).collect();
        check_joint(&sorted(ties), &sorted(ties2));
        let tail: Vec<f64> = (1..500).map(|i| 1.0 / (i as f64).powi(3)).collect();
        let tail2: Vec<f64> = (1..450).map(|i| (i as f64).exp().min(1e300)).collect();
        check_joint(&sorted(tail), &sorted(tail2));
        check_joint(&sorted(smooth[..3].to_vec()), &sorted(other.clone()));
        check_joint(&[5.0; 40], &sorted(other));
        check_joint(&[1.0, 2.0], &[0.5, 3.0]);
    }
}
