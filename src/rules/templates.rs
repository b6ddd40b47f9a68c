//! Query templates: `{{selector}}`, `{{step}}` and friends spliced into PromQL.
//!
//! minijinja does the parsing, so the syntax is the familiar Jinja one and unknown variables are
//! found at load time through `undeclared_variables` instead of at 3 a.m. as an empty query.
//!
//! Two kinds of values reach a query. The rule author's PromQL (`selector`) and the durations
//! canaryd formats (`window`, `interval`, `step`) are spliced as written. Everything else —
//! `version` (from whoever may call the API), `rollout`, `rule`, `group` and every `vars` value —
//! is data, written out as the content of a double-quoted PromQL string: a version like
//! `x"}[10s])) * 0 or vector(0) #` stays one label value instead of rewriting the query. Load-time
//! validation (`rules::promql`) proves each such value does sit inside a double-quoted string.
//!
//! Every render has a fuel budget and no loader: a template is a few dozen instructions, so
//! loops over loops run dry in milliseconds instead of wedging a worker, and `include`,
//! `import` and `extends` have nothing to reach.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::OnceLock;
use std::time::Duration;

use minijinja::value::Value;
use minijinja::{Environment, ErrorKind, UndefinedBehavior};

/// Variables every query may use; `vars:` of the rule adds more.
pub const BUILTIN_VARIABLES: &[&str] = &[
    "selector", "group", "rollout", "rule", "version", "window", "interval", "step",
];

/// Variables that hold PromQL (or PromQL durations) and are spliced unescaped. They come from
/// the rule author or from canaryd itself, never from an API caller.
pub const PROMQL_VARIABLES: &[&str] = &["selector", "window", "interval", "step"];

/// Instructions one render may execute. The shipped queries need under a hundred; the budget
/// leaves room for loops over short lists while nested loops over a long `vars` string (the
/// wedge of issue 9) stop within milliseconds.
pub const FUEL: u64 = 50_000;

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
    #[error(
        "template needs more than {FUEL} steps to render (loops over loops?); a query template should take a few hundred at most"
    )]
    OutOfFuel,
}

impl From<minijinja::Error> for TemplateError {
    fn from(e: minijinja::Error) -> Self {
        match e.kind() {
            ErrorKind::OutOfFuel => TemplateError::OutOfFuel,
            _ => TemplateError::Syntax {
                message: e.to_string(),
                line: e.line(),
            },
        }
    }
}

/// The one environment every template is parsed and rendered in: strict about unknown values,
/// fuelled, without a loader (so `include`/`import`/`extends` fail), and without the filters
/// that would mark a value as already escaped (`safe`, `escape`, `e`): the formatter below is
/// the only gate between a value and the query.
fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    // A missing value must fail loudly: an empty selector would silently query everything.
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(FUEL));
    for filter in ["safe", "escape", "e"] {
        env.remove_filter(filter);
    }
    env
}

/// Like [`environment`], and every printed value that is not PromQL is escaped as string content.
fn query_environment() -> Environment<'static> {
    let mut env = environment();
    env.set_formatter(|out, _state, value| {
        let text = value.to_string();
        let result = if value.is_safe() {
            out.write_str(&text)
        } else {
            out.write_str(&promql_string_content(&text))
        };
        result.map_err(|_| minijinja::Error::new(ErrorKind::WriteFailure, "cannot write output"))
    });
    env
}

/// The [`query_environment`] every query render shares. Building one registers every default
/// filter and test (a few dozen map entries), and queries are rendered for every rollout at
/// every tick (16,000 renders a tick at 2,000 rollouts, issue 14); fuel is counted per render,
/// so sharing the environment shares no budget.
fn shared_query_environment() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(query_environment)
}

/// Variables a command hook's argv may use.
pub const HOOK_VARIABLES: &[&str] = &["event", "rollout", "rule", "version", "weight", "reason"];

/// Checks a query template against the built-in variables plus the rule's `vars`.
pub fn check(template: &str, extra: &BTreeMap<String, String>) -> Result<(), TemplateError> {
    check_names(template, extra.keys().map(String::as_str))
}

/// [`check`] with the rule's `vars` as loaded.
pub fn check_vars(template: &str, vars: &super::vars::Vars) -> Result<(), TemplateError> {
    check_names(template, vars.keys())
}

fn check_names<'a>(
    template: &str,
    extra: impl Iterator<Item = &'a str>,
) -> Result<(), TemplateError> {
    let known: BTreeSet<&str> = BUILTIN_VARIABLES.iter().copied().chain(extra).collect();
    check_known(template, &known)
}

/// Checks syntax and that every variable is known, so a template that loads can always render.
pub fn check_known(template: &str, known: &BTreeSet<&str>) -> Result<(), TemplateError> {
    for name in variables(template)? {
        if !known.contains(name.as_str()) {
            return Err(TemplateError::Unknown {
                name,
                known: known.iter().copied().collect::<Vec<_>>().join(", "),
            });
        }
    }
    Ok(())
}

/// The variables a template reads.
pub fn variables(template: &str) -> Result<BTreeSet<String>, TemplateError> {
    let env = environment();
    let tmpl = env
        .template_from_str(template)
        .map_err(|e| TemplateError::Syntax {
            message: e.detail().unwrap_or("invalid template").to_string(),
            line: e.line(),
        })?;
    Ok(tmpl.undeclared_variables(false).into_iter().collect())
}

/// Renders plain text (a command hook's argv, which no shell reads): values as they are.
pub fn render(template: &str, vars: &BTreeMap<String, String>) -> Result<String, TemplateError> {
    Ok(environment().render_str(template, vars)?)
}

/// What a query is rendered with.
#[derive(Debug, Clone, Default)]
pub struct QueryVars {
    /// Spliced as written: the rule author's PromQL and canaryd's durations.
    pub promql: BTreeMap<String, String>,
    /// Escaped as the content of a double-quoted PromQL string.
    pub values: BTreeMap<String, String>,
}

/// Renders a query template that [`check`] accepted; see the module doc for what is escaped.
pub fn render_query(template: &str, vars: &QueryVars) -> Result<String, TemplateError> {
    let mut ctx: BTreeMap<&str, Value> = BTreeMap::new();
    for (k, v) in &vars.values {
        ctx.insert(k, Value::from(v.as_str()));
    }
    for (k, v) in &vars.promql {
        ctx.insert(k, Value::from_safe_string(v.clone()));
    }
    Ok(shared_query_environment().render_str(template, ctx)?)
}

/// `value` as the content of a double-quoted PromQL string, with the escapes of Go string
/// literals that Prometheus' lexer reads: whatever it holds, it cannot end the string.
pub fn promql_string_content(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // C0, DEL and C1 controls: all below U+00A0, so four hex digits always suffice.
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
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

    fn query_vars(values: &[(&str, &str)]) -> QueryVars {
        let mut vars = QueryVars::default();
        vars.promql
            .insert("selector".into(), "track=\"canary\"".into());
        vars.promql.insert("step".into(), "15s".into());
        for (k, v) in values {
            vars.values.insert(k.to_string(), v.to_string());
        }
        vars
    }

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
        assert_eq!(
            render_query("rate(x{ {{selector}} }[{{step}}])", &query_vars(&[])).unwrap(),
            "rate(x{ track=\"canary\" }[15s])"
        );
    }

    #[test]
    fn values_are_escaped_as_string_content_and_promql_is_not() {
        let vars = query_vars(&[("version", "x\"}[10s])) * 0 or vector(0) #\\\n\u{7}")]);
        assert_eq!(
            render_query("x{ {{selector}}, version=\"{{version}}\" }", &vars).unwrap(),
            "x{ track=\"canary\", version=\"x\\\"}[10s])) * 0 or vector(0) #\\\\\\n\\u0007\" }"
        );
    }

    #[test]
    fn a_value_cannot_unescape_itself_through_a_filter() {
        let vars = query_vars(&[("version", "a\"b")]);
        for t in [
            "{{ version|safe }}",
            "{{ version|e }}",
            "{{ version|escape }}",
        ] {
            assert!(render_query(t, &vars).is_err(), "{t} rendered");
        }
        // Values changed by other filters are still values.
        assert_eq!(
            render_query("{{ version|upper }}", &vars).unwrap(),
            "A\\\"B"
        );
    }

    #[test]
    fn hook_argv_renders_values_unchanged() {
        let mut vars = BTreeMap::new();
        vars.insert("version".to_string(), "a\"b".to_string());
        assert_eq!(render("{{version}}", &vars).unwrap(), "a\"b");
    }

    #[test]
    fn nested_loops_run_out_of_fuel_quickly() {
        let t = "{% for a in x %}{% for b in x %}{% for c in x %}{{a}}{% endfor %}{% endfor %}{% endfor %}";
        let vars = query_vars(&[("x", &"y".repeat(1000))]);
        let started = std::time::Instant::now();
        assert_eq!(render_query(t, &vars), Err(TemplateError::OutOfFuel));
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    /// The environment is shared; its fuel must not be: each render gets the whole budget.
    #[test]
    fn every_render_gets_the_whole_fuel_budget() {
        let t = "{% for a in x %}{% for b in x %}{{a}}{% endfor %}{% endfor %}";
        // 3,600 prints: well over a fifth of the budget each, so a shared budget ran dry.
        let vars = query_vars(&[("x", &"y".repeat(60))]);
        for _ in 0..5 {
            let out = render_query(t, &vars).expect("3,600 prints fit in one budget");
            assert_eq!(out.len(), 3_600);
        }
    }

    #[test]
    fn include_import_and_extends_reach_nothing() {
        for t in [
            "{% include 'other' %}",
            "{% import 'other' as o %}",
            "{% extends 'other' %}",
        ] {
            assert!(render_query(t, &query_vars(&[])).is_err(), "{t} rendered");
        }
    }

    proptest::proptest! {
        /// Whatever a value holds, PromQL reads back exactly that value as the label value.
        #[test]
        fn any_value_is_read_back_as_one_label_value(v in proptest::prelude::any::<String>()) {
            let vars = query_vars(&[("version", &v)]);
            let q = render_query("x{ {{selector}}, version=\"{{version}}\" }", &vars)
                .map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
            let parsed = promql_parser::parser::parse(&q)
                .map_err(|e| proptest::test_runner::TestCaseError::fail(format!("{e}: {q}")))?;
            let promql_parser::parser::Expr::VectorSelector(vs) = parsed else {
                return Err(proptest::test_runner::TestCaseError::fail(format!("not a selector: {q}")));
            };
            let names: Vec<&str> = vs.matchers.matchers.iter().map(|m| m.name.as_str()).collect();
            proptest::prop_assert_eq!(names, vec!["track", "version"]);
            proptest::prop_assert_eq!(&vs.matchers.matchers[1].value, &v);
        }
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
