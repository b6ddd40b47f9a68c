//! From paths on disk to validated rules, or to every error with file:line:col.

use std::path::{Path, PathBuf};

use super::schema::RuleSpec;
use super::validate::validate;
use super::{Rule, RuleError};

/// Parses and validates one rule file's text. `path` only labels the errors.
pub fn parse_rule(path: &Path, text: &str) -> Result<Rule, Vec<RuleError>> {
    let spec: RuleSpec = serde_saphyr::from_str(text).map_err(|e| vec![yaml_error(path, &e)])?;
    let (findings, windows) = validate(&spec);
    if findings.is_empty() {
        Ok(Rule {
            spec,
            path: path.to_path_buf(),
            windows,
        })
    } else {
        Err(findings
            .into_iter()
            .map(|f| RuleError {
                file: path.to_path_buf(),
                line: f.line,
                column: f.column,
                message: f.message,
            })
            .collect())
    }
}

/// serde-saphyr prefixes its message with the location; keep our own `file:line:col:` format.
fn yaml_error(path: &Path, e: &serde_saphyr::Error) -> RuleError {
    let (line, column) = e
        .location()
        .map(|l| (l.line() as u32, l.column() as u32))
        .unwrap_or((1, 1));
    let text = e.without_snippet().to_string();
    let first = text.lines().next().unwrap_or("invalid YAML").trim();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    let message = match first.split_once(": ") {
        Some((prefix, rest)) if prefix.starts_with("line ") => rest.to_string(),
        _ => first.to_string(),
    };
    RuleError {
        file: path.to_path_buf(),
        line: line.max(1),
        column: column.max(1),
        message,
    }
}

/// Expands files, folders (their `*.yaml`/`*.yml`, sorted) and globs into rule file paths.
pub fn expand_paths(patterns: &[String]) -> Result<Vec<PathBuf>, RuleError> {
    let mut files = Vec::new();
    for pattern in patterns {
        let p = Path::new(pattern);
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| io_error(p, &e))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|f| is_yaml(f))
                .collect();
            found.sort();
            files.extend(found);
        } else if p.exists() {
            files.push(p.to_path_buf());
        } else {
            let matches = glob::glob(pattern).map_err(|e| RuleError {
                file: p.to_path_buf(),
                line: 1,
                column: 1,
                message: format!("bad glob pattern: {e}"),
            })?;
            let mut found: Vec<PathBuf> = matches.filter_map(Result::ok).filter(|f| f.is_file()).collect();
            if found.is_empty() {
                return Err(RuleError {
                    file: p.to_path_buf(),
                    line: 1,
                    column: 1,
                    message: "no such file, folder or matching glob".into(),
                });
            }
            found.sort();
            files.extend(found);
        }
    }
    Ok(files)
}

fn is_yaml(p: &Path) -> bool {
    matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
}

fn io_error(p: &Path, e: &std::io::Error) -> RuleError {
    RuleError {
        file: p.to_path_buf(),
        line: 1,
        column: 1,
        message: format!("cannot read: {e}"),
    }
}

/// Loads every rule under `patterns`. Rules and errors are both returned so `canaryd check`
/// can report everything at once; callers that need all-or-nothing check `errors.is_empty()`.
pub fn load_paths(patterns: &[String]) -> (Vec<Rule>, Vec<RuleError>) {
    let files = match expand_paths(patterns) {
        Ok(f) => f,
        Err(e) => return (Vec::new(), vec![e]),
    };
    let mut rules: Vec<Rule> = Vec::new();
    let mut errors = Vec::new();
    for file in files {
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) => {
                errors.push(io_error(&file, &e));
                continue;
            }
        };
        match parse_rule(&file, &text) {
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
