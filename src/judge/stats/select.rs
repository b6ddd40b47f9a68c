//! The k-th smallest pairwise difference `x[i] − y[j]` without materialising the n·m
//! differences.
//!
//! Both the confidence interval and the Hodges–Lehmann estimate are order statistics of the
//! pairwise differences (see `shift.rs`). With x and y sorted, the differences form a matrix
//! whose rows and columns are sorted, so "how many differences are below p" is one linear
//! two-pointer walk. Selection keeps, per row, a window of columns that may still hold the
//! answer and narrows it Floyd–Rivest style: two pivots drawn from a seeded sample of the
//! remaining candidates bracket the target rank, one walk counts against both pivots, and
//! typically an eighth of the candidates survive each round. Once few candidates remain they
//! are copied out and finished with `select_nth_unstable`. Expected cost
//! O((n + m) · log(n·m / (n + m))) time and O(n + m) memory.
//!
//! The classifier needs four such ranks at once (the interval's bounds and the one or two
//! middle ranks of the estimate), and they lie close together; `kth_differences` selects
//! them jointly by interpolation-guided probes and keeps `kth_difference` only as the
//! fallback for shapes where interpolation does not converge.

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
mod tests {
    use super::*;

    fn brute(x: &[f64], y: &[f64]) -> Vec<f64> {
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
