//! The rule file as users write it (v1 of design.md).
//!
//! Types here are deserialised straight from YAML with `deny_unknown_fields`, so a typo is an
//! error with file:line:col instead of a silently ignored setting. Fields that later validation
//! must point at (steps, metrics, queries) keep their source location in a [`Spanned`].

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

pub use super::schema_metric::{
    Compare, DEFAULT_ALLOWED_DECREASE, DEFAULT_ALLOWED_INCREASE, MetricKind, MetricSpec,
    OutliersMode, TestKind,
};
use super::shared::Shared;
use super::vars::Vars;

/// One service policy: which series to compare, how traffic moves, what counts as worse.
///
/// Blocks most rules leave out or set a few of (hooks, traffic, windows, verify, a sequential
/// metric's counters) are boxed: inline, every `Spanned` carries two source locations, and a
/// rule was 2 KB before it held a single value (issue 14 keeps a rule per service, 10,000 of
/// them); boxed, an absent block costs a pointer.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub name: Spanned<String>,
    pub selector: SelectorSpec,
    /// Shared like `metrics`: many rules roll out in the same steps.
    pub steps: Spanned<Shared<Vec<Spanned<StepSpec>>>>,
    /// Shared like `steps`: rules written from one template mostly time their analysis alike
    /// (120 bytes a rule inline).
    #[serde(default)]
    pub analysis: Shared<AnalysisSpec>,
    /// Shared: rules of one load hold one copy of each equal metric, and of each equal list
    /// of them (`rules::shared`).
    pub metrics: Spanned<Shared<Vec<Spanned<Shared<MetricSpec>>>>>,
    #[serde(default)]
    pub health: Vec<Spanned<HealthSpec>>,
    #[serde(default)]
    pub windows: Option<Box<WindowsSpec>>,
    /// Checkpoints after promotion (`rollout::verify`).
    #[serde(default)]
    pub verify: Option<Box<VerifySpec>>,
    #[serde(default)]
    pub hooks: HooksSpec,
    /// A built-in traffic provider that moves the weight itself, before the `set_weight` hook.
    #[serde(default)]
    pub traffic: Option<Box<Spanned<super::traffic::TrafficSpec>>>,
    /// Shared: nearly every rule has none (48 bytes a rule inline).
    #[serde(default)]
    pub alerts: Shared<AlertsSpec>,
    /// Extra template variables, so teams share one query shape across services.
    #[serde(default)]
    pub vars: Vars,
}

/// PromQL label matchers that pick each group's series; spliced into queries as `{{selector}}`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SelectorSpec {
    pub canary: String,
    pub baseline: String,
}

/// A traffic weight and how long it must stay healthy before the next one.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    pub weight: u32,
    /// Absent on the last step: reaching 100 % after healthy steps is the promotion.
    #[serde(default, with = "opt_duration")]
    pub hold: Option<Duration>,
    /// A gate: wait for a human `approve` before leaving this step.
    #[serde(default)]
    pub approval: bool,
}

impl StepSpec {
    pub fn hold(&self) -> Duration {
        self.hold.unwrap_or_default()
    }
}

/// Analysis timing and rollout-level limits.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AnalysisSpec {
    #[serde(with = "duration")]
    pub interval: Duration,
    #[serde(with = "duration")]
    pub window: Duration,
    #[serde(with = "duration")]
    pub step: Duration,
    #[serde(with = "duration")]
    pub warmup: Duration,
    pub failure_limit: u32,
    pub nodata_limit: u32,
    /// What reaching `nodata_limit` does: `pause` (default; resumes when data returns) or
    /// `rollback`, for services where flying blind is worse than undoing the release.
    pub on_nodata: OnNodata,
    /// Fewer finite samples than this in a group is no data: one point proves nothing.
    pub min_samples: usize,
    pub score: ScoreSpec,
    /// A group whose newest point is older than this at a tick is no data (the series stopped).
    /// Default: two `step`s, see [`AnalysisSpec::max_staleness`].
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub max_staleness: Option<Duration>,
}

impl AnalysisSpec {
    /// A live series has a point at every evaluation `step`, so its newest is less than one
    /// step old; two steps forgive one late scrape, anything older means the series stopped.
    pub fn max_staleness(&self) -> Duration {
        self.max_staleness
            .unwrap_or_else(|| self.step.saturating_mul(2))
    }
}

impl Default for AnalysisSpec {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(60),
            window: Duration::from_secs(600),
            step: Duration::from_secs(15),
            warmup: Duration::from_secs(300),
            failure_limit: 3,
            nodata_limit: 5,
            on_nodata: OnNodata::Pause,
            min_samples: 3,
            score: ScoreSpec::default(),
            max_staleness: None,
        }
    }
}

/// What a rollout does after `nodata_limit` consecutive ticks without data.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnNodata {
    #[default]
    Pause,
    Rollback,
}

/// Kayenta-style score cut-offs (0–100).
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ScoreSpec {
    pub pass: f64,
    pub marginal: f64,
}

impl Default for ScoreSpec {
    fn default() -> Self {
        Self {
            pass: 95.0,
            marginal: 75.0,
        }
    }
}

/// A canary health endpoint polled directly, as the runbooks' "health endpoint fails" trigger.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSpec {
    #[serde(serialize_with = "crate::redact::serialize_url")]
    pub url: String,
    #[serde(default = "ten_seconds", with = "duration")]
    pub interval: Duration,
    #[serde(default = "three")]
    pub failure_limit: u32,
}

fn ten_seconds() -> Duration {
    Duration::from_secs(10)
}
fn three() -> u32 {
    3
}

/// When promotion may advance; rollback is allowed any time.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WindowsSpec {
    pub timezone: Spanned<String>,
    #[serde(default)]
    pub allow: Vec<Spanned<String>>,
    /// Dated blackouts, `FIRST/LAST` inclusive (`rules::window::Blackout`).
    #[serde(default)]
    pub deny: Vec<Spanned<String>>,
}

/// The actions on the world. Absent hooks are no-ops, so a rule can watch without acting.
/// Call hooks are shared between the rules of a load that call the same endpoint alike
/// (`rules::shared`), as one deploy API for every service commonly is.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HooksSpec {
    #[serde(default)]
    pub set_weight: Option<Shared<Spanned<HookSpec>>>,
    #[serde(default)]
    pub promote: Option<Shared<Spanned<HookSpec>>>,
    #[serde(default)]
    pub rollback: Option<Shared<Spanned<HookSpec>>>,
    /// Called with the previous version when a checkpoint after promotion fails and
    /// `verify.revert_on_failure` is set.
    #[serde(default)]
    pub revert: Option<Shared<Spanned<HookSpec>>>,
    /// Before any traffic moves (e.g. apply migrations); a failure ends the rollout.
    #[serde(default)]
    pub pre_rollout: Option<Shared<Spanned<HookSpec>>>,
    /// The canary's readiness endpoint: must answer 2xx before each weight increase.
    #[serde(default)]
    pub readiness: Option<Box<Spanned<ReadinessSpec>>>,
    /// After a rollback of a reversible migration, once traffic is back on the baseline.
    #[serde(default)]
    pub migrate_down: Option<Shared<Spanned<HookSpec>>>,
}

impl HooksSpec {
    /// Every configured call hook (not `readiness`, a probe): the one list every check walks, so
    /// a hook added here is validated and bounded like the others.
    pub fn calls(&self) -> impl Iterator<Item = &Spanned<HookSpec>> {
        [
            &self.set_weight,
            &self.promote,
            &self.rollback,
            &self.revert,
            &self.pre_rollout,
            &self.migrate_down,
        ]
        .into_iter()
        .filter_map(Option::as_deref)
    }
}

/// `verify: { checkpoints: [15m, 1h, 24h], revert_on_failure: true }`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VerifySpec {
    /// Times after the promotion, each a humantime duration, increasing.
    pub checkpoints: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    pub revert_on_failure: bool,
}

/// A GET that must answer 2xx before the weight goes up; anything else holds the step.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReadinessSpec {
    #[serde(serialize_with = "crate::redact::serialize_url")]
    pub url: String,
    #[serde(default = "two_seconds", with = "duration")]
    pub timeout: Duration,
}

fn two_seconds() -> Duration {
    Duration::from_secs(2)
}

/// An HTTP endpoint or a command; exactly one of `url` and `command`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HookSpec {
    /// Serialized redacted: serializing a rule is for showing it (the snapshot keeps the text).
    #[serde(default, serialize_with = "crate::redact::serialize_opt_url")]
    pub url: Option<String>,
    #[serde(default)]
    pub command: Option<Vec<String>>,
    #[serde(default = "ten_seconds", with = "duration")]
    pub timeout: Duration,
    #[serde(default = "three")]
    pub retries: u32,
    /// A file holding the HMAC-SHA256 key for `X-Canaryd-Signature` (HTTP hooks). Only the path
    /// is kept; the key is read at each call so it never sits in a rule, a log or the API.
    #[serde(default)]
    pub secret_file: Option<std::path::PathBuf>,
}

/// Alertmanager matchers whose firing alerts stop the rule's live rollouts.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AlertsSpec {
    #[serde(default)]
    pub rollback_on: Vec<Spanned<String>>,
    #[serde(default)]
    pub pause_on: Vec<Spanned<String>>,
}

/// humantime durations (`30s`, `5m`, `24h`) with the bad text in the error message.
pub(crate) mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(text.trim()).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration {text:?} ({e}); write e.g. 30s, 5m, 24h"
            ))
        })
    }

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
}

pub(crate) mod opt_duration {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        super::duration::deserialize(d).map(Some)
    }

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::duration::serialize(d, s),
            None => s.serialize_none(),
        }
    }
}
