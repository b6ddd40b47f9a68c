//! A [`Check`]'s JSON: the flat object, field for field and in the order it always had, whatever
//! the check keeps inline. Written from borrowed fields (no copy of the check to serialise it);
//! read into the flat form and then packed, so stored checks of every version load.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{Check, Classification, Evidence, Stats, Threshold, Verdict};

/// The JSON shape as written. Keep the field order and the skip rules: the API, the store,
/// reports and Alertmanager payloads are byte-for-byte this.
#[derive(Serialize)]
struct Out<'a> {
    metric: &'a str,
    verdict: Verdict,
    #[serde(skip_serializing_if = "Option::is_none")]
    classification: Option<Classification>,
    critical: bool,
    critical_effect: bool,
    canary: Option<f64>,
    baseline: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ratio: Option<f64>,
    threshold: Option<Threshold>,
    #[serde(skip_serializing_if = "Option::is_none")]
    p_value: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    interval: Option<(f64, f64)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    estimate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    effect: Option<f64>,
    canary_samples: usize,
    baseline_samples: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    evidence: Option<&'a Evidence>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    muted: bool,
    reason: &'a str,
}

/// The JSON shape as read: what every version wrote.
#[derive(Deserialize)]
struct In {
    metric: String,
    verdict: Verdict,
    classification: Option<Classification>,
    critical: bool,
    #[serde(default)]
    critical_effect: bool,
    canary: Option<f64>,
    baseline: Option<f64>,
    ratio: Option<f64>,
    threshold: Option<Threshold>,
    p_value: Option<f64>,
    interval: Option<(f64, f64)>,
    estimate: Option<f64>,
    effect: Option<f64>,
    canary_samples: usize,
    baseline_samples: usize,
    #[serde(default)]
    evidence: Option<Box<Evidence>>,
    #[serde(default)]
    muted: bool,
    reason: String,
}

impl Serialize for Check {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let stats = self.stats();
        Out {
            metric: &self.metric,
            verdict: self.verdict,
            classification: self.classification,
            critical: self.critical,
            critical_effect: self.critical_effect,
            canary: self.canary,
            baseline: self.baseline,
            ratio: self.ratio,
            threshold: self.threshold,
            p_value: stats.p_value,
            interval: stats.interval,
            estimate: stats.estimate,
            effect: stats.effect,
            canary_samples: self.canary_samples,
            baseline_samples: self.baseline_samples,
            evidence: self.evidence.as_deref(),
            muted: self.muted,
            reason: &self.reason,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Check {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let i = In::deserialize(d)?;
        let mut c = Check {
            classification: i.classification,
            critical: i.critical,
            critical_effect: i.critical_effect,
            muted: i.muted,
            canary: i.canary,
            baseline: i.baseline,
            ratio: i.ratio,
            threshold: i.threshold,
            canary_samples: i.canary_samples,
            baseline_samples: i.baseline_samples,
            evidence: i.evidence,
            ..Check::named(i.metric, i.verdict, i.reason)
        };
        c.set_stats(Stats {
            p_value: i.p_value,
            interval: i.interval,
            estimate: i.estimate,
            effect: i.effect,
        });
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde::{Deserialize, Serialize};

    use super::super::{Check, Classification, Evidence, Stats, Threshold, ThresholdKind, Verdict};

    /// The check as it was before it was packed, attributes and all: what every stored check,
    /// API answer, report and Alertmanager payload was written from.
    #[derive(Serialize, Deserialize)]
    struct Before {
        metric: String,
        verdict: Verdict,
        #[serde(skip_serializing_if = "Option::is_none")]
        classification: Option<Classification>,
        critical: bool,
        #[serde(default)]
        critical_effect: bool,
        canary: Option<f64>,
        baseline: Option<f64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        ratio: Option<f64>,
        threshold: Option<Threshold>,
        #[serde(skip_serializing_if = "Option::is_none")]
        p_value: Option<f64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        interval: Option<(f64, f64)>,
        #[serde(skip_serializing_if = "Option::is_none")]
        estimate: Option<f64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        effect: Option<f64>,
        canary_samples: usize,
        baseline_samples: usize,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        evidence: Option<Box<Evidence>>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        muted: bool,
        reason: String,
    }

    fn before(c: &Check) -> Before {
        Before {
            metric: c.metric.to_string(),
            verdict: c.verdict,
            classification: c.classification,
            critical: c.critical,
            critical_effect: c.critical_effect,
            canary: c.canary,
            baseline: c.baseline,
            ratio: c.ratio,
            threshold: c.threshold,
            p_value: c.p_value(),
            interval: c.interval(),
            estimate: c.estimate(),
            effect: c.effect(),
            canary_samples: c.canary_samples,
            baseline_samples: c.baseline_samples,
            evidence: c.evidence.clone(),
            muted: c.muted,
            reason: c.reason.clone(),
        }
    }

    /// A threshold check, a statistical one, a sequential one, a muted one with no data.
    fn checks() -> Vec<Check> {
        let lines = Check {
            canary: Some(0.07),
            baseline: Some(0.01),
            ratio: Some(7.0),
            threshold: Some(Threshold {
                kind: ThresholdKind::RollbackAbove,
                value: 0.05,
            }),
            critical: true,
            canary_samples: 6,
            baseline_samples: 6,
            ..Check::named("error_rate", Verdict::Fail, "canary 0.07 is above 0.05")
        };
        let mut stats = Check {
            classification: Some(Classification::High),
            critical_effect: true,
            canary: Some(0.3),
            baseline: Some(0.2),
            canary_samples: 30,
            baseline_samples: 29,
            ..Check::named("p95_latency", Verdict::Fail, "canary is higher")
        };
        stats.set_stats(Stats {
            p_value: Some(0.001),
            interval: Some((0.05, 0.15)),
            estimate: Some(0.1),
            effect: Some(1.5),
        });
        let mut sequential = Check {
            evidence: Some(Box::new(Evidence {
                e_value: 105.0,
                max_e: 120.0,
                p_value: 0.0083,
                threshold: 40.0,
                canary_rate: Some(0.011),
                baseline_rate: Some(0.005),
                best_ratio: Some(2.0),
                ticks: 12,
            })),
            ..Check::named("errors_seq", Verdict::Pass, "evidence 105 : 1")
        };
        sequential.set_stats(Stats {
            p_value: Some(0.0083),
            effect: Some(2.0),
            ..Stats::default()
        });
        let quiet = Check {
            muted: true,
            ..Check::named("cpu", Verdict::Nodata, "canary: query returned no series")
        };
        vec![lines, stats, sequential, quiet]
    }

    #[test]
    fn a_check_writes_the_json_it_always_did_and_reads_it_back() {
        for c in checks() {
            let json = serde_json::to_string(&c).expect("json");
            assert_eq!(json, serde_json::to_string(&before(&c)).expect("json"));
            let back: Check = serde_json::from_str(&json).expect("read");
            assert_eq!(back, c, "{json}");
        }
    }

    #[test]
    fn a_check_stored_before_critical_effect_and_muted_existed_still_loads() {
        let old = r#"{"metric":"error_rate","verdict":"pass","critical":false,"canary":0.01,"baseline":null,"threshold":null,"canary_samples":3,"baseline_samples":0,"reason":"ok"}"#;
        let c: Check = serde_json::from_str(old).expect("old check");
        assert_eq!((&*c.metric, c.reason.as_str()), ("error_rate", "ok"));
        assert_eq!((c.critical_effect, c.muted, c.stats), (false, false, None));
    }

    #[test]
    fn stats_all_none_keep_no_box() {
        let mut c = Check::named("m", Verdict::Pass, "");
        c.set_stats(Stats::default());
        assert!(c.stats.is_none());
        c.set_stats(Stats {
            estimate: Some(0.0),
            ..Stats::default()
        });
        assert_eq!(c.estimate(), Some(0.0));
        assert_eq!((c.p_value(), c.interval(), c.effect()), (None, None, None));
    }

    /// Every live rollout keeps its last tick's checks: these sizes are memory at scale.
    #[test]
    fn a_check_stays_small() {
        assert!(std::mem::size_of::<Check>() <= 144);
        assert!(std::mem::size_of::<Stats>() <= 72);
        let name: Arc<str> = Arc::from("error_rate");
        let a = Check::named(name.clone(), Verdict::Pass, "");
        assert!(
            Arc::ptr_eq(&a.metric, &name),
            "the name is shared, not copied"
        );
    }
}
