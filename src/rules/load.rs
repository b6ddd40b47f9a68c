//! From paths on disk to validated rules, or to every error with file:line:col.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_saphyr::Spanned;

use super::catalog::Catalog;
pub use super::files::{MAX_RULE_FILE_BYTES, RuleFile, expand_paths, read_paths};
use super::files::{read_capped, too_large};
use super::kept_text::KeptText;
use super::resolve::{Origin, resolve};
use super::schema::RuleSpec;
use super::validate::{Finding, validate};
use super::{Rule, RuleError, Source};

/// Parses and validates one rule file's text, or a rollout's rule snapshot (`snapshot`).
/// `path` only labels the errors. A rule using metric templates needs them: see
/// [`parse_rule_in`] and [`load_files`].
pub fn parse_rule(path: &Path, text: &str) -> Result<Rule, Vec<RuleError>> {
    if super::snapshot::is_snapshot(text) {
        return super::snapshot::parse(path, text);
    }
    parse_rule_in(path, text, &Catalog::default())
}

/// Parses and validates one rule file's text, resolving its metric templates in `catalog`.
pub fn parse_rule_in(path: &Path, text: &str, catalog: &Catalog) -> Result<Rule, Vec<RuleError>> {
    // Snapshots stored with rollouts come here without `read_capped`.
    if text.len() > MAX_RULE_FILE_BYTES {
        return Err(vec![too_large(path)]);
    }
    let spec: RuleSpec = serde_saphyr::from_str(text).map_err(|e| vec![yaml_error(path, &e)])?;
    let anchors: Anchors =
        serde_saphyr::from_str_with_options(text, anchor_options()).unwrap_or_default();
    let analysis_at = anchors.analysis.map(|a| a.referenced);
    let resolved = resolve(spec, text, catalog).map_err(|f| located(path, f, &[]))?;
    let (findings, windows) = validate(&resolved.spec, analysis_at);
    if !findings.is_empty() {
        return Err(located(path, findings, &resolved.origins));
    }
    let warnings = located(path, super::validate::lint(&resolved.spec), &[]);
    let mut spec = resolved.spec;
    share_metrics(&mut spec, catalog);
    let kept = KeptText::new(text, catalog.dictionary(text));
    let source = if resolved.files.is_empty() {
        Source::Text(kept)
    } else {
        super::snapshot::check_size(path, text, &resolved.files).map_err(|message| {
            let loc = spec.name.referenced;
            vec![RuleError {
                file: path.to_path_buf(),
                line: loc.line().max(1) as u32,
                column: loc.column().max(1) as u32,
                message,
            }]
        })?;
        Source::Templated {
            text: kept,
            files: resolved.files,
        }
    };
    Ok(Rule {
        spec,
        path: path.to_path_buf(),
        windows: windows.map(Box::new),
        warnings,
        source,
    })
}

/// Once a rule's findings and warnings are made, its metrics, steps and call hooks need no place
/// in its file: each becomes the load's one copy of an equal one, so rules naming a template
/// hold a pointer to it rather than a copy (3.6 KB a rule before, issue 14).
fn share_metrics(spec: &mut RuleSpec, catalog: &Catalog) {
    catalog.shared().share(spec);
}

/// Findings with the file attached; one about a templated metric also names the template's
/// place, so the error points into both files.
fn located(path: &Path, findings: Vec<Finding>, origins: &[Origin]) -> Vec<RuleError> {
    findings
        .into_iter()
        .map(|f| {
            let origin = origins.iter().find(|o| {
                o.places.iter().any(|l| {
                    l.line().max(1) as u32 == f.line && l.column().max(1) as u32 == f.column
                })
            });
            RuleError {
                file: path.to_path_buf(),
                line: f.line,
                column: f.column,
                message: match origin {
                    Some(o) => format!("{} {}", f.message, o.note),
                    None => f.message,
                },
            }
        })
        .collect()
}

/// Where blocks that `RuleSpec` keeps unwrapped start, so findings about them point there.
/// `analysis` is read all over the controller, so it stays a plain `AnalysisSpec` there and its
/// location comes from this second, lenient pass over the same text.
#[derive(Default, Deserialize)]
struct Anchors {
    #[serde(default)]
    analysis: Option<Spanned<IgnoredAny>>,
}

/// Anchors only need to find blocks; a `.nan` inside one (which validation then refuses) must
/// not make the lenient pass fail and the finding lose its place.
fn anchor_options() -> serde_saphyr::Options {
    let mut options = serde_saphyr::Options::default();
    options.non_finite_float_policy = serde_saphyr::NonFiniteFloatPolicy::PassThrough;
    options
}

/// serde-saphyr puts the location around its message; keep our own `file:line:col:` format.
pub(super) fn yaml_error(path: &Path, e: &serde_saphyr::Error) -> RuleError {
    let (line, column) = e
        .location()
        .map(|l| (l.line() as u32, l.column() as u32))
        .unwrap_or((1, 1));
    let text = e.without_snippet().to_string();
    let first = text.lines().next().unwrap_or("invalid YAML").trim();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    let message = match first.split_once(": ") {
        Some((prefix, rest)) if prefix.starts_with("line ") => rest,
        _ => first,
    };
    // The location is already in front of the message; drop the trailing " at line L, column C".
    let message = match message.rfind(" at line ") {
        Some(i) if message[i..].contains(", column ") => &message[..i],
        _ => message,
    };
    let message = match e.without_snippet() {
        serde_saphyr::Error::InvalidScalar { ty, .. } => format!("{message}: {}", expected(ty)),
        _ => message.to_string(),
    };
    RuleError {
        file: path.to_path_buf(),
        line: line.max(1),
        column: column.max(1),
        message,
    }
}

/// What a value of a scalar type looks like, for "invalid u32" and friends.
fn expected(ty: &str) -> &'static str {
    match ty {
        "bool" | "boolean" => "expected true or false",
        "f32" | "f64" | "floating point" => "expected a number, e.g. 0.05",
        t if t.starts_with('u') => "expected a whole number, e.g. 25",
        t if t.starts_with('i') => "expected a whole number",
        _ => "wrong type for this key",
    }
}

/// Loads every rule under `patterns`. Rules and errors are both returned so `canaryd check`
/// can report everything at once; callers that need all-or-nothing check `errors.is_empty()`.
pub fn load_paths(patterns: &[String]) -> (Vec<Rule>, Vec<RuleError>) {
    match read_paths(patterns) {
        Ok(files) => load_files(&files),
        Err(e) => (Vec::new(), vec![e]),
    }
}

/// Parses files already read; see [`load_paths`]. Template files are read first, whatever
/// their order among the paths, so a rule may use a template from any of them.
pub fn load_files(files: &[RuleFile]) -> (Vec<Rule>, Vec<RuleError>) {
    let mut catalog = Catalog::default();
    let mut errors = Vec::new();
    let mut rule_files = Vec::new();
    for RuleFile { path, text } in files {
        match text {
            Err(e) => errors.push(e.clone()),
            Ok(text) => match kind_of(path, text) {
                Ok(FileKind::Templates) => errors.extend(catalog.add_file(path, text)),
                Ok(FileKind::Rule) => rule_files.push((path, text)),
                Err(e) => errors.push(e),
            },
        }
    }
    let mut rules: Vec<Rule> = Vec::new();
    for (file, text) in rule_files {
        match parse_rule_in(file, text, &catalog) {
            Ok(rule) => {
                if let Some(other) = rules.iter().find(|r| r.name() == rule.name()) {
                    let loc = rule.spec.name.referenced;
                    errors.push(RuleError {
                        file: file.clone(),
                        line: loc.line() as u32,
                        column: loc.column() as u32,
                        message: format!(
                            "rule name {:?} is already used by {}",
                            rule.name(),
                            other.path.display()
                        ),
                    });
                } else {
                    rules.push(rule);
                }
            }
            Err(mut e) => errors.append(&mut e),
        }
    }
    (rules, errors)
}

/// What a file under the rule paths is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// No `kind:`: a rule, as every rule file before templates existed.
    Rule,
    /// `kind: metric_templates`.
    Templates,
}

/// Reads only the top-level `kind:`; text that is not a YAML mapping is left to the rule parser
/// to report.
pub fn kind_of(path: &Path, text: &str) -> Result<FileKind, RuleError> {
    #[derive(Default, Deserialize)]
    struct Probe {
        #[serde(default)]
        kind: Option<Spanned<String>>,
    }
    let probe: Probe =
        serde_saphyr::from_str_with_options(text, anchor_options()).unwrap_or_default();
    match probe.kind {
        None => Ok(FileKind::Rule),
        Some(k) if k.value == super::catalog::KIND => Ok(FileKind::Templates),
        Some(k) => Err(RuleError {
            file: path.to_path_buf(),
            line: k.referenced.line().max(1) as u32,
            column: k.referenced.column().max(1) as u32,
            message: format!(
                "unknown kind {:?}: a rule file has no `kind`, a metric template file has `kind: {}`",
                k.value,
                super::catalog::KIND
            ),
        }),
    }
}

/// Whether `path` reads as a metric template file (unreadable files are not).
pub fn is_template_file(path: &Path) -> bool {
    read_capped(path).is_ok_and(|t| kind_of(path, &t) == Ok(FileKind::Templates))
}

/// One rule file with the metric templates of its folder (the files `serve --rules <folder>`
/// would load beside it): what `judge`, `analyze` and `simulate` take.
pub fn load_rule_file(path: &Path) -> Result<Rule, Vec<RuleError>> {
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let text = read_capped(path).map_err(|e| vec![e])?;
    if kind_of(path, &text).map_err(|e| vec![e])? == FileKind::Templates {
        return Err(vec![RuleError {
            file: path.to_path_buf(),
            line: 1,
            column: 1,
            message: "this is a metric template file, not a rule".into(),
        }]);
    }
    let mut catalog = Catalog::default();
    let mut errors = Vec::new();
    let siblings = read_paths(&[folder.display().to_string()]).map_err(|e| vec![e])?;
    for f in &siblings {
        if let Ok(t) = &f.text
            && kind_of(&f.path, t) == Ok(FileKind::Templates)
        {
            errors.extend(catalog.add_file(&f.path, t));
        }
    }
    match parse_rule_in(path, &text, &catalog) {
        Ok(rule) if errors.is_empty() => Ok(rule),
        Ok(_) => Err(errors),
        Err(e) => {
            errors.extend(e);
            Err(errors)
        }
    }
}

/// [`parse_rule`] with template files given as text (a rule compiled in with its templates).
pub fn parse_rule_with(
    path: &Path,
    text: &str,
    templates: &[(&Path, &str)],
) -> Result<Rule, Vec<RuleError>> {
    let mut catalog = Catalog::default();
    let mut errors = Vec::new();
    for (p, t) in templates {
        errors.extend(catalog.add_file(p, t));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    parse_rule_in(path, text, &catalog)
}
