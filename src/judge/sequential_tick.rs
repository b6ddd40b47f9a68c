//! One tick of the sequential test for counts ([`super::sequential`]): the counters read at
//! the tick in, a check and the next state out; and the replay of recorded increases behind
//! `canaryd judge`. The rules every sequential tick follows (`begin_tick`, `tick_verdict`,
//! `evidence_check`) are shared with the histogram test's tick
//! ([`super::sequential_hist_tick`]). Pure.

use super::sequential::{Counters, EProcess, SequentialState, TickCounts};
use crate::rules::schema::MetricSpec;
use crate::verdict::{Check, Evidence, SequentialConfig, Stats, Threshold, ThresholdKind, Verdict};

/// One tick of a sequential metric: new counters in, a check and the next state out. Pure.
pub fn judge_counts(
    spec: &MetricSpec,
    cfg: &SequentialConfig,
    previous: Option<&SequentialState>,
    now: Result<Counters, String>,
    step: usize,
) -> (Check, Option<SequentialState>) {
    let (now, mut state) = match begin_tick(spec, cfg, previous, now, "request counter") {
        Ok(begun) => begun,
        Err(check) => return (*check, previous.cloned()),
    };
    let primed = state.primed_step == Some(step);
    if primed {
        let counts = now.since(&state.last);
        state
            .process
            .update_capped(&counts, cfg.margin, cfg.log_tick_cap());
    }
    state.last = now;
    state.primed_step = Some(step);
    let evidence = state.process.evidence(cfg);
    let what = if spec.slower_than.is_some() {
        "slow requests"
    } else {
        "events"
    };
    let rejects = state.process.rejects(cfg);
    let (verdict, reason) = tick_verdict(primed, rejects, "counters", evidence.sentence(what));
    let check = evidence_check(spec, verdict, reason, evidence);
    (check, Some(state))
}

/// What every sequential tick does first: counters that could not be read are an `error`, and
/// no request series on either side is `nodata` (the reason names them `series`), and the
/// caller keeps the state as it was; otherwise the counters and the state to update (a new one
/// at the first look).
pub(super) fn begin_tick(
    spec: &MetricSpec,
    cfg: &SequentialConfig,
    previous: Option<&SequentialState>,
    now: Result<Counters, String>,
    series: &str,
) -> Result<(Counters, SequentialState), Box<Check>> {
    let now = match now {
        Err(message) => return Err(Box::new(Check::new(spec, Verdict::Error, message))),
        Ok(c) if c.is_empty() => {
            let why = format!("no {series} series for canary or baseline");
            return Err(Box::new(Check::new(spec, Verdict::Nodata, why)));
        }
        Ok(c) => c,
    };
    let state = previous.cloned().unwrap_or_else(|| SequentialState {
        process: EProcess::new(cfg),
        last: Counters::default(),
        primed_step: None,
        histogram: None,
    });
    Ok((now, state))
}

/// A tick's verdict: the first look at a step only records what it saw (`nodata`, naming
/// what was `recorded`); after it the test passes until it rejects.
pub(super) fn tick_verdict(
    primed: bool,
    rejects: bool,
    recorded: &str,
    sentence: String,
) -> (Verdict, String) {
    if !primed {
        let why = format!(
            "first look at this step: {recorded} recorded, increases start next tick ({sentence})"
        );
        (Verdict::Nodata, why)
    } else if rejects {
        (Verdict::Fail, sentence)
    } else {
        (Verdict::Pass, sentence)
    }
}

/// A sequential verdict carries its evidence: rates as canary and baseline values, the
/// always-valid p-value, the best-supported ratio as effect and M/alpha as threshold.
pub(super) fn evidence_check(
    spec: &MetricSpec,
    verdict: Verdict,
    reason: String,
    evidence: Evidence,
) -> Check {
    let mut check = Check::new(spec, verdict, reason);
    check.canary = evidence.canary_rate;
    check.baseline = evidence.baseline_rate;
    check.set_stats(Stats {
        p_value: Some(evidence.p_value),
        effect: evidence.best_ratio,
        ..Stats::default()
    });
    check.threshold = Some(Threshold {
        kind: ThresholdKind::Evidence,
        value: evidence.threshold,
    });
    check.canary_samples = evidence.ticks as usize;
    check.baseline_samples = evidence.ticks as usize;
    check.evidence = Some(Box::new(evidence));
    check
}

/// Replays recorded per-tick increases (`canaryd judge`): the check as of the tick the test
/// failed (or the last tick), that tick's number (1-based), and E after every tick.
pub fn judge_series(
    spec: &MetricSpec,
    cfg: &SequentialConfig,
    ticks: &[TickCounts],
) -> (Check, Option<usize>, Vec<f64>) {
    let mut process = EProcess::new(cfg);
    let mut trajectory = Vec::with_capacity(ticks.len());
    let mut failed_at = None;
    for (i, t) in ticks.iter().enumerate() {
        process.update_capped(t, cfg.margin, cfg.log_tick_cap());
        trajectory.push(process.e_value());
        if process.rejects(cfg) {
            failed_at = Some(i + 1);
            break;
        }
    }
    let evidence = process.evidence(cfg);
    let what = if spec.slower_than.is_some() {
        "slow requests"
    } else {
        "events"
    };
    let (verdict, reason) = match failed_at {
        _ if process.ticks == 0 => (
            Verdict::Nodata,
            "no tick had requests on both sides".to_string(),
        ),
        Some(k) => (
            Verdict::Fail,
            format!("fails at tick {k}: {}", evidence.sentence(what)),
        ),
        None => (Verdict::Pass, evidence.sentence(what)),
    };
    let check = evidence_check(spec, verdict, reason, evidence);
    (check, failed_at, trajectory)
}
