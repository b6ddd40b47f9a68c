//! The message templates of notifications and reports (minijinja).
//!
//! The shipped defaults in `templates/` are compiled in, so the binary works on its own; a file
//! of the same name in the configured `templates_dir` replaces one, so a team can word its
//! messages its own way without rebuilding. Every template is parsed at start-up: a syntax error
//! stops `serve` instead of the first rollback message.

use std::path::Path;

use minijinja::{Environment, UndefinedBehavior, Value};

/// Template names, which are also the file names an override must use.
pub const DEFAULTS: [(&str, &str); 6] = [
    (
        "scheduled.txt.j2",
        include_str!("../../templates/scheduled.txt.j2"),
    ),
    (
        "step_completed.txt.j2",
        include_str!("../../templates/step_completed.txt.j2"),
    ),
    (
        "rollback.txt.j2",
        include_str!("../../templates/rollback.txt.j2"),
    ),
    (
        "complete.txt.j2",
        include_str!("../../templates/complete.txt.j2"),
    ),
    ("report.md.j2", include_str!("../../templates/report.md.j2")),
    (
        "waiting.txt.j2",
        include_str!("../../templates/waiting.txt.j2"),
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("cannot read template {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("template {name}: {message}")]
    Syntax { name: String, message: String },
    #[error("rendering {name}: {message}")]
    Render { name: String, message: String },
}

/// Render steps a notification or report may take (minijinja fuel).
pub const REPORT_FUEL: u64 = 2_000_000;

/// Parsed templates. Cheap to clone (the environment is shared).
#[derive(Clone)]
pub struct Templates {
    env: std::sync::Arc<Environment<'static>>,
}

impl Templates {
    /// The defaults, each replaced by `dir/<name>` when that file exists.
    pub fn load(dir: Option<&Path>) -> Result<Templates, TemplateError> {
        let mut env = Environment::new();
        // A misspelt variable is an error, not an empty gap in a page to on-call.
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Operators write these templates; a loop that never ends must not wedge the task
        // that sends a page. Reports loop over every step and hook delivery, so the budget is
        // far above a query's, yet a runaway loop still ends in well under a second.
        env.set_fuel(Some(REPORT_FUEL));
        // Block tags on their own line leave no blank line behind, so templates stay readable.
        if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(true)
            .build()
        {
            env.set_syntax(syntax);
        }
        for (name, default) in DEFAULTS {
            let source = match dir.map(|d| d.join(name)).filter(|p| p.exists()) {
                Some(path) => {
                    std::fs::read_to_string(&path).map_err(|source| TemplateError::Read {
                        path: path.display().to_string(),
                        source,
                    })?
                }
                None => default.to_string(),
            };
            env.add_template_owned(name, source)
                .map_err(|e| TemplateError::Syntax {
                    name: name.to_string(),
                    message: e.to_string(),
                })?;
        }
        Ok(Templates {
            env: std::sync::Arc::new(env),
        })
    }

    /// Renders `name` with a JSON context (the report, plus whatever the caller adds).
    pub fn render(&self, name: &str, context: &serde_json::Value) -> Result<String, TemplateError> {
        let err = |e: minijinja::Error| TemplateError::Render {
            name: name.to_string(),
            message: format!("{e:#}"),
        };
        self.env
            .get_template(name)
            .map_err(err)?
            .render(to_value(context))
            .map_err(err)
    }
}

/// JSON to template values (minijinja's serde support is not enabled in this build).
fn to_value(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::from(()),
        serde_json::Value::Bool(b) => Value::from(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::from(i),
            None => Value::from(n.as_f64().unwrap_or(f64::NAN)),
        },
        serde_json::Value::String(s) => Value::from(s.clone()),
        serde_json::Value::Array(a) => a.iter().map(to_value).collect(),
        serde_json::Value::Object(o) => Value::from_object(
            o.iter()
                .map(|(k, v)| (k.clone(), to_value(v)))
                .collect::<std::collections::BTreeMap<String, Value>>(),
        ),
    }
}
