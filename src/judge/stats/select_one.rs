//! The k-th smallest pairwise difference `x[i] − y[j]` for one rank, without materialising the
//! n·m differences: the fallback of the joint selection in `select.rs` for shapes where its
//! interpolation does not converge.
//!
//! With x and y sorted, the differences form a matrix whose rows and columns are sorted, so
//! "how many differences are below p" is one linear two-pointer walk. Selection keeps, per
//! row, a window of columns that may still hold the answer and narrows it Floyd–Rivest style:
//! two pivots drawn from a seeded sample of the remaining candidates bracket the target rank,
//! one walk counts against both pivots, and typically an eighth of the candidates survive each
//! round. Once few candidates remain they are copied out and finished with
//! `select_nth_unstable`. Expected cost O((n + m) · log(n·m / (n + m))) time and O(n + m)
//! memory.

/// Rounds draw at most this many candidates to place their pivots; fewer (about √candidates)
/// when few remain, because a sample costs more than the walk it is meant to save.
const SAMPLE: usize = 1024;

/// Sorted-matrix view: row `i`, column `j` holds `x[i] − y[m−1−j]`, ascending along both.
struct Matrix<'a> {
    x: &'a [f64],
    y: &'a [f64],
}

impl Matrix<'_> {
    fn at(&self, i: usize, j: usize) -> f64 {
        self.x[i] - self.y[self.y.len() - 1 - j]
    }

    /// Per row, the columns `<= a` and the columns `< b`, with both totals, in one walk.
    fn count_pair(&self, a: f64, b: f64, le_a: &mut [usize], lt_b: &mut [usize]) -> (u64, u64) {
        let m = self.y.len();
        let (mut ca, mut cb) = (m, m);
        let (mut ta, mut tb) = (0u64, 0u64);
        for i in 0..le_a.len() {
            let xi = self.x[i];
            while ca > 0 && xi - self.y[m - ca] > a {
                ca -= 1;
            }
            while cb > 0 && xi - self.y[m - cb] >= b {
                cb -= 1;
            }
            le_a[i] = ca;
            lt_b[i] = cb;
            ta += ca as u64;
            tb += cb as u64;
        }
        (ta, tb)
    }

    /// Per row, the number of columns whose value is `< p` (strict) or `<= p`, with the
    /// total. Counts never grow from one row to the next, so one pointer walks the columns
    /// once over all rows.
    fn count(&self, p: f64, strict: bool, out: &mut [usize]) -> u64 {
        let m = self.y.len();
        let mut col = m;
        let mut total = 0u64;
        for (i, slot) in out.iter_mut().enumerate() {
            while col > 0 {
                let v = self.at(i, col - 1);
                let below = if strict { v < p } else { v <= p };
                if below {
                    break;
                }
                col -= 1;
            }
            *slot = col;
            total += col as u64;
        }
        total
    }
}

/// Deterministic generator so that the judge stays a pure function of its input.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        // Multiply-shift: unbiased enough for pivot sampling, no division.
        ((u128::from(self.next()) * u128::from(bound)) >> 64) as u64
    }
}

/// The `k`-th smallest (0-based) of all `x[i] − y[j]`; `x` and `y` ascending, finite and
/// non-empty. `None` when `k` is out of range.
pub(super) fn kth_difference(x: &[f64], y: &[f64], k: u64) -> Option<f64> {
    let (n, m) = (x.len(), y.len());
    let total = (n as u64).checked_mul(m as u64)?;
    if k >= total {
        return None;
    }
    let mat = Matrix { x, y };
    let mut lo = vec![0usize; n];
    let mut hi = vec![m; n];
    let mut cum = vec![0u64; n];
    let (mut lt_a, mut le_a, mut lt_b, mut le_b) = (vec![0; n], vec![0; n], vec![0; n], vec![0; n]);
    let mut rng = SplitMix64(total ^ k.rotate_left(32) ^ 0x5EED);
    let mut sample = Vec::with_capacity(SAMPLE);
    let threshold = (2 * (n + m) as u64).max(1024);
    let mut full = true;
    loop {
        let mut below = 0u64;
        let mut cand = 0u64;
        for i in 0..n {
            below += lo[i] as u64;
            cand += (hi[i] - lo[i]) as u64;
            cum[i] = cand;
        }
        let target = k.checked_sub(below)?;
        if cand <= threshold {
            let mut rest: Vec<f64> = (0..n)
                .flat_map(|i| (lo[i]..hi[i]).map(move |j| (i, j)))
                .map(|(i, j)| mat.at(i, j))
                .collect();
            let t = usize::try_from(target).ok()?;
            if t >= rest.len() {
                return None;
            }
            let (_, v, _) = rest.select_nth_unstable_by(t, f64::total_cmp);
            return Some(*v);
        }
        sample.clear();
        let size = ((cand as f64).sqrt() as usize).clamp(32, SAMPLE);
        for _ in 0..size {
            let r = rng.below(cand);
            let (row, col) = if full {
                // Untouched windows: the candidate's position is plain arithmetic.
                ((r / m as u64) as usize, (r % m as u64) as usize)
            } else {
                let row = cum.partition_point(|&c| c <= r);
                let start = if row == 0 { 0 } else { cum[row - 1] };
                (row, lo[row] + (r - start) as usize)
            };
            sample.push(mat.at(row, col));
        }
        full = false;
        let s = sample.len();
        let pos = ((target as f64 / cand as f64) * s as f64) as usize;
        let delta = 2 * (s as f64).sqrt() as usize;
        let (ia, ib) = (
            pos.saturating_sub(delta).min(s - 1),
            (pos + delta).min(s - 1),
        );
        // Two partial selections instead of a sort: O(s).
        let (_, &mut pb, _) = sample.select_nth_unstable_by(ib, f64::total_cmp);
        let (_, &mut pa, _) = sample[..=ib].select_nth_unstable_by(ia, f64::total_cmp);
        // Common case first: the target lies strictly between the pivots, which one fused
        // walk over both pivots establishes.
        let (n_le_a, n_lt_b) = mat.count_pair(pa, pb, &mut le_a, &mut lt_b);
        if n_le_a <= k && k < n_lt_b {
            clamp_lo(&mut lo, &le_a);
            clamp_hi(&mut hi, &lt_b);
            continue;
        }
        let n_lt_a = mat.count(pa, true, &mut lt_a);
        if k < n_lt_a {
            clamp_hi(&mut hi, &lt_a);
            continue;
        }
        let n_le_a = mat.count(pa, false, &mut le_a);
        if k < n_le_a {
            return Some(pa);
        }
        let n_lt_b = mat.count(pb, true, &mut lt_b);
        if k < n_lt_b {
            clamp_lo(&mut lo, &le_a);
            clamp_hi(&mut hi, &lt_b);
            continue;
        }
        let n_le_b = mat.count(pb, false, &mut le_b);
        if k < n_le_b {
            return Some(pb);
        }
        clamp_lo(&mut lo, &le_b);
    }
}

fn clamp_lo(lo: &mut [usize], bound: &[usize]) {
    for (l, &b) in lo.iter_mut().zip(bound) {
        *l = (*l).max(b);
    }
}

fn clamp_hi(hi: &mut [usize], bound: &[usize]) {
    for (h, &b) in hi.iter_mut().zip(bound) {
        *h = (*h).min(b);
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Every difference, sorted: what a selection must agree with.
    pub(in crate::judge::stats) fn brute(x: &[f64], y: &[f64]) -> Vec<f64> {
        let mut d: Vec<f64> = x
            .iter()
            .flat_map(|a| y.iter().map(move |b| a - b))
            .collect();
        d.sort_unstable_by(f64::total_cmp);
        d
    }

    #[test]
    fn every_rank_matches_the_sorted_differences() {
        let x: Vec<f64> = (0..37).map(|i| ((i * 7919) % 101) as f64 / 3.0).collect();
        let y: Vec<f64> = (0..53).map(|i| ((i * 104_729) % 89) as f64 / 7.0).collect();
        let (mut x, mut y) = (x, y);
        x.sort_unstable_by(f64::total_cmp);
        y.sort_unstable_by(f64::total_cmp);
        let all = brute(&x, &y);
        for (k, want) in all.iter().enumerate() {
            assert_eq!(kth_difference(&x, &y, k as u64), Some(*want), "rank {k}");
        }
        assert_eq!(kth_difference(&x, &y, all.len() as u64), None);
    }

    #[test]
    fn large_inputs_take_the_sampling_path() {
        let mut x: Vec<f64> = (0..400).map(|i| ((i * 7919) % 997) as f64).collect();
        let mut y: Vec<f64> = (0..300)
            .map(|i| ((i * 104_729) % 983) as f64 * 0.5)
            .collect();
        x.sort_unstable_by(f64::total_cmp);
        y.sort_unstable_by(f64::total_cmp);
        let all = brute(&x, &y);
        for k in [0, 1, 5_000, 59_999, 60_000, 100_000, all.len() - 1] {
            assert_eq!(kth_difference(&x, &y, k as u64), Some(all[k]), "rank {k}");
        }
    }
}
