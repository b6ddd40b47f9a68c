//! What no policy can do on the simulated fleet: the ceiling behind issue 10's "latency + 30 %
//! ≥ 95 % detected" target, computed from the world's own noise settings.
//!
//! Why: a policy can be tuned until its numbers look right, or shown to sit at a limit. Canary
//! and baseline run on different hosts, so the canary's latency relative to the baseline's is
//! `factor × exp(O + W_t)`: a static host offset O (each group's `offset_sd`) and the groups'
//! own AR(1) wobbles W_t (`group`), there whatever the code does. Telling "+ 30 %" from
//! "healthy" on that ratio is telling a mean of ln 1.3 from a mean of 0 on a Gaussian path;
//! by the Neyman-Pearson lemma the most powerful test at a given false-rollback rate, over
//! everything decided on the same minutes (any rule, window, bucket edge, confirmation count,
//! sequential or not: rolling back within the hold is an event of the hold's data), is the
//! generalised-least-squares mean of the path, with power Φ(ln(factor)·√I − z₁₋α), I = 1'K⁻¹1.
//! The healthy rate is averaged over the fleet's draws of O and W, as `canaryd simulate`
//! measures it, so the lemma applies to the two mixtures directly.
//!
//! The ceiling is generous on purpose: each minute's ratio is measured from every request's
//! exact latency at the day's peak load (not through histogram buckets), so a policy below it
//! may still be improvable, but none can be above it. `level_information` adds what only an
//! oracle that knew the healthy latency exactly could use (the groups' product, which carries
//! the shared wobble), to show how little is left outside the ratio.
//!
//! Architecture Invariant: pure arithmetic on the world's settings, like the rest of `simulate`.

use statrs::distribution::{ContinuousCDF, Normal};

use super::world::{Noise, WorldSpec};

/// One minute of data a policy may decide on: when, and at which canary weight (percent).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Minute {
    pub at: f64,
    pub weight: f64,
}

/// The minutes a rule sees over its steps: for each `(start, end, weight)` of a step, every
/// minute from `start + warmup` to `end` (both ends included: generous by one minute).
pub fn judged_minutes(steps: &[(f64, f64, f64)], warmup: f64) -> Vec<Minute> {
    let mut out = Vec::new();
    for &(start, end, weight) in steps {
        let mut at = start + warmup;
        while at <= end {
            out.push(Minute { at, weight });
            at += 1.0;
        }
    }
    out
}

/// A stationary AR(1) component of a path: variance and time constant (minutes).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ar1 {
    pub variance: f64,
    pub minutes: f64,
}

/// 1'K⁻¹1 for a path seen at `seen`: K is a static part (`fixed` variance, one draw per
/// rollout) + independent AR(1) components + each minute's own noise (`white`). It is the
/// information about a constant shift of the path's mean. A Kalman filter over the components
/// fed y = 1 gives 1'(C + D)⁻¹1 in one pass (Σ v_t² / F_t); Sherman-Morrison adds `fixed`.
pub fn information(
    components: &[Ar1],
    fixed: f64,
    seen: &[Minute],
    white: impl Fn(&Minute) -> f64,
) -> f64 {
    let k = components.len();
    let mut x = vec![0.0; k];
    let mut p: Vec<Vec<f64>> = (0..k)
        .map(|i| {
            (0..k)
                .map(|j| if i == j { components[i].variance } else { 0.0 })
                .collect()
        })
        .collect();
    let mut a = 0.0;
    let mut last: Option<f64> = None;
    for m in seen {
        if let Some(t) = last {
            let phi: Vec<f64> = components
                .iter()
                .map(|c| (-(m.at - t) / c.minutes.max(1e-9)).exp())
                .collect();
            for i in 0..k {
                x[i] *= phi[i];
                for j in 0..k {
                    p[i][j] *= phi[i] * phi[j];
                }
                p[i][i] += components[i].variance * (1.0 - phi[i] * phi[i]);
            }
        }
        last = Some(m.at);
        let row: Vec<f64> = p.iter().map(|r| r.iter().sum()).collect();
        let f = row.iter().sum::<f64>() + white(m);
        if f <= 0.0 || !f.is_finite() {
            continue;
        }
        let v = 1.0 - x.iter().sum::<f64>();
        a += v * v / f;
        for i in 0..k {
            x[i] += row[i] / f * v;
        }
        for i in 0..k {
            for j in 0..k {
                p[i][j] -= row[i] * row[j] / f;
            }
        }
    }
    a / (1.0 + fixed * a)
}

/// Information in canary latency / baseline latency (ln), the only reference a policy that
/// compares the two groups has: the shared wobble cancels; the groups' wobbles and host
/// offsets do not. Sampling noise is σ²/n per group, n the group's requests in the minute at
/// `peak`× the mean load (exact latencies, far better than buckets); `None` leaves it out.
pub fn ratio_information(spec: &WorldSpec, seen: &[Minute], peak: Option<f64>) -> f64 {
    let n: &Noise = &spec.noise;
    let wobble = Ar1 {
        variance: 2.0 * n.group.sd * n.group.sd,
        minutes: n.group.minutes,
    };
    let sigma2 = spec.latency_sigma * spec.latency_sigma;
    let white = |m: &Minute| match peak {
        None => 0.0,
        Some(load) => {
            let per_minute = spec.rps * 60.0 * load;
            let share = (m.weight / 100.0).clamp(1e-9, 1.0 - 1e-9);
            sigma2 / (per_minute * share) + sigma2 / (per_minute * (1.0 - share))
        }
    };
    information(&[wobble], 2.0 * n.offset_sd * n.offset_sd, seen, white)
}

/// What an oracle that knew the healthy latency exactly would add: canary × baseline latency
/// (ln), independent of the ratio (the groups are alike), carrying the shared wobble twice.
/// No policy knows the healthy level that well; this only shows how far the ratio's ceiling is
/// from the last bit of information the world contains.
pub fn level_information(spec: &WorldSpec, seen: &[Minute]) -> f64 {
    let n: &Noise = &spec.noise;
    let components = [
        Ar1 {
            variance: 4.0 * n.shared.sd * n.shared.sd,
            minutes: n.shared.minutes,
        },
        Ar1 {
            variance: 2.0 * n.group.sd * n.group.sd,
            minutes: n.group.minutes,
        },
    ];
    information(&components, 2.0 * n.offset_sd * n.offset_sd, seen, |_| 0.0)
}

/// The most any test can catch of canaries `factor` times slower, rolling back at most
/// `false_rate` of healthy ones, with `information` about the shift (Neyman-Pearson on a
/// Gaussian path: separation ln(factor)·√information).
pub fn power_ceiling(factor: f64, false_rate: f64, information: f64) -> f64 {
    let Ok(z) = Normal::new(0.0, 1.0) else {
        return f64::NAN;
    };
    z.cdf(factor.ln() * information.sqrt() - z.inverse_cdf(1.0 - false_rate))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet() -> WorldSpec {
        WorldSpec::fleet(super::super::HIGH_RPS)
    }

    /// `rules/hotrodan.yaml` in a 2 h hold: three steps of 40 minutes (5, 25, 50 %), 15 minutes
    /// of warmup each, then 100 % (promotion, nothing compared).
    fn two_hour_hold() -> Vec<Minute> {
        judged_minutes(
            &[(0.0, 40.0, 5.0), (40.0, 80.0, 25.0), (80.0, 120.0, 50.0)],
            15.0,
        )
    }

    #[test]
    fn the_filter_agrees_with_the_closed_form_for_a_markov_path() {
        // Without sampling noise, 1'C⁻¹1 of an AR(1) seen at t_i is
        // (1 + Σ (1 − φ_i)/(1 + φ_i)) / σ², φ_i = exp(−Δt_i/τ); then Sherman-Morrison.
        let spec = fleet();
        let seen = two_hour_hold();
        let n = spec.noise;
        let s2 = 2.0 * n.group.sd * n.group.sd;
        let mut a = 1.0 / s2;
        for pair in seen.windows(2) {
            let phi = (-(pair[1].at - pair[0].at) / n.group.minutes).exp();
            a += (1.0 - phi) / (s2 * (1.0 + phi));
        }
        let expected = a / (1.0 + 2.0 * n.offset_sd * n.offset_sd * a);
        let got = ratio_information(&spec, &seen, None);
        assert!(
            (got - expected).abs() < 1e-9 * expected,
            "{got} vs {expected}"
        );
        // Sampling noise only ever removes information.
        assert!(ratio_information(&spec, &seen, Some(1.5)) < got);
        // Two components where one has no variance are the other alone.
        let one = Ar1 {
            variance: s2,
            minutes: n.group.minutes,
        };
        let none = Ar1 {
            variance: 0.0,
            minutes: 7.0,
        };
        let fixed = 2.0 * n.offset_sd * n.offset_sd;
        let two = information(&[one, none], fixed, &seen, |_| 0.0);
        assert!(
            (two - expected).abs() < 1e-9 * expected,
            "{two} vs {expected}"
        );
    }

    #[test]
    fn no_relative_policy_catches_95_percent_of_thirty_percent_slower_canaries_in_two_hours() {
        let spec = fleet();
        let seen = two_hour_hold();
        let every_minute = judged_minutes(&[(0.0, 120.0, 50.0)], 0.0);
        let ceiling =
            |seen: &[Minute], peak| power_ceiling(1.3, 0.01, ratio_information(&spec, seen, peak));
        let (traffic, exact, no_warmup) = (
            ceiling(&seen, Some(1.5)),
            ceiling(&seen, None),
            ceiling(&every_minute, None),
        );
        let oracle = power_ceiling(
            1.3,
            0.01,
            ratio_information(&spec, &seen, None) + level_information(&spec, &seen),
        );
        println!(
            "ceiling at 1 % false rollbacks, latency + 30 %, 2 h hold: judged minutes with the \
             traffic's sampling noise {:.1} %; exact ratio {:.1} %; every minute {:.1} %; \
             knowing the healthy level too {:.1} %",
            traffic * 100.0,
            exact * 100.0,
            no_warmup * 100.0,
            oracle * 100.0
        );
        assert!(traffic < exact && exact < 0.95, "{traffic} {exact}");
        // A perfect view of every minute is at the very edge; the absolute level, which no
        // rule knows that well, adds little.
        assert!((0.95..0.96).contains(&no_warmup), "{no_warmup}");
        assert!(oracle > exact && oracle < 0.97, "{oracle}");
    }

    #[test]
    fn a_whole_day_does_not_rule_the_target_out() {
        // 24 h hold, 8 h a step: the ceiling is far above 95 %, so a shortfall there is the
        // policy's, not the fleet's.
        let spec = fleet();
        let seen = judged_minutes(
            &[
                (0.0, 480.0, 5.0),
                (480.0, 960.0, 25.0),
                (960.0, 1440.0, 50.0),
            ],
            15.0,
        );
        let c = power_ceiling(1.3, 0.01, ratio_information(&spec, &seen, Some(1.5)));
        println!(
            "ceiling at 1 % false rollbacks, latency + 30 %, 24 h hold: {:.2} %",
            c * 100.0
        );
        assert!(c > 0.99, "{c}");
        // A smaller effect is harder: the ceiling is monotone in the factor.
        let info = ratio_information(&spec, &seen, Some(1.5));
        assert!(power_ceiling(1.2, 0.01, info) < c);
    }
}
