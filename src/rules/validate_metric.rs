//! The checks of a rule's metrics: each one a window query or a sequential test, with lines
//! that can fire. Split from `validate` by concern (the file budget); `validate` runs them.

use serde_saphyr::Spanned;

use super::schema::{MetricSpec, RuleSpec};
use super::shared::Shared;
use super::templates;
use super::validate::{Finding, at};
use crate::verdict::{Direction, EffectMeasure};

pub(super) fn check_metrics(spec: &RuleSpec, out: &mut Vec<Finding>) {
    if spec.metrics.value.is_empty() {
        out.push(at(&spec.metrics, "metrics must not be empty"));
    }
    let mut seen = std::collections::BTreeSet::new();
    for m in &spec.metrics.value {
        if !seen.insert(m.value.name.clone()) {
            out.push(at(m, format!("metric {:?} is defined twice", m.value.name)));
        }
        check_metric(&m.value, m, spec, out);
    }
}

fn check_metric(
    m: &MetricSpec,
    span: &Spanned<Shared<MetricSpec>>,
    spec: &RuleSpec,
    out: &mut Vec<Finding>,
) {
    let name = &m.name;
    if let (Some(warn), Some(rb)) = (m.warn_above, m.rollback_above)
        && warn > rb
    {
        out.push(at(span, format!(
            "metric {name}: warn_above ({warn}) is beyond rollback_above ({rb}); the warning would never fire"
        )));
    }
    if let (Some(warn), Some(rb)) = (m.warn_below, m.rollback_below)
        && warn < rb
    {
        out.push(at(span, format!(
            "metric {name}: warn_below ({warn}) is beyond rollback_below ({rb}); the warning would never fire"
        )));
    }
    let finite = [
        m.rollback_above,
        m.rollback_below,
        m.warn_above,
        m.warn_below,
        m.max_ratio,
    ];
    if finite.iter().flatten().any(|v| !v.is_finite()) {
        out.push(at(
            span,
            format!("metric {name}: thresholds must be finite numbers"),
        ));
    }
    if let Some(r) = m.max_ratio
        && r <= 0.0
    {
        out.push(at(
            span,
            format!("metric {name}: max_ratio must be positive, not {r}"),
        ));
    }
    // The thresholds are in the unit of the effect size: a mean ratio (1 = no change) or CLES,
    // P(canary > baseline) between 0 and 1 (0.5 = no change).
    let (neutral, unit) = match m.effect_size.unwrap_or_default() {
        EffectMeasure::MeanRatio => (1.0, "they are mean ratios"),
        EffectMeasure::Cles => (0.5, "they are CLES probabilities, 0.5 = no change"),
    };
    let cles = m.effect_size == Some(EffectMeasure::Cles);
    let outside = |v: f64| !v.is_finite() || (cles && !(0.0..=1.0).contains(&v));
    if m.allowed_increase
        .is_some_and(|v| v < neutral || outside(v))
        || m.allowed_decrease
            .is_some_and(|v| v > neutral || outside(v))
    {
        out.push(at(span, format!(
            "metric {name}: allowed_increase must be >= {neutral} and allowed_decrease <= {neutral} ({unit})"
        )));
    }
    if cles
        && ((m.direction != Direction::Decrease && m.allowed_increase.is_none())
            || (m.direction != Direction::Increase && m.allowed_decrease.is_none()))
    {
        out.push(at(span, format!(
            "metric {name}: effect_size: cles needs allowed_increase (between 0.5 and 1) and, when a decrease is judged, allowed_decrease (between 0 and 0.5); the mean-ratio defaults could never be reached"
        )));
    }
    if m.max_difference
        .is_some_and(|d| !(d.is_finite() && d >= 0.0))
    {
        out.push(at(
            span,
            format!("metric {name}: max_difference must be a non-negative number"),
        ));
    }
    if let Some(hold) = m.hold_for
        && hold > spec.analysis.window
    {
        out.push(at(span, format!(
            "metric {name}: for ({}) is longer than the analysis window ({}); the breach could never be seen holding",
            humantime::format_duration(hold),
            humantime::format_duration(spec.analysis.window)
        )));
    }
    if !(m.weight.is_finite() && m.weight >= 0.0) {
        out.push(at(
            span,
            format!("metric {name}: weight must be a non-negative number"),
        ));
    }
    check_kind(m, span, spec, out);
}

/// A metric is a window query, or a sequential test on counters; never a mix of both.
fn check_kind(
    m: &MetricSpec,
    span: &Spanned<Shared<MetricSpec>>,
    spec: &RuleSpec,
    out: &mut Vec<Finding>,
) {
    use super::schema::{Compare, MetricKind};
    let name = &m.name;
    let templates_of = [
        ("query", m.query.as_ref()),
        ("events", m.events.as_deref()),
        ("requests", m.requests.as_deref()),
    ];
    for (key, t) in templates_of {
        if let Some(t) = t
            && let Err(e) = templates::check_vars(&t.value, &spec.vars)
        {
            out.push(at(t, format!("metric {name}: {key} {e}")));
        }
    }
    match m.kind() {
        MetricKind::Window(_) => {
            if m.events.is_some() || m.requests.is_some() || m.histogram.is_some() || m.slower_than.is_some() {
                out.push(at(span, format!(
                    "metric {name}: events/requests/histogram/slower_than belong to `test: sequential`"
                )));
            }
        }
        MetricKind::Counts { .. } | MetricKind::Slow { .. } | MetricKind::Histogram { .. } => {
            let lines = [m.rollback_above, m.rollback_below, m.warn_above, m.warn_below, m.max_ratio, m.max_difference];
            if lines.iter().any(Option::is_some) || m.compare != Compare::None {
                out.push(at(span, format!(
                    "metric {name}: a sequential metric decides by its evidence alone; put absolute lines and comparisons on a separate window metric"
                )));
            }
            if m.alpha.is_some_and(|a| !(a > 0.0 && a < 1.0)) {
                out.push(at(span, format!("metric {name}: alpha must be between 0 and 1")));
            }
            if m.margin.is_some_and(|v| !(v.is_finite() && v >= 0.0)) {
                out.push(at(span, format!("metric {name}: margin must be a non-negative number")));
            }
            if let Some(grid) = &m.grid {
                // A histogram's grid is relative to each edge's own null (ratio × (1 + edge
                // margin), `judge::sequential_hist`), and its margin is a latency scale.
                let margin = match m.kind() {
                    MetricKind::Histogram { .. } => 0.0,
                    _ => m.margin.unwrap_or(0.0),
                };
                if grid.is_empty() || grid.iter().any(|r| !(r.is_finite() && *r > 1.0 + margin)) {
                    out.push(at(span, format!(
                        "metric {name}: grid ratios must be finite and above 1 + margin ({})",
                        1.0 + margin
                    )));
                }
            }
            if let Some(settled) = m.settled_margin {
                let histogram = matches!(m.kind(), MetricKind::Histogram { .. });
                let margin = m.margin.unwrap_or(0.0);
                if !(histogram && settled.is_finite() && settled >= 0.0 && settled <= margin) {
                    out.push(at(span, format!(
                        "metric {name}: settled_margin belongs to `test: sequential_histogram` and must be between 0 and margin ({margin})"
                    )));
                }
            }
            if m.settle.is_some() != m.settled_margin.is_some() || m.settle.is_some_and(|d| d.is_zero()) {
                out.push(at(span, format!(
                    "metric {name}: settled_margin and settle (a duration above 0) go together"
                )));
            }
            if m.max_tick_factor.is_some_and(|c| !(c.is_finite() && c > 1.0)) {
                out.push(at(span, format!("metric {name}: max_tick_factor must be a number above 1")));
            }
            if m.slower_than.is_some_and(|le| !(le.is_finite() && le > 0.0)) {
                out.push(at(span, format!("metric {name}: slower_than must be a positive number of seconds")));
            }
        }
        MetricKind::Invalid => out.push(at(span, if m.test == Some(super::schema::TestKind::SequentialHistogram) {
            format!("metric {name}: `test: sequential_histogram` needs `histogram` (the base name of a histogram's _bucket and _count series) and no `query`, `events`, `requests` or `slower_than`")
        } else if m.is_sequential() {
            format!("metric {name}: `test: sequential` needs `events` and `requests` counter queries, or `histogram` and `slower_than`, and no `query`")
        } else {
            format!("metric {name}: needs a `query` (or `test: sequential` with `events` and `requests`)")
        })),
    }
}
