//! Query templates: `{{selector}}`, `{{step}}` and friends spliced into PromQL.
//!
//! minijinja does the parsing, so the syntax is the familiar Jinja one and unknown variables are
//! found at load time through `undeclared_variables` instead of at 3 a.m. as an empty query.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use minijinja::{Environment, UndefinedBehavior};

/// Variables every query may use; `vars:` of the rule adds more.
pub const BUILTIN_VARIABLES: &[&str] = &[
    "selector", "group", "rollout", "rule", "version", "window", "interval", "step",
];

/// Why a template cannot be used.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TemplateError {
    #[error("template syntax: {message}")]
    Syntax {
        message: String,
        line: Option<usize>,
    },
    #[error("unknown template variable `{name}` (known: {known})")]
    Unknown { name: String, known: String },
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    // A missing value must fail loudly: an empty selector would silently query everything.
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env
}

/// Variables a command hook's argv may use.
pub const HOOK_VARIABLES: &[&str] = &["event", "rollout", "rule", "version", "weight", "reason"];

/// Checks a query template against the built-in variables plus the rule's `vars`.
pub fn check(template: &str, extra: &BTreeMap<String, String>) -> Result<(), TemplateError> {
    let known: BTreeSet<&str> = BUILTIN_VARIABLES
        .iter()
        .copied()
        .chain(extra.keys().map(String::as_str))
        .collect();
    check_known(template, &known)
}

/// Checks syntax and that every variable is known, so a template that loads can always render.
pub fn check_known(template: &str, known: &BTreeSet<&str>) -> Result<(), TemplateError> {
    let env = environment();
    let tmpl = env
        .template_from_str(template)
        .map_err(|e| TemplateError::Syntax {
            message: e.detail().unwrap_or("invalid template").to_string(),
            line: e.line(),
        })?;
    for name in tmpl.undeclared_variables(false) {
        if !known.contains(name.as_str()) {
            return Err(TemplateError::Unknown {
                name,
                known: known.iter().copied().collect::<Vec<_>>().join(", "),
            });
        }
    }
    Ok(())
}

/// Renders a template that [`check`] accepted.
pub fn render(template: &str, vars: &BTreeMap<String, String>) -> Result<String, TemplateError> {
    environment()
        .render_str(template, vars)
        .map_err(|e| TemplateError::Syntax {
            message: e.to_string(),
            line: e.line(),
        })
}

/// Formats a duration the way PromQL range selectors want it (`15s`, `5m`, `1h`, `1500ms`).
pub fn promql_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        format!("{ms}ms")
    } else {
        let s = d.as_secs();
        if s != 0 && s.is_multiple_of(3600) {
            format!("{}h", s / 3600)
        } else if s != 0 && s.is_multiple_of(60) {
            format!("{}m", s / 60)
        } else {
            format!("{s}s")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_builtin_and_declared_variables() {
        let mut vars = BTreeMap::new();
        vars.insert("job".to_string(), "api".to_string());
        assert_eq!(
            check("rate(x{ {{selector}}, job=\"{{job}}\" }[{{step}}])", &vars),
            Ok(())
        );
    }

    #[test]
    fn rejects_unknown_variable_by_name() {
        let err = check("rate(x{ {{selecter}} }[1m])", &BTreeMap::new()).unwrap_err();
        assert!(matches!(err, TemplateError::Unknown { ref name, .. } if name == "selecter"));
    }

    #[test]
    fn rejects_broken_syntax() {
        assert!(matches!(
            check("rate(x{ {{selector }[1m])", &BTreeMap::new()),
            Err(TemplateError::Syntax { .. })
        ));
    }

    #[test]
    fn renders_promql_braces_around_selector() {
        let mut vars = BTreeMap::new();
        vars.insert("selector".to_string(), "track=\"canary\"".to_string());
        vars.insert("step".to_string(), "15s".to_string());
        assert_eq!(
            render("rate(x{ {{selector}} }[{{step}}])", &vars).unwrap(),
            "rate(x{ track=\"canary\" }[15s])"
        );
    }

    #[test]
    fn promql_durations_use_the_largest_whole_unit() {
        assert_eq!(promql_duration(Duration::from_secs(15)), "15s");
        assert_eq!(promql_duration(Duration::from_secs(300)), "5m");
        assert_eq!(promql_duration(Duration::from_secs(7200)), "2h");
        assert_eq!(promql_duration(Duration::from_secs(90)), "90s");
        assert_eq!(promql_duration(Duration::from_millis(1500)), "1500ms");
    }
}
