//! Metric templates: named metrics defined once (query, direction, compare, test, default
//! thresholds) in files of their own, `kind: metric_templates`, and used by name from rules.
//!
//! A template is a rule's metric entry (the same [`MetricSpec`], the same checks) kept in a
//! catalog by name. Each template is validated on its own when its file loads, inside a stand-in
//! rule, so a broken template is reported once, in its own file, and not once per rule using it.
//! Resolution into rules is `rules::resolve`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::kept_text::Dictionary;
use super::schema::{MetricSpec, RuleSpec};
use super::shared::{Interner, Shared};
use super::validate::{Finding, at};
use super::{RuleError, templates};

/// The `kind:` of a metric template file. A rule file has no `kind:`.
pub const KIND: &str = "metric_templates";

/// Templates one file may define: far beyond any real catalog, and it keeps the validation of a
/// file (each template is rendered and parsed as PromQL) a matter of milliseconds.
pub const MAX_TEMPLATES_PER_FILE: usize = 1_000;

/// A template's name is a key in logs, errors and the API, never in a query; it is held to the
/// characters of a rule name and a length any editor shows on one line.
pub const MAX_NAME_CHARS: usize = 100;

/// A template file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateFileSpec {
    kind: Spanned<String>,
    /// Defaults for the query variables the templates use; `null` means the rule must set it.
    #[serde(default)]
    vars: BTreeMap<String, Spanned<Option<String>>>,
    templates: Spanned<Vec<Spanned<MetricSpec>>>,
}

/// One loaded template file: what rules using its templates carry into their snapshot.
#[derive(Debug)]
pub struct TemplateFile {
    pub path: PathBuf,
    pub text: String,
    /// Variable defaults; `None` is a variable each rule must set.
    pub vars: BTreeMap<String, Spanned<Option<String>>>,
}

/// One named template and the file it came from.
#[derive(Debug, Clone)]
pub struct Template {
    pub spec: Spanned<MetricSpec>,
    pub file: Arc<TemplateFile>,
    /// The template has errors of its own (reported in its file); rules using it fail too.
    pub broken: bool,
}

impl Template {
    pub fn name(&self) -> &str {
        &self.spec.value.name
    }

    /// `file:line:col` of the template's definition, for errors at a use site.
    pub fn place(&self) -> String {
        let l = self.spec.referenced;
        format!("{}:{}:{}", self.file.path.display(), l.line(), l.column())
    }
}

/// Every template loaded, by name, and the metrics the rules of this load share.
#[derive(Debug, Default, Clone)]
pub struct Catalog {
    by_name: BTreeMap<String, Template>,
    shared: Arc<Interner>,
    /// The first rule text of this load: every rule's kept text is deflated after it
    /// (`kept_text`). Unset until a rule is parsed; `None` when that text was too long.
    dictionary: OnceLock<Option<Arc<Dictionary>>>,
}

impl Catalog {
    /// The dictionary the rules of this load keep their texts deflated after: made from the
    /// first text asked with, so a load of rules alike keeps a few dozen bytes a rule.
    pub(crate) fn dictionary(&self, text: &str) -> Option<&Arc<Dictionary>> {
        self.dictionary
            .get_or_init(|| Dictionary::new(text).map(Arc::new))
            .as_ref()
    }

    /// Where rules parsed with this catalog share their equal metrics (`rules::shared`).
    pub(crate) fn shared(&self) -> &Interner {
        &self.shared
    }

    pub fn get(&self, name: &str) -> Option<&Template> {
        self.by_name.get(name)
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    /// Parses one template file into the catalog; every problem is returned located in it.
    /// Templates with errors are still entered (marked broken), so a rule using one says so
    /// instead of calling it unknown.
    pub fn add_file(&mut self, path: &Path, text: &str) -> Vec<RuleError> {
        let locate = |f: Finding| RuleError {
            file: path.to_path_buf(),
            line: f.line,
            column: f.column,
            message: f.message,
        };
        let spec: TemplateFileSpec = match serde_saphyr::from_str(text) {
            Ok(s) => s,
            Err(e) => return vec![super::load::yaml_error(path, &e)],
        };
        let mut findings = Vec::new();
        if spec.kind.value != KIND {
            findings.push(at(&spec.kind, format!("kind must be {KIND:?}")));
        }
        let list = &spec.templates;
        if list.value.is_empty() {
            findings.push(at(list, "templates must not be empty"));
        }
        if list.value.len() > MAX_TEMPLATES_PER_FILE {
            findings.push(at(
                list,
                format!(
                    "{} templates; a file may define at most {MAX_TEMPLATES_PER_FILE}",
                    list.value.len()
                ),
            ));
            return findings.into_iter().map(locate).collect();
        }
        for (name, v) in &spec.vars {
            if templates::BUILTIN_VARIABLES.contains(&name.as_str()) {
                findings.push(at(
                    v,
                    format!("vars.{name} is built in; choose another name"),
                ));
            }
        }
        let file = Arc::new(TemplateFile {
            path: path.to_path_buf(),
            text: text.to_string(),
            vars: spec.vars,
        });
        let mut errors: Vec<RuleError> = findings.into_iter().map(locate).collect();
        for t in spec.templates.value {
            let own: Vec<Finding> = check_template(&t, &file.vars);
            let broken = !own.is_empty();
            errors.extend(own.into_iter().map(locate));
            let name = t.value.name.clone();
            if let Some(other) = self.by_name.get(&name) {
                errors.push(locate(at(
                    &t,
                    format!(
                        "template name {name:?} is already defined at {}",
                        other.place()
                    ),
                )));
                continue;
            }
            let template = Template {
                spec: t,
                file: file.clone(),
                broken,
            };
            self.by_name.insert(name, template);
        }
        errors
    }
}

/// Whether `name` may name a template: what a rule name may be, and not too long.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().count() <= MAX_NAME_CHARS
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// A template's own errors: its name, and every check a rule's metric gets, run inside a
/// stand-in rule whose analysis is as long as the bounds allow (the real rule's timing is
/// checked again where the template is used).
fn check_template(
    t: &Spanned<MetricSpec>,
    vars: &BTreeMap<String, Spanned<Option<String>>>,
) -> Vec<Finding> {
    let m = &t.value;
    let mut out = Vec::new();
    if !valid_name(&m.name) {
        out.push(at(
            t,
            format!(
                "template name {:?} must be 1 to {MAX_NAME_CHARS} letters, digits, '-' or '_'",
                m.name
            ),
        ));
        return out;
    }
    if let Some(inner) = &m.template {
        out.push(at(
            inner,
            format!(
                "template {}: a template cannot use another template",
                m.name
            ),
        ));
        return out;
    }
    let Some(mut rule) = stand_in() else {
        out.push(at(t, "internal error: the stand-in rule does not parse"));
        return out;
    };
    rule.name = Spanned::new("template".into(), t.referenced, t.defined);
    rule.metrics = Spanned::new(
        Shared::new(vec![Spanned::new(
            Shared::new(t.value.clone()),
            t.referenced,
            t.defined,
        )]),
        t.referenced,
        t.defined,
    );
    rule.vars = vars
        .iter()
        .map(|(k, v)| (k.clone(), v.value.clone().unwrap_or_else(|| "x".into())))
        .collect();
    let (findings, _) = super::validate::validate(&rule, Some(t.referenced));
    out.extend(findings.into_iter().map(|f| Finding {
        message: f.message.replacen("metric ", "template ", 1),
        ..f
    }));
    out
}

/// The rule a template is checked in: any selector, the longest window the bounds allow (so a
/// template's `for:` is only held against the real rule's window), a step that keeps the point
/// count under Prometheus' limit.
fn stand_in() -> Option<RuleSpec> {
    serde_saphyr::from_str(
        "name: template\n\
         selector: { canary: 'job=\"template-check\", track=\"canary\"', baseline: 'job=\"template-check\", track=\"baseline\"' }\n\
         steps: [{ weight: 100 }]\n\
         analysis: { interval: 1m, window: 30d, step: 1h, warmup: 0s }\n\
         metrics: []\n",
    )
    .ok()
}
