//! Semantic checks that YAML types cannot express: ordering of steps, thresholds that contradict
//! each other, templates that reference unknown variables. Every finding keeps the location of
//! the value it is about, and all findings are returned, not just the first.

use serde_saphyr::{Location, Spanned};

use super::schema::{HookSpec, MetricSpec, RuleSpec};
use super::shared::Shared;
use super::templates;
use super::window::{Window, Windows};
use crate::verdict::Direction;
use crate::verdict::EffectMeasure;

/// A finding before the file name is attached.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub line: u32,
    pub column: u32,
    pub message: String,
}

pub(super) fn at<T>(s: &Spanned<T>, message: impl Into<String>) -> Finding {
    at_loc(s.referenced, message)
}

pub(super) fn at_loc(loc: Location, message: impl Into<String>) -> Finding {
    Finding {
        line: loc.line().max(1) as u32,
        column: loc.column().max(1) as u32,
        message: message.into(),
    }
}

/// Runs every check; an empty list means the rule can run.
///
/// `analysis_at` is where the `analysis:` block starts (absent when the file leaves it out, and
/// then its defaults are valid).
pub fn validate(spec: &RuleSpec, analysis_at: Option<Location>) -> (Vec<Finding>, Option<Windows>) {
    let mut out = Vec::new();
    let name = &spec.name.value;
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        out.push(at(
            &spec.name,
            format!("rule name {name:?} must be non-empty letters, digits, '-' or '_'"),
        ));
    }
    let analysis_at = analysis_at.unwrap_or(spec.name.referenced);
    check_steps(spec, &mut out);
    check_analysis(spec, analysis_at, &mut out);
    super::bounds::check(spec, analysis_at, &mut out);
    check_metrics(spec, &mut out);
    super::promql::check(spec, &mut out);
    for hook in spec.hooks.calls() {
        check_hook(hook, &mut out);
    }
    if let Some(t) = &spec.traffic {
        for message in super::traffic::check(&t.value) {
            out.push(at(t, message));
        }
    }
    if let Some(r) = &spec.hooks.readiness
        && reqwest::Url::parse(&r.value.url).is_err()
    {
        out.push(at(
            r,
            format!(
                "readiness url {:?} is not a URL",
                crate::redact::url(&r.value.url)
            ),
        ));
    }
    for h in &spec.health {
        if reqwest::Url::parse(&h.value.url).is_err() {
            out.push(at(
                h,
                format!(
                    "health url {:?} is not a URL",
                    crate::redact::url(&h.value.url)
                ),
            ));
        }
        if h.value.failure_limit == 0 {
            out.push(at(h, "health failure_limit must be at least 1"));
        }
    }
    for (key, list) in [
        ("rollback_on", &spec.alerts.rollback_on),
        ("pause_on", &spec.alerts.pause_on),
    ] {
        for m in list {
            if let Err(e) = super::matchers::parse(&m.value) {
                out.push(at(m, format!("alerts.{key} {:?}: {e}", m.value)));
            }
        }
    }
    check_verify(spec, &mut out);
    let windows = check_windows(spec, &mut out);
    (out, windows)
}

fn check_steps(spec: &RuleSpec, out: &mut Vec<Finding>) {
    let steps = &spec.steps.value;
    let Some(last) = steps.last() else {
        out.push(at(
            &spec.steps,
            "steps must not be empty; e.g. [{weight: 5, hold: 1h}, {weight: 100}]",
        ));
        return;
    };
    let mut previous = 0;
    for step in steps {
        let w = step.value.weight;
        if w == 0 || w > 100 {
            out.push(at(
                step,
                format!("step weight {w} must be between 1 and 100"),
            ));
        } else if w <= previous {
            out.push(at(
                step,
                format!("step weight {w} must be greater than the previous step's {previous}"),
            ));
        }
        previous = previous.max(w);
    }
    if last.value.weight != 100 {
        out.push(at(
            last,
            format!(
                "the last step must have weight 100, not {}",
                last.value.weight
            ),
        ));
    }
}

fn check_analysis(spec: &RuleSpec, loc: Location, out: &mut Vec<Finding>) {
    let a = &spec.analysis;
    let mut bad = |m: String| out.push(at_loc(loc, format!("analysis: {m}")));
    if a.interval.is_zero() || a.step.is_zero() || a.window.is_zero() {
        bad("interval, window and step must be longer than zero".into());
    }
    if a.window < a.step {
        bad(format!(
            "window ({}) must be at least one step ({})",
            humantime::format_duration(a.window),
            humantime::format_duration(a.step)
        ));
    }
    if a.max_staleness().is_zero() {
        bad("max_staleness must be longer than zero".into());
    }
    if a.failure_limit == 0 || a.nodata_limit == 0 {
        bad("failure_limit and nodata_limit must be at least 1".into());
    }
    // `contains` is false for NaN, so a NaN cut-off is refused too.
    if !(0.0..=100.0).contains(&a.score.pass)
        || !(0.0..=100.0).contains(&a.score.marginal)
        || a.score.marginal > a.score.pass
    {
        bad(format!(
            "score cut-offs must satisfy 0 <= marginal ({}) <= pass ({}) <= 100",
            a.score.marginal, a.score.pass
        ));
    }
}

fn check_metrics(spec: &RuleSpec, out: &mut Vec<Finding>) {
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

fn check_hook(hook: &Spanned<HookSpec>, out: &mut Vec<Finding>) {
    let h = &hook.value;
    match (&h.url, &h.command) {
        (Some(url), None) => {
            if reqwest::Url::parse(url).is_err() {
                out.push(at(
                    hook,
                    format!("hook url {:?} is not a URL", crate::redact::url(url)),
                ));
            }
        }
        (None, Some(argv)) if !argv.is_empty() => {
            for arg in argv {
                let known = templates::HOOK_VARIABLES.iter().copied().collect();
                if let Err(e) = templates::check_known(arg, &known) {
                    out.push(at(hook, format!("hook command argument {arg:?}: {e}")));
                }
            }
        }
        (None, Some(_)) => out.push(at(hook, "hook command must not be empty")),
        (Some(_), Some(_)) => out.push(at(
            hook,
            "hook has both `url` and `command`; a hook is exactly one of them, keep one",
        )),
        (None, None) => out.push(at(hook, "hook needs a `url` or a `command`")),
    }
    if h.timeout.is_zero() {
        out.push(at(hook, "hook timeout must be longer than zero"));
    }
    if let Some(path) = &h.secret_file {
        // Only the path goes into the message: the content is a secret.
        if h.url.is_none() {
            out.push(at(
                hook,
                "secret_file signs HTTP hooks; a command hook cannot use it",
            ));
        }
        match std::fs::read_to_string(path) {
            Ok(text) if text.trim().is_empty() => out.push(at(
                hook,
                format!("hook secret_file {} is empty", path.display()),
            )),
            Ok(_) => {}
            Err(e) => out.push(at(
                hook,
                format!(
                    "hook secret_file {} cannot be read: {}",
                    path.display(),
                    e.kind()
                ),
            )),
        }
    }
}

fn check_windows(spec: &RuleSpec, out: &mut Vec<Finding>) -> Option<Windows> {
    let w = spec.windows.as_ref()?;
    let timezone = match Windows::parse_timezone(&w.timezone.value) {
        Ok(tz) => tz,
        Err(e) => {
            out.push(at(&w.timezone, e));
            return None;
        }
    };
    let mut allow = Vec::new();
    for item in &w.allow {
        match Window::parse(&item.value) {
            Ok(win) => allow.push(win),
            Err(e) => out.push(at(item, e)),
        }
    }
    let mut deny = Vec::new();
    for item in &w.deny {
        match super::window::Blackout::parse(&item.value) {
            Ok(b) => deny.push(b),
            Err(e) => out.push(at(item, e)),
        }
    }
    if w.allow.is_empty() && w.deny.is_empty() {
        out.push(at(
            &w.timezone,
            "windows must list at least one allow window or deny blackout",
        ));
    }
    Some(Windows {
        timezone,
        allow,
        deny,
    })
}

/// `verify:` checkpoints parse, increase and stay bounded; reverting needs a `revert` hook.
fn check_verify(spec: &RuleSpec, out: &mut Vec<Finding>) {
    let Some(v) = &spec.verify else {
        return;
    };
    if let Err((i, e)) = super::checkpoints::parse_checkpoints(v) {
        match v.checkpoints.value.get(i) {
            Some(item) => out.push(at(item, e)),
            None => out.push(at(&v.checkpoints, e)),
        }
    }
    if v.revert_on_failure && spec.hooks.revert.is_none() {
        out.push(at(
            &v.checkpoints,
            "verify.revert_on_failure needs a hooks.revert to call",
        ));
    }
}

/// Advice that does not stop a rule from loading: settings that make the statistics lie.
pub fn lint(spec: &RuleSpec) -> Vec<Finding> {
    use super::schema::Compare;
    let mut out = Vec::new();
    let step = spec.analysis.step;
    for m in &spec.metrics.value {
        let metric = &m.value;
        if metric.compare != Compare::MannWhitney {
            continue;
        }
        let Some(q) = &metric.query else { continue };
        let ctx = super::QueryContext::default();
        let vars = super::query_vars(spec, super::Group::Canary, &ctx);
        if let Ok(query) = templates::render_query(&q.value, &vars) {
            for range in range_selectors(&query) {
                if range > step {
                    out.push(at(q, format!(
                        "metric {}: statistical comparison over a {} range selector, longer than step {}: neighbouring samples share requests and are not independent, so the test rolls back healthy canaries; use [{{{{step}}}}]",
                        metric.name,
                        humantime::format_duration(range),
                        humantime::format_duration(step)
                    )));
                    break;
                }
            }
        }
        let neutral = match metric.effect_size.unwrap_or_default() {
            EffectMeasure::MeanRatio => 1.0,
            EffectMeasure::Cles => 0.5,
        };
        if metric.allowed_increase.is_some_and(|v| v <= neutral)
            || metric.allowed_decrease.is_some_and(|v| v >= neutral)
        {
            out.push(at(m, format!(
                "metric {}: allowed_increase/allowed_decrease of {neutral} fails on significance alone; canary and baseline differ by a few percent anyway (the shipped rules use 1.1)",
                metric.name
            )));
        }
    }
    out
}

/// Durations of PromQL range selectors (`[5m]`, and the range of subqueries `[5m:1m]`).
fn range_selectors(query: &str) -> Vec<std::time::Duration> {
    let mut out = Vec::new();
    let mut rest = query;
    while let Some(open) = rest.find('[') {
        let after = &rest[open + 1..];
        let Some(close) = after.find(']') else { break };
        let inside = after[..close].split(':').next().unwrap_or("").trim();
        if let Some(d) = promql_duration(inside) {
            out.push(d);
        }
        rest = &after[close..];
    }
    out
}

/// PromQL durations: `1h30m`, `15s`, `500ms`, `2d`, `1w`, `1y`.
fn promql_duration(text: &str) -> Option<std::time::Duration> {
    let mut total = 0u128;
    let mut digits = String::new();
    let mut chars = text.chars().peekable();
    if text.is_empty() {
        return None;
    }
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let n: u128 = digits.parse().ok()?;
        digits.clear();
        let unit_ms: u128 = match c {
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                1
            }
            's' => 1_000,
            'm' => 60_000,
            'h' => 3_600_000,
            'd' => 86_400_000,
            'w' => 604_800_000,
            'y' => 31_536_000_000,
            _ => return None,
        };
        total += n * unit_ms;
    }
    if !digits.is_empty() {
        return None;
    }
    Some(std::time::Duration::from_millis(u64::try_from(total).ok()?))
}

#[cfg(test)]
mod lint_tests {
    use super::*;

    #[test]
    fn parses_promql_durations() {
        use std::time::Duration;
        assert_eq!(promql_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(promql_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(promql_duration("15s"), Some(Duration::from_secs(15)));
        assert_eq!(promql_duration("x"), None);
        assert_eq!(promql_duration("5"), None);
    }

    #[test]
    fn finds_range_and_subquery_selectors() {
        use std::time::Duration;
        let q = r#"rate(x{a="[b]"}[1m]) + max_over_time(y[5m:30s])"#;
        let found = range_selectors(q);
        assert!(found.contains(&Duration::from_secs(60)));
        assert!(found.contains(&Duration::from_secs(300)));
    }
}
