//! The rule text a rollout keeps (`Rule::source`) must rebuild the same rule after a restart,
//! whatever the files say by then. A rule without templates keeps its own text, as always; a
//! rule using metric templates keeps a bundle of its text and the template files it used, which
//! `parse_rule` recognises and resolves against those texts only.
//!
//! The bundle is JSON (so every text is escaped by serde_json, and JSON is also YAML) and starts
//! with a fixed prefix that no rule file can start with: a rule has no `kind`.

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::catalog::{Catalog, TemplateFile};
use super::load::{MAX_RULE_FILE_BYTES, parse_rule_in};
use super::{Rule, RuleError};

/// How every bundle starts: serde_json writes fields in declaration order, without spaces.
const PREFIX: &str = r#"{"kind":"rule_snapshot","#;

/// A bundle holds a rule and its template files, each at most [`MAX_RULE_FILE_BYTES`]; a rule
/// whose bundle would be larger than this is refused when it loads, so a stored snapshot always
/// fits.
pub const MAX_SNAPSHOT_BYTES: usize = 4 * MAX_RULE_FILE_BYTES;

#[derive(Serialize, Deserialize)]
struct Bundle {
    kind: String,
    rule: Part,
    templates: Vec<Part>,
}

#[derive(Serialize, Deserialize)]
struct Part {
    path: String,
    text: String,
}

pub(crate) fn is_snapshot(text: &str) -> bool {
    text.starts_with(PREFIX)
}

/// The snapshot of a rule at `path` that used `files`, or why it is too large to keep.
pub(crate) fn bundle(
    path: &Path,
    text: &str,
    files: &[Arc<TemplateFile>],
) -> Result<String, String> {
    let part = |p: &Path, t: &str| Part {
        path: p.display().to_string(),
        text: t.to_string(),
    };
    let b = Bundle {
        kind: "rule_snapshot".into(),
        rule: part(path, text),
        templates: files.iter().map(|f| part(&f.path, &f.text)).collect(),
    };
    let json = serde_json::to_string(&b).map_err(|e| format!("cannot keep a snapshot: {e}"))?;
    if json.len() > MAX_SNAPSHOT_BYTES {
        return Err(format!(
            "this rule and the template files it uses are {} bytes; a rollout's snapshot keeps at most {MAX_SNAPSHOT_BYTES}",
            json.len()
        ));
    }
    Ok(json)
}

/// Rebuilds the rule of a bundle from its own texts; `path` labels the rule's errors.
pub(crate) fn parse(path: &Path, text: &str) -> Result<Rule, Vec<RuleError>> {
    let at = |line: usize, column: usize, message: String| RuleError {
        file: path.to_path_buf(),
        line: line.max(1) as u32,
        column: column.max(1) as u32,
        message,
    };
    if text.len() > MAX_SNAPSHOT_BYTES {
        return Err(vec![at(
            1,
            1,
            format!("rule snapshot is larger than the {MAX_SNAPSHOT_BYTES} bytes allowed"),
        )]);
    }
    let b: Bundle = serde_json::from_str(text)
        .map_err(|e| vec![at(e.line(), e.column(), format!("rule snapshot: {e}"))])?;
    let mut catalog = Catalog::default();
    let mut errors = Vec::new();
    for t in &b.templates {
        errors.extend(catalog.add_file(Path::new(&t.path), &t.text));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut rule = parse_rule_in(path, &b.rule.text, &catalog)?;
    rule.source = text.to_string();
    Ok(rule)
}
