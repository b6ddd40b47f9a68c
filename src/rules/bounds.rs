//! Upper bounds on every duration a rule hands to canaryd's clock. Each one ends up added to a
//! timestamp, turned into a PromQL range or waited on; `hold: 1000000000y` used to pass `check`
//! and then panic the rollout task converting to a time delta. The bounds are far beyond any
//! real rollout and far below any overflow, so arithmetic on them cannot fail.

use std::time::Duration;

use serde_saphyr::Location;

use super::schema::RuleSpec;
use super::validate::{Finding, at, at_loc};

const DAY: Duration = Duration::from_secs(86_400);

/// A step's hold and the warmup: a year (humantime's, 365.25 days), the longest a release
/// could sit.
pub const MAX_HOLD: Duration = Duration::from_secs(31_557_600);
/// One tick: a day; a rollout that looks less often than that is not being watched.
pub const MAX_INTERVAL: Duration = DAY;
/// The range queried each tick: 30 days, twice Prometheus' default retention.
pub const MAX_WINDOW: Duration = Duration::from_secs(30 * 86_400);
/// Prometheus refuses range queries of more than 11,000 points per series.
pub const MAX_POINTS: u128 = 11_000;
/// A hook call or a health probe: an hour; a rollback must not wait longer on one attempt.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3_600);

fn human(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(d)
}

/// Findings for every duration beyond its bound; `analysis_at` locates the analysis block.
pub(super) fn check(spec: &RuleSpec, analysis_at: Location, out: &mut Vec<Finding>) {
    for step in &spec.steps.value {
        if let Some(hold) = step.value.hold
            && hold > MAX_HOLD
        {
            out.push(at(
                step,
                format!(
                    "step hold {} is longer than the {} allowed",
                    human(hold),
                    human(MAX_HOLD)
                ),
            ));
        }
    }
    let a = &spec.analysis;
    let mut bad = |m: String| out.push(at_loc(analysis_at, format!("analysis: {m}")));
    for (key, d, max) in [
        ("warmup", a.warmup, MAX_HOLD),
        ("interval", a.interval, MAX_INTERVAL),
        ("window", a.window, MAX_WINDOW),
    ] {
        if d > max {
            bad(format!(
                "{key} {} is longer than the {} allowed",
                human(d),
                human(max)
            ));
        }
    }
    // Rendered into queries in whole milliseconds: a finer value would silently change.
    for (key, d) in [
        ("interval", a.interval),
        ("window", a.window),
        ("step", a.step),
    ] {
        if d.subsec_nanos() % 1_000_000 != 0 {
            bad(format!("{key} {} must be whole milliseconds", human(d)));
        }
    }
    if !a.step.is_zero() && a.window.as_millis() / a.step.as_millis().max(1) > MAX_POINTS {
        bad(format!(
            "window {} / step {} is more than the {MAX_POINTS} points per series Prometheus answers; use a longer step",
            human(a.window),
            human(a.step)
        ));
    }
    let timeouts = spec
        .hooks
        .calls()
        .map(|h| (h.referenced, h.value.timeout))
        .chain((spec.hooks.readiness.iter()).map(|r| (r.referenced, r.value.timeout)));
    for (loc, timeout) in timeouts {
        if timeout > MAX_TIMEOUT {
            out.push(at_loc(
                loc,
                format!(
                    "hook timeout {} is longer than the {} allowed",
                    human(timeout),
                    human(MAX_TIMEOUT)
                ),
            ));
        }
    }
    for h in &spec.health {
        if h.value.interval > MAX_INTERVAL {
            out.push(at(
                h,
                format!(
                    "health interval {} is longer than the {} allowed",
                    human(h.value.interval),
                    human(MAX_INTERVAL)
                ),
            ));
        }
    }
}
