//! Scoring as Kayenta does it, plus canaryd's two forced zeros, as a table.

use canaryd::judge::{ScoreOutcome, Scored, score};
use canaryd::rules::schema::ScoreSpec;
use canaryd::verdict::{Check, Verdict};

fn check(name: &str, verdict: Verdict, critical: bool, muted: bool) -> Check {
    Check {
        critical,
        muted,
        ..Check::named(name, verdict, "")
    }
}

use Verdict::*;

/// (checks as (name, verdict, critical, muted, group, weight), expected score, outcome, nodata)
#[test]
fn score_table() {
    type Row = (
        Vec<(&'static str, Verdict, bool, bool, &'static str, f64)>,
        f64,
        ScoreOutcome,
        bool,
    );
    let rows: Vec<Row> = vec![
        // Every metric healthy; a warning is still healthy.
        (
            vec![
                ("a", Pass, false, false, "a", 1.0),
                ("b", Warn, false, false, "b", 1.0),
            ],
            100.0,
            ScoreOutcome::Pass,
            false,
        ),
        // One of four equal groups fails: 75, marginal.
        (
            vec![
                ("a", Pass, false, false, "a", 1.0),
                ("b", Pass, false, false, "b", 1.0),
                ("c", Pass, false, false, "c", 1.0),
                ("d", Fail, false, false, "d", 1.0),
            ],
            75.0,
            ScoreOutcome::Marginal,
            false,
        ),
        // Weights: the failing group weighs 3 of 4.
        (
            vec![
                ("a", Pass, false, false, "a", 1.0),
                ("b", Fail, false, false, "b", 3.0),
            ],
            25.0,
            ScoreOutcome::Fail,
            false,
        ),
        // Within a group the share counts; the group's weight is its metrics' weights.
        (
            vec![
                ("p50", Pass, false, false, "latency", 1.0),
                ("p95", Fail, false, false, "latency", 1.0),
                ("err", Pass, false, false, "errors", 2.0),
            ],
            75.0,
            ScoreOutcome::Marginal,
            false,
        ),
        // A critical metric that failed forces 0 whatever the rest says.
        (
            vec![
                ("a", Fail, true, false, "a", 1.0),
                ("b", Pass, false, false, "b", 9.0),
            ],
            0.0,
            ScoreOutcome::Fail,
            false,
        ),
        // Half the metrics without data: 0, flagged as no-data (pauses, does not fail a tick).
        (
            vec![
                ("a", Nodata, false, false, "a", 1.0),
                ("b", Pass, false, false, "b", 1.0),
            ],
            0.0,
            ScoreOutcome::Fail,
            true,
        ),
        // Fewer than half without data: those are left out of their group.
        (
            vec![
                ("a", Nodata, false, false, "a", 1.0),
                ("b", Pass, false, false, "b", 1.0),
                ("c", Pass, false, false, "c", 1.0),
            ],
            100.0,
            ScoreOutcome::Pass,
            false,
        ),
        // An error counts like no data.
        (
            vec![
                ("a", Error, false, false, "a", 1.0),
                ("b", Error, false, false, "b", 1.0),
                ("c", Pass, false, false, "c", 1.0),
            ],
            0.0,
            ScoreOutcome::Fail,
            true,
        ),
        // Muted metrics are out of the score entirely.
        (
            vec![
                ("a", Fail, true, true, "a", 5.0),
                ("b", Pass, false, false, "b", 1.0),
            ],
            100.0,
            ScoreOutcome::Pass,
            false,
        ),
        // A critical metric without data: 0, as no-data.
        (
            vec![
                ("a", Nodata, true, false, "a", 1.0),
                ("b", Pass, false, false, "b", 1.0),
                ("c", Pass, false, false, "c", 1.0),
            ],
            0.0,
            ScoreOutcome::Fail,
            true,
        ),
    ];
    for (i, (spec, value, outcome, nodata)) in rows.into_iter().enumerate() {
        let checks: Vec<Check> = spec
            .iter()
            .map(|(n, v, c, m, _, _)| check(n, *v, *c, *m))
            .collect();
        let scored: Vec<Scored<'_>> = spec
            .iter()
            .zip(&checks)
            .map(|((_, _, _, _, g, w), c)| Scored {
                check: c,
                group: g,
                weight: *w,
            })
            .collect();
        let s = score(&scored, &ScoreSpec::default());
        assert!(
            (s.value - value).abs() < 1e-9,
            "row {i}: score {} != {value} ({})",
            s.value,
            s.reason
        );
        assert_eq!(s.outcome, outcome, "row {i}");
        assert_eq!(s.nodata, nodata, "row {i}");
        assert!(!s.reason.is_empty(), "row {i}");
    }
}
