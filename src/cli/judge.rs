//! `canaryd judge`: judge recorded samples offline with a rule, exactly as a tick would.
//! How SRE teams check a threshold against numbers they already have, without a Prometheus.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::judge::checks::fmt;
use crate::judge::{Check, Observation, Score, ScoreOutcome, judge_tick};
use crate::rules::{Rule, load_paths};

#[derive(Debug, Args)]
pub struct JudgeArgs {
    /// The rule file whose metrics judge the samples.
    #[arg(long)]
    pub rule: PathBuf,
    /// JSON: {"<metric>": {"canary": [..], "baseline": [..]}}; null stands for NaN.
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Pair {
    canary: Vec<Option<f64>>,
    baseline: Vec<Option<f64>>,
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
        "name": c.metric,
        "verdict": c.verdict,
        "classification": c.classification,
        "critical": c.critical,
        "canary": c.canary,
        "baseline": c.baseline,
        "threshold": c.threshold,
        "p_value": c.p_value,
        "interval": c.interval,
        "estimate": c.estimate,
        "effect": c.effect,
        "ratio": c.ratio,
        "samples": {"canary": c.canary_samples, "baseline": c.baseline_samples},
        "reason": c.reason,
    })
}

pub fn load_one_rule(path: &Path) -> Result<Rule, String> {
    let (mut rules, errors) = load_paths(&[path.display().to_string()]);
    if !errors.is_empty() {
        return Err(errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n"));
    }
    match rules.len() {
        1 => Ok(rules.remove(0)),
        n => Err(format!(
            "{}: expected one rule file, found {n}",
            path.display()
        )),
    }
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
    let observations: Vec<(Observation, Observation)> = rule
        .metrics()
        .map(|m| match samples.get(&m.name) {
            Some(p) => (observe(&p.canary), observe(&p.baseline)),
            None => (
                Observation::Empty { dropped: 0 },
                Observation::Empty { dropped: 0 },
            ),
        })
        .collect();
    let (checks, score) = judge_tick(rule.metrics(), &observations, &rule.spec.analysis);
    let decision = decision(&checks, &score);
    match args.format {
        Format::Json => {
            let out = json!({
                "rule": rule.name(),
                "metrics": checks.iter().map(check_json).collect::<Vec<_>>(),
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
                c.p_value
                    .map(|p| format!("{p:.4}"))
                    .unwrap_or_else(|| "-".into()),
                c.interval
                    .map(|(a, b)| format!("[{}, {}]", fmt(a), fmt(b)))
                    .unwrap_or_else(|| "-".into()),
                opt(c.effect),
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
