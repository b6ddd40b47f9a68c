//! The judge's edges that `cargo mutants` found no test for (BENCHMARKS.md, "Mutation
//! testing"): the score's cutoffs at their exact values and the words that explain a score.
//! Pure: no servers.

use canaryd::judge::{ScoreOutcome, Scored, score};
use canaryd::rules::schema::ScoreSpec;
use canaryd::verdict::{Check, Verdict};

/// (name, verdict, critical, group, weight)
type Metric = (&'static str, Verdict, bool, &'static str, f64);

fn scored(metrics: &[Metric]) -> canaryd::judge::Score {
    let checks: Vec<Check> = metrics
        .iter()
        .map(|(n, v, critical, _, _)| Check {
            critical: *critical,
            ..Check::named(*n, *v, "")
        })
        .collect();
    let scored: Vec<Scored<'_>> = metrics
        .iter()
        .zip(&checks)
        .map(|((_, _, _, g, w), c)| Scored {
            check: c,
            group: g,
            weight: *w,
        })
        .collect();
    score(&scored, &ScoreSpec::default())
}

#[test]
fn a_score_exactly_at_the_pass_cutoff_passes() {
    // 19 of 20 weight healthy: exactly 95, the default `pass`.
    let s = scored(&[
        ("a", Verdict::Pass, false, "a", 19.0),
        ("b", Verdict::Fail, false, "b", 1.0),
    ]);
    assert_eq!(s.value, 95.0);
    assert_eq!(s.outcome, ScoreOutcome::Pass, "{}", s.reason);
    assert_eq!(s.reason, "not healthy: b");
}

#[test]
fn each_forced_zero_says_which_rule_forced_it() {
    use Verdict::*;
    let rows: [(&[Metric], &str, bool); 6] = [
        (
            &[
                ("err", Fail, true, "e", 1.0),
                ("p95", Pass, false, "l", 1.0),
            ],
            "critical metric err is fail",
            false,
        ),
        (
            &[
                ("err", Warn, true, "e", 1.0),
                ("p95", Pass, false, "l", 1.0),
            ],
            "every metric healthy",
            false,
        ),
        (
            &[("a", Nodata, false, "a", 1.0), ("b", Pass, false, "b", 1.0)],
            "no data for 1 of 2 metrics: a",
            true,
        ),
        (
            &[
                ("a", Error, false, "a", 1.0),
                ("b", Nodata, false, "b", 1.0),
                ("c", Pass, false, "c", 1.0),
            ],
            "no data for 2 of 3 metrics: a, b",
            true,
        ),
        (
            &[
                ("a", Nodata, true, "a", 1.0),
                ("b", Pass, false, "b", 1.0),
                ("c", Pass, false, "c", 1.0),
            ],
            "critical metric a has no data",
            true,
        ),
        (&[], "no data for 0 of 0 metrics: ", true),
    ];
    for (metrics, reason, nodata) in rows {
        let s = scored(metrics);
        assert_eq!(s.reason, reason, "{metrics:?}");
        assert_eq!(s.nodata, nodata, "{metrics:?}");
    }
}

/// Weights may be 0 (validate allows any non-negative weight): when every judged metric weighs
/// 0 the score is 0, a number, never 0/0 (NaN has no JSON form and compares false everywhere).
#[test]
fn a_score_whose_metrics_all_weigh_nothing_is_zero_not_nan() {
    let s = scored(&[
        ("a", Verdict::Pass, false, "a", 0.0),
        ("b", Verdict::Pass, false, "b", 0.0),
    ]);
    assert_eq!(s.value, 0.0, "{}", s.reason);
    assert_eq!(s.outcome, ScoreOutcome::Fail);
}
