//! Advice that does not stop a rule from loading (`canaryd check`'s warnings), made when the
//! rule loads (`Rule::warnings`). Split from `validate` by concern.

use super::schema::RuleSpec;
use super::templates;
use super::validate::{Finding, at};
use crate::verdict::EffectMeasure;

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
