#!/usr/bin/env python3
"""Generate tests/fixtures/mann_whitney_reference.json, the reference values that
tests/it/stats_reference.rs checks canaryd's rank statistics against.

Why a script and a committed file: CI has no Python, but the numbers must come from an
implementation that shares nothing with the Rust code. U and the p-value come from SciPy's
mannwhitneyu (asymptotic, continuity correction, two-sided). The confidence interval and
estimate are a direct transcription of R's wilcox.test(conf.int = TRUE, exact = FALSE,
correct = TRUE): the standardised statistic wdiff(d, zq) is computed by ranking the pooled
sample (x - d, y) at every evaluation, and its sign change is found with scipy's brentq at a
tolerance of 1e-13 of the search range instead of R's absolute 1e-4 (which is meaningless for
metrics around 1e-5). R's estimate is the root of wdiff(d, 0) without continuity correction;
where that function is zero on a whole stretch (an even number of pairwise differences) R's
answer depends on its iteration path, so the reference takes the midpoint of the stretch,
found as the two roots of wdiff(d, 0) -/+ 1e-12, and checks it against the median of all
pairwise differences.

Run: python3 scripts/mann_whitney_reference.py  (needs numpy and scipy; deterministic)
"""

import json
import os

import numpy as np
from scipy import optimize, stats


def wdiff(x, y, d, zq, correct):
    """R's wdiff: standardised rank-sum statistic of (x - d) against y, minus zq."""
    n, m = len(x), len(y)
    dr = stats.rankdata(np.concatenate([x - d, y]))
    _, nties = np.unique(np.concatenate([x - d, y]), return_counts=True)
    dz = dr[:n].sum() - n * (n + 1) / 2 - n * m / 2
    corr = np.sign(dz) * 0.5 if correct else 0.0
    sigma = np.sqrt((n * m / 12) * ((n + m + 1) - np.sum(nties**3 - nties) / ((n + m) * (n + m - 1))))
    if sigma == 0:
        raise ValueError("all observations tied")
    return (dz - corr) / sigma - zq


def root(x, y, zq, correct, mumin, mumax):
    f = lambda d: wdiff(x, y, d, zq, correct)
    if f(mumin) <= 0:
        return mumin
    if f(mumax) >= 0:
        return mumax
    xtol = max(1e-13 * (mumax - mumin), 1e-300)
    return optimize.brentq(f, mumin, mumax, xtol=xtol, rtol=4 * np.finfo(float).eps, maxiter=1000)


def r_interval(x, y, conf):
    mumin, mumax = x.min() - y.max(), x.max() - y.min()
    z = stats.norm.ppf(1 - (1 - conf) / 2)
    lower = root(x, y, z, True, mumin, mumax)
    upper = root(x, y, -z, True, mumin, mumax)
    eps = 1e-12
    f = lambda d, off: wdiff(x, y, d, 0.0, False) + off
    xtol = max(1e-13 * (mumax - mumin), 1e-300)
    left = optimize.brentq(f, mumin, mumax, args=(-eps,), xtol=xtol, rtol=4 * np.finfo(float).eps)
    right = optimize.brentq(f, mumin, mumax, args=(eps,), xtol=xtol, rtol=4 * np.finfo(float).eps)
    estimate = (left + right) / 2
    median = np.median(np.subtract.outer(x, y))
    assert abs(estimate - median) <= 1e-9 * (mumax - mumin), (estimate, median)
    return lower, upper, estimate


def cases():
    rng = np.random.default_rng(20240611)
    out = []

    def add(name, x, y, conf=0.95):
        out.append((name, np.asarray(x, dtype=float), np.asarray(y, dtype=float), conf))

    add("kayenta_doc_example", [10, 20, 30, 40], [1, 2, 3, 4])
    add("tiny_three_each_separated", [4, 5, 6], [1, 2, 3], 0.99)
    add("tiny_three_each_overlapping", [1.5, 2.5, 3.5], [1, 2, 3])
    for i, (n, m) in enumerate([(3, 3), (4, 7), (5, 5), (8, 3), (10, 12), (15, 9), (20, 20), (30, 25)]):
        add(f"normal_small_{i}_{n}x{m}", rng.normal(0.3, 1, n), rng.normal(0, 1, m), [0.9, 0.95, 0.98, 0.99][i % 4])
    for i, (n, m) in enumerate([(50, 50), (100, 80), (200, 200), (500, 300)]):
        add(f"normal_medium_{i}_{n}x{m}", rng.normal(10.1, 2, n), rng.normal(10, 2, m), 0.98)
    for i, (n, m) in enumerate([(5, 5), (12, 9), (40, 40), (150, 120), (600, 600)]):
        add(f"rounded_ties_{i}_{n}x{m}", np.round(rng.normal(1, 1, n), 1), np.round(rng.normal(1.2, 1, m), 1), 0.95)
    for i, (n, m) in enumerate([(6, 6), (30, 20), (100, 100), (400, 500)]):
        add(f"poisson_counts_{i}_{n}x{m}", rng.poisson(3, n), rng.poisson(2.5, m), 0.98)
    for i, (n, m) in enumerate([(5, 4), (20, 20), (60, 80), (250, 250), (1000, 900)]):
        scale = 1e-5
        add(f"tiny_values_{i}_{n}x{m}", rng.lognormal(0, 0.3, n) * scale * 1.05, rng.lognormal(0, 0.3, m) * scale, 0.98)
    for i, (n, m) in enumerate([(10, 10), (80, 60), (300, 300)]):
        add(f"tiny_values_rounded_{i}_{n}x{m}", np.round(rng.normal(2e-5, 3e-6, n), 7), np.round(rng.normal(2e-5, 3e-6, m), 7), 0.95)
    for i, (n, m) in enumerate([(3, 2000), (2000, 3), (50, 1500), (2000, 2000)]):
        add(f"unequal_sizes_{i}_{n}x{m}", rng.gamma(2, 1.1, n), rng.gamma(2, 1, m), 0.98)
    for i, (n, m) in enumerate([(10, 10), (100, 100), (40, 30)]):
        add(f"one_side_constant_{i}_{n}x{m}", np.full(n, 1.0), rng.normal(1, 0.5, m), 0.95)
    for i, (n, m) in enumerate([(8, 8), (70, 90)]):
        add(f"negative_values_{i}_{n}x{m}", rng.normal(-5, 1, n), rng.normal(-5.5, 1, m), 0.95)
    for i, (n, m) in enumerate([(25, 25), (300, 200)]):
        add(f"same_distribution_{i}_{n}x{m}", rng.exponential(1, n), rng.exponential(1, m), 0.98)
    for i, (n, m) in enumerate([(6, 6), (50, 50)]):
        add(f"large_shift_{i}_{n}x{m}", rng.normal(100, 1, n), rng.normal(0, 1, m), 0.98)
    add("latency_ms_quantised", np.round(rng.lognormal(3, 0.5, 300)), np.round(rng.lognormal(2.95, 0.5, 300)), 0.98)
    add("error_rate_mostly_zero", np.where(rng.random(120) < 0.8, 0.0, rng.random(120) * 1e-3),
        np.where(rng.random(120) < 0.85, 0.0, rng.random(120) * 1e-3), 0.98)
    add("huge_offset_values", 1e9 + rng.normal(0, 10, 40), 1e9 + rng.normal(3, 10, 45), 0.95)
    add("two_against_one", [1.0, 3.0], [2.0], 0.95)
    add("all_ties_but_one", [1, 1, 1, 1, 2], [1, 1, 1, 1, 1], 0.95)
    return out


def main():
    rows = []
    for name, x, y, conf in cases():
        res = stats.mannwhitneyu(x, y, use_continuity=True, alternative="two-sided", method="asymptotic")
        lower, upper, estimate = r_interval(x, y, conf)
        rows.append({
            "name": name,
            "canary": x.tolist(),
            "baseline": y.tolist(),
            "confidence": conf,
            "u": float(res.statistic),
            "p_value": float(res.pvalue),
            "lower": float(lower),
            "upper": float(upper),
            "estimate": float(estimate),
            "mean_ratio": float(x.mean() / y.mean()),
            "cles": float(res.statistic / (len(x) * len(y))),
        })
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(here, "..", "tests", "fixtures", "mann_whitney_reference.json")
    with open(path, "w") as fh:
        json.dump({"generator": "scripts/mann_whitney_reference.py", "cases": rows}, fh, indent=None)
        fh.write("\n")
    print(f"wrote {len(rows)} cases to {os.path.normpath(path)}")


if __name__ == "__main__":
    main()
