//! Rule files: what users write, checked so that a rule that loads can always run.
//!
//! `schema` is the YAML shape, `load` turns paths into rules or errors with file:line:col,
//! `validate` holds the semantic checks, `templates` renders queries, `window` parses deploy
//! windows, and `reload` keeps the last good set when a new file is bad.

pub mod load;
pub mod matchers;
pub mod reload;
pub mod schema;
pub mod templates;
pub mod validate;
pub mod window;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

pub use load::{load_paths, parse_rule};
pub use schema::{MetricSpec, RuleSpec, StepSpec};
pub use window::Windows;

/// A rule that passed every check; what rollouts run on.
#[derive(Debug, Clone)]
pub struct Rule {
    pub spec: RuleSpec,
    pub path: PathBuf,
    pub windows: Option<Windows>,
    /// The file text this rule was parsed from: stored with each rollout, so a rollout recovered
    /// after a restart runs the rule it started with, whatever the file says now.
    pub source: String,
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

impl Rule {
    pub fn name(&self) -> &str {
        &self.spec.name.value
    }

    pub fn steps(&self) -> impl ExactSizeIterator<Item = &StepSpec> {
        self.spec.steps.value.iter().map(|s| &s.value)
    }

    pub fn step(&self, index: usize) -> Option<&StepSpec> {
        self.spec.steps.value.get(index).map(|s| &s.value)
    }

    pub fn metrics(&self) -> impl ExactSizeIterator<Item = &MetricSpec> {
        self.spec.metrics.value.iter().map(|m| &m.value)
    }

    /// Renders one metric's query for one group. The rule was checked at load time, so an error
    /// here means a bug, and it is reported as an `error` verdict rather than a panic.
    pub fn render_query(
        &self,
        metric: &MetricSpec,
        group: Group,
        ctx: &QueryContext<'_>,
    ) -> Result<String, templates::TemplateError> {
        let a = &self.spec.analysis;
        let mut vars: BTreeMap<String, String> = self.spec.vars.clone();
        let selector = match group {
            Group::Canary => &self.spec.selector.canary,
            Group::Baseline => &self.spec.selector.baseline,
        };
        for (k, v) in [
            ("selector", selector.clone()),
            ("group", group.as_str().to_string()),
            ("rollout", ctx.rollout.to_string()),
            ("rule", self.name().to_string()),
            ("version", ctx.version.to_string()),
            ("window", templates::promql_duration(a.window)),
            ("interval", templates::promql_duration(a.interval)),
            ("step", templates::promql_duration(a.step)),
        ] {
            vars.insert(k.to_string(), v);
        }
        templates::render(&metric.query.value, &vars)
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
