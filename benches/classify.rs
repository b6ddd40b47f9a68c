//! Cost of classifying one metric against the floor of sorting its samples once.
//!
//! Run: cargo bench --bench classify -- --warm-up-time 1 --measurement-time 3
//!
//! Per size (n canary + n baseline samples): `sort_floor` copies and sorts the pooled samples
//! (no rank test can do less); `classify` is the whole Kayenta-style verdict (NaN and outlier
//! handling, rank-sum test, interval, estimate, effect size); `rank_sum` is our test alone;
//! `statrs_mannwhitneyu` is statrs 0.19's test (U and p-value only, no interval);
//! `naive_pairwise_interval` materialises and sorts all n·m differences to read the same
//! interval off them (skipped at 10,000, where that is 10⁸ differences).

use canaryd::judge::classifier::classify;
use canaryd::judge::stats::rank_sum;
use canaryd::verdict::ClassifierConfig;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use statrs::stats_tests::Alternative;
use statrs::stats_tests::mannwhitneyu::{MannWhitneyUMethod, mannwhitneyu};
use std::hint::black_box;

/// Latency-like samples (log-normal-ish, quantised to 0.1 ms so there are ties).
fn samples(n: usize, seed: u64, scale: f64) -> Vec<f64> {
    let mut s = seed;
    let mut next = || {
        s = s
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((s >> 11) as f64) / ((1u64 << 53) as f64)
    };
    (0..n)
        .map(|_| {
            let g: f64 = (0..4).map(|_| next()).sum::<f64>() - 2.0;
            ((scale * (0.5 * g).exp()) * 10.0).round() / 10.0
        })
        .collect()
}

fn naive_interval(canary: &[f64], baseline: &[f64]) -> (f64, f64, f64) {
    let mut d: Vec<f64> = canary
        .iter()
        .flat_map(|a| baseline.iter().map(move |b| a - b))
        .collect();
    d.sort_unstable_by(f64::total_cmp);
    let n = d.len();
    // Normal-approximation ranks of the bounds; enough to show the cost of n·m differences.
    let half = 2.326
        * ((canary.len() * baseline.len()) as f64 * (canary.len() + baseline.len() + 1) as f64
            / 12.0)
            .sqrt();
    let lo = ((n as f64 / 2.0 - half).max(0.0)) as usize;
    let hi = ((n as f64 / 2.0 + half) as usize).min(n - 1);
    (d[lo], d[hi], d[n / 2])
}

fn bench(c: &mut Criterion) {
    let cfg = ClassifierConfig::default();
    let mut group = c.benchmark_group("classify_one_metric");
    for n in [100usize, 1_000, 10_000] {
        let canary = samples(n, 1, 21.0);
        let baseline = samples(n, 2, 20.0);
        group.bench_with_input(BenchmarkId::new("sort_floor", n), &n, |bch, _| {
            bch.iter(|| {
                let mut pooled = Vec::with_capacity(2 * n);
                pooled.extend_from_slice(&canary);
                pooled.extend_from_slice(&baseline);
                pooled.sort_unstable_by(f64::total_cmp);
                black_box(pooled)
            })
        });
        group.bench_with_input(BenchmarkId::new("classify", n), &n, |bch, _| {
            bch.iter(|| black_box(classify(black_box(&canary), black_box(&baseline), &cfg)))
        });
        group.bench_with_input(BenchmarkId::new("rank_sum", n), &n, |bch, _| {
            bch.iter(|| black_box(rank_sum(black_box(&canary), black_box(&baseline))))
        });
        group.bench_with_input(BenchmarkId::new("statrs_mannwhitneyu", n), &n, |bch, _| {
            bch.iter(|| {
                black_box(mannwhitneyu(
                    black_box(&canary),
                    black_box(&baseline),
                    MannWhitneyUMethod::AsymptoticInclContinuityCorrection,
                    Alternative::TwoSided,
                ))
            })
        });
        if n <= 1_000 {
            group.bench_with_input(
                BenchmarkId::new("naive_pairwise_interval", n),
                &n,
                |bch, _| {
                    bch.iter(|| black_box(naive_interval(black_box(&canary), black_box(&baseline))))
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
