//! Rule files: what users write, checked so that a rule that loads can always run.
//!
//! `schema` is the YAML shape, `load` turns paths into rules or errors with file:line:col,
//! `validate` holds the semantic checks (`bounds` caps durations, `promql` parses every rendered
//! query), `templates` renders queries, `window` parses deploy windows, `traffic` the `traffic:`
//! key and `checkpoints` the checkpoints after promotion (reload is `controller::reload`).
//! `catalog` holds metric templates (files of `kind: metric_templates`), `resolve` turns a rule's
//! `template:` metrics into plain ones at load time, and `snapshot` keeps a rule with the
//! template files it used for its rollouts. `shared` holds what many rules hold alike (metrics
//! built on one template) once per load, and `vars` a rule's variables as a small sorted list.

mod bounds;
pub mod catalog;
pub mod checkpoints;
mod files;
mod kept_text;
mod lint;
pub mod load;
pub mod matchers;
mod promql;
mod resolve;
pub mod schema;
mod schema_metric;
pub mod shared;
mod snapshot;
pub mod templates;
pub mod traffic;
pub mod validate;
mod validate_metric;
pub mod vars;
pub mod window;

use std::borrow::Cow;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

pub use load::{load_paths, load_rule_file, parse_rule, parse_rule_with};
pub use schema::{MetricSpec, RuleSpec, StepSpec};
pub use snapshot::SnapshotError;
pub use window::Windows;

use kept_text::KeptText;
use templates::QueryVars;

/// A rule that passed every check; what rollouts run on.
#[derive(Debug, Clone)]
pub struct Rule {
    pub spec: RuleSpec,
    pub path: PathBuf,
    /// Boxed: most rules have none, and 10,000 rules each held 56 bytes for it.
    pub windows: Option<Box<Windows>>,
    /// Advice that did not stop the rule loading (`validate::lint`), made at load time: the
    /// metrics a loaded rule shares no longer know where they were written.
    pub warnings: Vec<RuleError>,
    /// What [`Rule::source`] writes out.
    pub(crate) source: Source,
}

/// What a rule was parsed from. A rule using metric templates keeps its own text and the
/// template files, shared with every other rule using them: one service per rule file put a
/// copy of the template files' text in every rule (2 KB a rule, issue 14), for a bundle only
/// a rollout's start reads. The rule's own text is kept deflated after its load's first rule
/// text (`kept_text`): 0.9 KB a rule kept whole.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    /// A rule file without templates, or a stored snapshot read back (kept byte for byte).
    Text(KeptText),
    /// A rule file's text and the template files it used.
    Templated {
        text: KeptText,
        files: Vec<Arc<catalog::TemplateFile>>,
    },
}

/// Which side of the comparison a query is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Group {
    Canary,
    Baseline,
}

impl Group {
    pub fn as_str(self) -> &'static str {
        match self {
            Group::Canary => "canary",
            Group::Baseline => "baseline",
        }
    }
}

/// What a query template is rendered with, besides the rule's own `vars`.
#[derive(Debug, Clone, Default)]
pub struct QueryContext<'a> {
    pub rollout: &'a str,
    pub version: &'a str,
}

/// What a query template of `spec` is rendered with for one group: the selector and the
/// durations as PromQL, everything else (the API caller's version included) as escaped values.
pub(crate) fn query_vars(spec: &RuleSpec, group: Group, ctx: &QueryContext<'_>) -> QueryVars {
    let a = &spec.analysis;
    let selector = match group {
        Group::Canary => &spec.selector.canary,
        Group::Baseline => &spec.selector.baseline,
    };
    let mut vars = QueryVars {
        values: spec.vars.to_map(),
        ..QueryVars::default()
    };
    for (k, v) in [
        ("group", group.as_str()),
        ("rollout", ctx.rollout),
        ("rule", spec.name.value.as_str()),
        ("version", ctx.version),
    ] {
        vars.values.insert(k.to_string(), v.to_string());
    }
    for (k, v) in [
        ("selector", selector.clone()),
        ("window", templates::promql_duration(a.window)),
        ("interval", templates::promql_duration(a.interval)),
        ("step", templates::promql_duration(a.step)),
    ] {
        vars.values.remove(k);
        vars.promql.insert(k.to_string(), v);
    }
    vars
}

impl Rule {
    pub fn name(&self) -> &str {
        &self.spec.name.value
    }

    /// The text stored with each rollout, so a rollout recovered after a restart runs the rule
    /// it started with, whatever the files say now: the rule file's text, or for a rule using
    /// metric templates a bundle of it and those template files (`snapshot`), which
    /// `parse_rule` rebuilds the rule from alone. Identical inputs give identical text.
    pub fn source(&self) -> Result<Cow<'_, str>, SnapshotError> {
        let kept = |text: &KeptText| {
            text.text().map_err(|source| SnapshotError::Kept {
                path: self.path.display().to_string(),
                source,
            })
        };
        match &self.source {
            Source::Text(text) => kept(text).map(Cow::Owned),
            Source::Templated { text, files } => {
                snapshot::write(&self.path, &kept(text)?, files).map(Cow::Owned)
            }
        }
    }

    pub fn steps(&self) -> impl ExactSizeIterator<Item = &StepSpec> {
        self.spec.steps.value.iter().map(|s| &s.value)
    }

    pub fn step(&self, index: usize) -> Option<&StepSpec> {
        self.spec.steps.value.get(index).map(|s| &s.value)
    }

    pub fn metrics(&self) -> impl ExactSizeIterator<Item = &MetricSpec> {
        self.spec.metrics.value.iter().map(|m| &*m.value)
    }

    /// Renders one window metric's query for one group. The rule was checked at load time, so
    /// an error here means a bug, and it is reported as an `error` verdict rather than a panic.
    pub fn render_query(
        &self,
        metric: &MetricSpec,
        group: Group,
        ctx: &QueryContext<'_>,
    ) -> Result<String, templates::TemplateError> {
        match metric.kind() {
            schema::MetricKind::Window(q) => self.render(q, group, ctx),
            _ => Err(templates::TemplateError::Syntax {
                message: format!("metric {} has no window query", metric.name),
                line: None,
            }),
        }
    }

    /// Renders any template of this rule (query, events, requests) for one group.
    pub fn render(
        &self,
        template: &str,
        group: Group,
        ctx: &QueryContext<'_>,
    ) -> Result<String, templates::TemplateError> {
        templates::render_query(template, &query_vars(&self.spec, group, ctx))
    }

    /// Sequential metrics in this rule: the Bonferroni factor of their thresholds.
    pub fn sequential_metrics(&self) -> usize {
        self.metrics().filter(|m| m.is_sequential()).count()
    }
}

/// A problem in a rule file, located for the user's editor.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RuleError {
    pub file: PathBuf,
    pub line: u32,
    pub column: u32,
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

impl std::error::Error for RuleError {}
