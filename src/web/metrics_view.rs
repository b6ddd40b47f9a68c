//! The metrics part of a rollout's page: the last verdict of every metric with its numbers, and
//! each metric over the rollout (canary, baseline, the line it is held to) and, for sequential
//! metrics, the evidence against its threshold.

use std::fmt::Write;

use super::chart::{Chart, Line};
use crate::html::{escape, num};
use crate::rollout::{Rollout, Tick};
use crate::verdict::{Check, Threshold, ThresholdKind};

const CANARY: &str = "#c0392b";
const BASELINE: &str = "#2471a3";
const LIMIT: &str = "#7d3c98";

/// The value a canary is held to at one tick, in the canary's units: absolute lines as they are,
/// a ratio line as the baseline times the ratio. Statistical effect sizes are not in the
/// metric's units, so they are not drawn (the verdict table shows them).
fn line_in_canary_units(t: &Threshold, baseline: Option<f64>) -> Option<f64> {
    match t.kind {
        ThresholdKind::RollbackAbove
        | ThresholdKind::RollbackBelow
        | ThresholdKind::WarnAbove
        | ThresholdKind::WarnBelow => Some(t.value),
        ThresholdKind::MaxRatio => baseline.map(|b| b * t.value),
        _ => None,
    }
}

fn kind_name(k: ThresholdKind) -> String {
    serde_json::to_value(k)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The last tick's verdicts, one row per metric.
pub fn verdicts(last: Option<&Tick>) -> String {
    let mut b = String::from("<h2>Metrics</h2>");
    let Some(tick) = last else {
        b.push_str("<p class=\"empty\">Not judged yet.</p>");
        return b;
    };
    b.push_str(
        "<div class=\"scroll\"><table class=\"verdicts\"><thead><tr><th>Metric</th>\
         <th>Verdict</th><th>Canary</th><th>Baseline</th><th>Ratio</th><th>Threshold</th>\
         <th>Evidence</th><th>Reason</th></tr></thead><tbody>",
    );
    for c in &tick.checks {
        let verdict = serde_json::to_value(c.verdict)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let threshold = c
            .threshold
            .map(|t| format!("{} {}", kind_name(t.kind), num(Some(t.value))))
            .unwrap_or_default();
        let evidence = c
            .evidence
            .as_ref()
            .map(|e| format!("E {} / {}", num(Some(e.e_value)), num(Some(e.threshold))))
            .unwrap_or_default();
        let _ = write!(
            b,
            "<tr data-metric=\"{m}\"><td>{m}{muted}</td><td class=\"verdict {v}\">{v}</td>\
             <td class=\"n canary\">{}</td><td class=\"n baseline\">{}</td><td class=\"n\">{}</td>\
             <td>{}</td><td>{}</td><td class=\"reason\">{}</td></tr>",
            escape(&num(c.canary)),
            escape(&num(c.baseline)),
            escape(&num(c.ratio)),
            escape(&threshold),
            escape(&evidence),
            escape(&c.reason),
            m = escape(&c.metric),
            v = escape(&verdict),
            muted = if c.muted { " (muted)" } else { "" },
        );
    }
    b.push_str("</tbody></table></div>");
    b
}

/// Metric names in the order they first appear, over every tick.
fn metric_names(ticks: &[Tick]) -> Vec<&str> {
    let mut names: Vec<&str> = Vec::new();
    for c in ticks.iter().flat_map(|t| &t.checks) {
        if !names.contains(&&*c.metric) {
            names.push(&c.metric);
        }
    }
    names
}

/// Every metric over the rollout, from the stored ticks.
pub fn charts(r: &Rollout, ticks: &[Tick]) -> String {
    let mut b = String::from("<h2>Over the rollout</h2>");
    if ticks.is_empty() {
        b.push_str("<p class=\"empty\">No judged ticks yet.</p>");
        return b;
    }
    let x = |t: &Tick| (t.at - r.created_at).num_milliseconds() as f64 / 1000.0;
    let mut marks = Vec::new();
    let mut last_step = None;
    for t in ticks {
        if last_step != Some(t.step) {
            marks.push((x(t), format!("step {}", t.step + 1)));
            last_step = Some(t.step);
        }
    }
    for name in metric_names(ticks) {
        let of =
            |t: &Tick| -> Option<Check> { t.checks.iter().find(|c| &*c.metric == name).cloned() };
        let series: Vec<(f64, Option<Check>)> = ticks.iter().map(|t| (x(t), of(t))).collect();
        let pick = |f: &dyn Fn(&Check) -> Option<f64>| -> Vec<(f64, Option<f64>)> {
            series
                .iter()
                .map(|(x, c)| (*x, c.as_ref().and_then(f)))
                .collect()
        };
        // The baseline first, so the canary is drawn over it where the two agree.
        let mut lines = vec![
            Line {
                label: "baseline",
                color: BASELINE,
                dashed: false,
                fit: true,
                points: pick(&|c| c.baseline),
            },
            Line {
                label: "canary",
                color: CANARY,
                dashed: false,
                fit: true,
                points: pick(&|c| c.canary),
            },
        ];
        let limit = pick(&|c| {
            c.threshold
                .and_then(|t| line_in_canary_units(&t, c.baseline))
        });
        if limit.iter().any(|p| p.1.is_some()) {
            lines.push(Line {
                label: "threshold",
                color: LIMIT,
                dashed: true,
                fit: false,
                points: limit,
            });
        }
        let _ = write!(
            b,
            "<figure class=\"metric\" data-metric=\"{}\"><figcaption>{} \
             <span class=\"key canary\">canary</span> <span class=\"key baseline\">baseline\
             </span> <span class=\"key limit\">threshold</span></figcaption>{}</figure>",
            escape(name),
            escape(name),
            Chart {
                title: name,
                lines,
                marks: marks.clone(),
            }
            .render()
        );
        let evidence = pick(&|c| c.evidence.as_ref().map(|e| e.e_value.max(1e-12).log10()));
        if evidence.iter().any(|p| p.1.is_some()) {
            let threshold = pick(&|c| c.evidence.as_ref().map(|e| e.threshold.max(1e-12).log10()));
            let title = format!("{name}: sequential evidence (log10 E)");
            let _ = write!(
                b,
                "<figure class=\"evidence\" data-metric=\"{}\"><figcaption>{}</figcaption>{}\
                 </figure>",
                escape(name),
                escape(&title),
                Chart {
                    title: &title,
                    lines: vec![
                        Line {
                            label: "evidence",
                            color: CANARY,
                            dashed: false,
                            fit: true,
                            points: evidence,
                        },
                        Line {
                            label: "threshold",
                            color: LIMIT,
                            dashed: true,
                            fit: true,
                            points: threshold,
                        },
                    ],
                    marks: marks.clone(),
                }
                .render()
            );
        }
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_lines_are_drawn_in_the_canary_units_and_effect_sizes_are_not() {
        let t = |kind, value| Threshold { kind, value };
        assert_eq!(
            line_in_canary_units(&t(ThresholdKind::RollbackAbove, 0.05), Some(0.01)),
            Some(0.05)
        );
        assert_eq!(
            line_in_canary_units(&t(ThresholdKind::MaxRatio, 2.0), Some(0.01)),
            Some(0.02)
        );
        assert_eq!(
            line_in_canary_units(&t(ThresholdKind::MaxRatio, 2.0), None),
            None
        );
        assert_eq!(
            line_in_canary_units(&t(ThresholdKind::AllowedIncrease, 1.1), Some(1.0)),
            None
        );
    }

    fn tick(secs: i64, canary: f64, e_value: f64) -> Tick {
        use crate::judge::{Score, ScoreOutcome};
        use crate::verdict::Evidence;
        use crate::verdict::Verdict;
        let t0 = chrono::DateTime::parse_from_rfc3339("2026-11-30T10:00:00Z")
            .map(|t| t.with_timezone(&chrono::Utc))
            .expect("time");
        let check = Check {
            canary: Some(canary),
            baseline: Some(0.01),
            ratio: Some(canary / 0.01),
            threshold: Some(Threshold {
                kind: ThresholdKind::MaxRatio,
                value: 2.0,
            }),
            canary_samples: 10,
            baseline_samples: 10,
            evidence: Some(Box::new(Evidence {
                e_value,
                max_e: e_value,
                p_value: (1.0 / e_value).min(1.0),
                threshold: 20.0,
                canary_rate: Some(canary),
                baseline_rate: Some(0.01),
                best_ratio: None,
                ticks: 1,
            })),
            ..Check::named("errors_vs_baseline", Verdict::Pass, "<b>why</b>")
        };
        Tick {
            at: t0 + chrono::Duration::seconds(secs),
            step: (secs / 10) as usize,
            checks: vec![check],
            score: Score {
                value: 100.0,
                outcome: ScoreOutcome::Pass,
                nodata: false,
                reason: String::new(),
            },
            sequential: Default::default(),
            samples_since: None,
            counters_moved: Default::default(),
        }
    }

    #[test]
    fn a_sequential_metric_gets_its_values_its_ratio_line_and_its_evidence_drawn() {
        let ticks: Vec<Tick> = (0..20).map(|i| tick(i, 0.012, 1.0 + i as f64)).collect();
        let r = Rollout::new("r".into(), "api".into(), "v2".into(), ticks[0].at);
        let html = charts(&r, &ticks);
        let metric = &html[html.find("figure class=\"metric\"").expect("metric chart")..];
        let metric = &metric[..metric.find("</figure>").expect("end")];
        assert_eq!(
            metric.matches("<path").count(),
            3,
            "baseline, canary, 2x line: {metric}"
        );
        assert!(metric.contains("step 2"), "step changes are marked");
        let evidence = &html[html
            .find("figure class=\"evidence\"")
            .expect("evidence chart")..];
        assert_eq!(evidence.matches("<path").count(), 2, "{evidence}");
        let table = verdicts(ticks.last());
        assert!(
            table.contains("E 20 / 20") && table.contains("max_ratio 2"),
            "{table}"
        );
        assert!(table.contains("&lt;b&gt;why&lt;/b&gt;") && !table.contains("<b>"));
    }
}
