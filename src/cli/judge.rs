//! `canaryd judge`: judge recorded samples offline with a rule, exactly as a tick would.
//! How SRE teams check a threshold against numbers they already have, without a Prometheus.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::judge::checks::fmt;
use crate::judge::sequential::{TickCounts, judge_series};
use crate::judge::{MetricInput, Observation, Score, ScoreOutcome, judge_tick};
use crate::rules::Rule;
use crate::verdict::Check;

#[derive(Debug, Args)]
pub struct JudgeArgs {
    /// The rule file whose metrics judge the samples.
    #[arg(long)]
    pub rule: PathBuf,
    /// JSON: {"<metric>": {"canary": [..], "baseline": [..]}} (null stands for NaN); for
    /// sequential metrics per-tick increases {"canary": {"events": [..], "requests": [..]}, ...}.
    #[arg(long)]
    pub samples: PathBuf,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// One metric's samples: window values, or per-tick counter increases for sequential metrics.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Pair {
    Values {
        canary: Vec<Option<f64>>,
        baseline: Vec<Option<f64>>,
    },
    Counts {
        canary: CountSeries,
        baseline: CountSeries,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CountSeries {
    events: Vec<f64>,
    requests: Vec<f64>,
}

/// Per-tick increases of a sequential metric, zipped tick by tick.
fn ticks(c: &CountSeries, b: &CountSeries) -> Result<Vec<TickCounts>, String> {
    let n = c.requests.len();
    if [c.events.len(), b.events.len(), b.requests.len()]
        .iter()
        .any(|l| *l != n)
    {
        return Err("events and requests must have one value per tick on both sides".into());
    }
    Ok((0..n)
        .map(|i| TickCounts {
            canary_events: c.events[i],
            canary_requests: c.requests[i],
            baseline_events: b.events[i],
            baseline_requests: b.requests[i],
        })
        .collect())
}

/// What a tick with these checks means for a rollout, in one word.
pub fn decision(checks: &[Check], score: &Score) -> &'static str {
    if checks.iter().any(Check::rolls_back_now)
        || (score.outcome == ScoreOutcome::Fail && !score.nodata)
    {
        "fail"
    } else if score.nodata {
        "nodata"
    } else if score.outcome == ScoreOutcome::Marginal {
        "marginal"
    } else {
        "pass"
    }
}

/// The contract of design.md for one check.
pub fn check_json(c: &Check) -> Value {
    json!({
        "name": &*c.metric,
        "verdict": c.verdict,
        "classification": c.classification,
        "critical": c.critical,
        "critical_effect": c.critical_effect,
        "canary": c.canary,
        "baseline": c.baseline,
        "threshold": c.threshold,
        "p_value": c.p_value(),
        "interval": c.interval(),
        "estimate": c.estimate(),
        "effect": c.effect(),
        "ratio": c.ratio,
        "samples": {"canary": c.canary_samples, "baseline": c.baseline_samples},
        "reason": c.reason,
    })
}

/// The rule file with the metric templates of its folder (`rules::load_rule_file`).
pub fn load_one_rule(path: &Path) -> Result<Rule, String> {
    crate::rules::load_rule_file(path).map_err(|errors| {
        errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// Exit 0 pass, 1 fail (or marginal / no data), 2 bad input.
pub fn run(args: &JudgeArgs) -> i32 {
    let rule = match load_one_rule(&args.rule) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    let samples: BTreeMap<String, Pair> = match std::fs::read_to_string(&args.samples)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{}: {e}", args.samples.display());
            return 2;
        }
    };
    if let Some(unknown) = samples
        .keys()
        .find(|k| !rule.metrics().any(|m| &m.name == *k))
    {
        let known: Vec<&str> = rule.metrics().map(|m| m.name.as_str()).collect();
        eprintln!(
            "{}: metric {unknown:?} is not in rule {} (metrics: {})",
            args.samples.display(),
            rule.name(),
            known.join(", ")
        );
        return 2;
    }
    let observe =
        |v: &[Option<f64>]| Observation::from_values(v.iter().map(|x| x.unwrap_or(f64::NAN)));
    let sequential = rule.sequential_metrics();
    let mut inputs = Vec::new();
    let mut trajectories = BTreeMap::new();
    for m in rule.metrics() {
        // Recorded samples are one count per tick; a histogram test needs every edge's buckets,
        // so judging it from them would answer a different question.
        if samples.contains_key(&m.name)
            && matches!(m.kind(), crate::rules::schema::MetricKind::Histogram { .. })
        {
            eprintln!(
                "{}: metric {} is a sequential_histogram test; `canaryd judge` replays counts, \
                 not buckets (replay it with `canaryd simulate --rule`)",
                args.samples.display(),
                m.name
            );
            return 2;
        }
        let input = match (samples.get(&m.name), m.is_sequential()) {
            (Some(Pair::Values { canary, baseline }), false) => {
                MetricInput::Window(observe(canary), observe(baseline))
            }
            (Some(Pair::Counts { canary, baseline }), true) => {
                let series = match ticks(canary, baseline) {
                    Ok(t) => t,
                    Err(e) => {
                        eprintln!("{}: metric {}: {e}", args.samples.display(), m.name);
                        return 2;
                    }
                };
                let (check, failed_at, e) =
                    judge_series(m, &m.sequential_config(sequential), &series);
                trajectories.insert(m.name.clone(), (failed_at, e));
                MetricInput::Judged(Box::new(check))
            }
            (None, _) => MetricInput::Window(
                Observation::Empty { dropped: 0 },
                Observation::Empty { dropped: 0 },
            ),
            (Some(_), seq) => {
                eprintln!(
                    "{}: metric {} is {}, so its samples must be {}",
                    args.samples.display(),
                    m.name,
                    if seq { "sequential" } else { "a window metric" },
                    if seq {
                        r#"{"canary": {"events": [..], "requests": [..]}, "baseline": {...}}"#
                    } else {
                        r#"{"canary": [..], "baseline": [..]}"#
                    }
                );
                return 2;
            }
        };
        inputs.push(input);
    }
    let (checks, score) = judge_tick(rule.metrics(), &inputs, &rule.spec.analysis);
    let decision = decision(&checks, &score);
    match args.format {
        Format::Json => {
            let metrics: Vec<Value> = checks
                .iter()
                .map(|c| {
                    let mut v = check_json(c);
                    if let (Some((failed_at, e)), Some(obj)) =
                        (trajectories.get(&*c.metric), v.as_object_mut())
                    {
                        obj.insert("evidence".into(), json!(c.evidence));
                        obj.insert("fails_at_tick".into(), json!(failed_at));
                        obj.insert("e_by_tick".into(), json!(e));
                    }
                    v
                })
                .collect();
            let out = json!({
                "rule": rule.name(),
                "metrics": metrics,
                "score": score,
                "decision": decision,
            });
            println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        }
        Format::Text => print!("{}", table(&checks, &score, decision)),
    }
    i32::from(decision != "pass")
}

fn opt(v: Option<f64>) -> String {
    v.map(fmt).unwrap_or_else(|| "-".into())
}

/// An aligned table for people, then each metric's reason.
pub fn table(checks: &[Check], score: &Score, decision: &str) -> String {
    let header = [
        "METRIC",
        "VERDICT",
        "CLASS",
        "CANARY",
        "BASELINE",
        "THRESHOLD",
        "P-VALUE",
        "INTERVAL",
        "EFFECT",
    ];
    let rows: Vec<[String; 9]> = checks
        .iter()
        .map(|c| {
            [
                format!("{}{}", c.metric, if c.critical { " *" } else { "" }),
                word(&c.verdict),
                c.classification
                    .map(|k| word(&k))
                    .unwrap_or_else(|| "-".into()),
                opt(c.canary),
                opt(c.baseline),
                c.threshold
                    .map(|t| format!("{} {}", word(&t.kind), fmt(t.value)))
                    .unwrap_or_else(|| "-".into()),
                c.p_value()
                    .map(|p| format!("{p:.4}"))
                    .unwrap_or_else(|| "-".into()),
                c.interval()
                    .map(|(a, b)| format!("[{}, {}]", fmt(a), fmt(b)))
                    .unwrap_or_else(|| "-".into()),
                opt(c.effect()),
            ]
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = String::new();
    out.push_str(&line(header.to_vec()));
    out.push('\n');
    for r in &rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out.push_str(&format!(
        "\nscore {:.1} ({}): {}\ndecision: {decision}\n",
        score.value,
        word(&score.outcome),
        score.reason
    ));
    for c in checks {
        out.push_str(&format!("  {}: {}\n", c.metric, c.reason));
    }
    out
}

fn word<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}
