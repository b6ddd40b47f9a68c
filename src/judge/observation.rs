//! What a source saw for one group of one metric: the judge's input.
//!
//! Every way a query can go wrong has its own variant, so the judge can say `nodata` for "nothing
//! to judge" and `error` for "could not look", and never mistake either for health.
//!
//! A range query first comes back as a [`Series`]: every point with the time it was taken. Only
//! [`Series::admit`] turns it into an [`Observation`], keeping the points taken at the current
//! weight and refusing a series whose newest point is too old. Why: a window that still holds
//! healthy points from an earlier weight, or from before the canary died, must never look like
//! evidence that the canary is healthy now (issue 16: a dead canary was promoted on them).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[path = "observation_grid.rs"]
mod grid;
#[path = "observation_points.rs"]
mod points;
pub use grid::{Grid, Iter as PointIter};
pub use points::Points;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Observation {
    /// Finite values in time order (NaN and infinities dropped). Never empty.
    Samples { values: Vec<f64>, dropped: usize },
    /// The query matched no series, or every point was NaN/Inf.
    Empty { dropped: usize },
    /// The query returned several series where one aggregated series was expected.
    Ambiguous { series: usize },
    /// The source could not answer: down, timeout, HTTP error, bad query, garbage.
    Failed { message: String },
    /// The series has points, but none the judge may use now: taken before the current weight
    /// was confirmed, too few since, or the newest is older than `max_staleness`. No data.
    Stale { reason: String },
}

impl Observation {
    /// Builds an observation from raw values, dropping NaN and infinities. Prometheus returns NaN
    /// for 0/0 (a ratio over no traffic), which is "no data", not a number to compare.
    pub fn from_values(raw: impl IntoIterator<Item = f64>) -> Observation {
        let mut dropped = 0;
        let values: Vec<f64> = raw
            .into_iter()
            .filter(|v| {
                let keep = v.is_finite();
                dropped += usize::from(!keep);
                keep
            })
            .collect();
        if values.is_empty() {
            Observation::Empty { dropped }
        } else {
            Observation::Samples { values, dropped }
        }
    }

    pub fn values(&self) -> &[f64] {
        match self {
            Observation::Samples { values, .. } => values,
            _ => &[],
        }
    }

    pub fn latest(&self) -> Option<f64> {
        self.values().last().copied()
    }
}

/// One point of a range query: when it was evaluated (unix seconds) and its value (NaN kept).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub at: f64,
    pub value: f64,
}

/// A range query's answer before any point is chosen: the points keep their times so the judge
/// can tell which were taken at the current weight and how old the newest is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Series {
    /// One series' points in time order; empty when the query matched no series. Its own, or a
    /// view of the batch answer it came in ([`Points`]).
    Points { points: Points },
    /// Several series where one aggregated series was expected.
    Ambiguous { series: usize },
    /// The source could not answer.
    Failed { message: String },
}

/// Which points of a [`Series`] a tick may judge.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Admission {
    /// When the current weight was confirmed plus its warmup: earlier points were taken at
    /// another weight (or while the canary was still warming up) and never count.
    pub since: DateTime<Utc>,
    /// The tick's time: ages are measured from here.
    pub now: DateTime<Utc>,
    /// The newest finite point may be at most this old.
    pub max_staleness: std::time::Duration,
    pub min_samples: usize,
}

impl Series {
    /// The observation a tick may judge: only points at or after `since`, and only when the
    /// newest finite one is fresh. Anything else is [`Observation::Stale`] with a reason that
    /// names the age and the time, so a human sees which data stopped and since when.
    pub fn admit(&self, a: &Admission) -> Observation {
        let points = match self {
            Series::Points { points } => points,
            Series::Ambiguous { series } => return Observation::Ambiguous { series: *series },
            Series::Failed { message } => {
                return Observation::Failed {
                    message: message.clone(),
                };
            }
        };
        if points.is_empty() {
            return Observation::Empty { dropped: 0 };
        }
        let since = unix(a.since);
        let (earlier, current): (Vec<Point>, Vec<Point>) =
            points.iter().partition(|p| p.at < since);
        let newest = points
            .iter()
            .filter(|p| p.value.is_finite())
            .map(|p| p.at)
            .fold(None, |m: Option<f64>, t| Some(m.map_or(t, |m| m.max(t))));
        // Only the stale reasons say it; formatting a clock time every metric and tick is not
        // free.
        let counting = || {
            format!(
                "counting from {} (this weight's confirmation plus warmup)",
                clock(since)
            )
        };
        if current.is_empty() {
            return Observation::Stale {
                reason: format!(
                    "no point since this weight was confirmed, {}; its {} earlier points do not count{}",
                    counting(),
                    earlier.len(),
                    newest
                        .map(|t| format!(", the newest is {}", age(a.now, t)))
                        .unwrap_or_default()
                ),
            };
        }
        let observation = Observation::from_values(current.iter().map(|p| p.value));
        let Observation::Samples { values, .. } = &observation else {
            return observation;
        };
        let newest_current = current
            .iter()
            .filter(|p| p.value.is_finite())
            .map(|p| p.at)
            .fold(f64::NEG_INFINITY, f64::max);
        let age_s = unix(a.now) - newest_current;
        if age_s > a.max_staleness.as_secs_f64() {
            return Observation::Stale {
                reason: format!(
                    "newest point is {} (max_staleness {})",
                    age(a.now, newest_current),
                    humantime::format_duration(a.max_staleness)
                ),
            };
        }
        if values.len() < a.min_samples && !earlier.is_empty() {
            return Observation::Stale {
                reason: format!(
                    "{} samples since this weight was confirmed, fewer than min_samples {}, {}; {} earlier points do not count; the newest is {}",
                    values.len(),
                    a.min_samples,
                    counting(),
                    earlier.len(),
                    age(a.now, newest_current)
                ),
            };
        }
        observation
    }
}

fn unix(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

/// "10:01:02 UTC" for a unix time; the date is left out, a tick looks minutes back at most.
fn clock(at: f64) -> String {
    DateTime::<Utc>::from_timestamp_millis((at * 1000.0) as i64)
        .map(|t| t.format("%H:%M:%S UTC").to_string())
        .unwrap_or_else(|| format!("unix time {at}"))
}

/// "48 s old, taken at 10:01:02 UTC".
fn age(now: DateTime<Utc>, at: f64) -> String {
    format!(
        "{:.0} s old, taken at {}",
        (unix(now) - at).max(0.0),
        clock(at)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    fn series(points: &[(i64, f64)]) -> Series {
        Series::Points {
            points: points
                .iter()
                .map(|(t, v)| Point {
                    at: unix(at(*t)),
                    value: *v,
                })
                .collect(),
        }
    }

    fn admission(since: i64, now: i64) -> Admission {
        Admission {
            since: at(since),
            now: at(now),
            max_staleness: Duration::from_secs(10),
            min_samples: 3,
        }
    }

    #[test]
    fn only_points_from_before_the_step_are_stale_and_say_so() {
        let s = series(&[(0, 0.01), (5, 0.01), (10, 0.01)]);
        let o = s.admit(&admission(12, 14));
        let Observation::Stale { reason } = o else {
            panic!("{o:?}")
        };
        assert!(reason.contains("3 earlier points"), "{reason}");
        assert!(reason.contains("4 s old"), "{reason}");
    }

    #[test]
    fn a_newest_point_older_than_the_bound_is_stale_and_names_its_age() {
        let s = series(&[(20, 0.01), (25, 0.01), (30, 0.01)]);
        let o = s.admit(&admission(10, 78));
        let Observation::Stale { reason } = o else {
            panic!("{o:?}")
        };
        assert!(reason.starts_with("newest point is 48 s old"), "{reason}");
    }

    #[test]
    fn fresh_points_at_this_step_are_judged_and_earlier_ones_dropped() {
        let s = series(&[(0, 9.0), (12, 0.01), (14, 0.02), (16, 0.03)]);
        let o = s.admit(&admission(10, 20));
        assert_eq!(
            o,
            Observation::Samples {
                values: vec![0.01, 0.02, 0.03],
                dropped: 0
            }
        );
    }

    #[test]
    fn too_few_points_since_the_step_began_are_no_data() {
        let s = series(&[(0, 0.01), (5, 0.01), (12, 0.01)]);
        assert!(matches!(
            s.admit(&admission(10, 14)),
            Observation::Stale { .. }
        ));
    }

    #[test]
    fn nan_points_do_not_make_a_series_fresh() {
        let s = series(&[(12, 0.01), (13, 0.01), (14, 0.01), (40, f64::NAN)]);
        assert!(matches!(
            s.admit(&admission(10, 40)),
            Observation::Stale { .. }
        ));
    }

    #[test]
    fn failures_and_ambiguity_pass_through() {
        let f = Series::Failed {
            message: "down".into(),
        };
        assert!(matches!(
            f.admit(&admission(0, 1)),
            Observation::Failed { .. }
        ));
        let e = Series::Points {
            points: Points::default(),
        };
        assert_eq!(e.admit(&admission(0, 1)), Observation::Empty { dropped: 0 });
    }
}
