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
use super::kept_text::KeptText;
use super::load::{MAX_RULE_FILE_BYTES, parse_rule_in};
use super::{Rule, RuleError, Source};

/// How every bundle starts: serde_json writes fields in declaration order, without spaces.
const PREFIX: &str = r#"{"kind":"rule_snapshot","#;

/// A bundle holds a rule and its template files, each at most [`MAX_RULE_FILE_BYTES`]; a rule
/// whose bundle would be larger than this is refused when it loads, so a stored snapshot always
/// fits.
pub const MAX_SNAPSHOT_BYTES: usize = 4 * MAX_RULE_FILE_BYTES;

/// A bundle as read back (its `kind` is the [`PREFIX`] already matched).
#[derive(Deserialize)]
struct Bundle {
    rule: Part,
    templates: Vec<Part>,
}

#[derive(Deserialize)]
struct Part {
    path: String,
    text: String,
}

/// [`Bundle`] as written: the same fields in the same order, borrowing the texts.
#[derive(Serialize)]
struct BundleRef<'a> {
    kind: &'static str,
    rule: PartRef<'a>,
    templates: Vec<PartRef<'a>>,
}

#[derive(Serialize)]
struct PartRef<'a> {
    path: String,
    text: &'a str,
}

pub(crate) fn is_snapshot(text: &str) -> bool {
    text.starts_with(PREFIX)
}

/// A snapshot that could not be written: serde_json refuses nothing made of strings, and a kept
/// text is checked to read back when it is kept, so either is a bug, and the rollout it was
/// for is refused rather than started without its snapshot.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("cannot write the rule snapshot of {path}: {source}")]
    Json {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot write the rule snapshot of {path}: {source}")]
    Kept {
        path: String,
        #[source]
        source: super::kept_text::KeptTextError,
    },
}

/// The snapshot of a rule at `path` that used `files`. Written when a rollout starts rather
/// than kept with the rule: rules share their template files, snapshots would not.
pub(crate) fn write(
    path: &Path,
    text: &str,
    files: &[Arc<TemplateFile>],
) -> Result<String, SnapshotError> {
    fn part<'a>(p: &Path, text: &'a str) -> PartRef<'a> {
        PartRef {
            path: p.display().to_string(),
            text,
        }
    }
    let b = BundleRef {
        kind: "rule_snapshot",
        rule: part(path, text),
        templates: files.iter().map(|f| part(&f.path, &f.text)).collect(),
    };
    serde_json::to_string(&b).map_err(|source| SnapshotError::Json {
        path: path.display().to_string(),
        source,
    })
}

/// Refuses a rule whose snapshot would be larger than [`MAX_SNAPSHOT_BYTES`], so a stored
/// snapshot always fits. JSON writes a character as at most 6 bytes (`\u001f`), so a rule
/// whose texts are well under the bound is not serialized at load time at all.
pub(crate) fn check_size(
    path: &Path,
    text: &str,
    files: &[Arc<TemplateFile>],
) -> Result<(), String> {
    let raw = files
        .iter()
        .map(|f| f.text.len() + f.path.as_os_str().len() + 32)
        .sum::<usize>()
        + text.len()
        + path.as_os_str().len()
        + 64;
    if raw.saturating_mul(6) <= MAX_SNAPSHOT_BYTES {
        return Ok(());
    }
    let len = write(path, text, files).map_err(|e| e.to_string())?.len();
    if len > MAX_SNAPSHOT_BYTES {
        return Err(format!(
            "this rule and the template files it uses are {len} bytes; a rollout's snapshot keeps at most {MAX_SNAPSHOT_BYTES}"
        ));
    }
    Ok(())
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
    rule.source = Source::Text(KeptText::new(text, None));
    Ok(rule)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATES: &str = "kind: metric_templates\ntemplates:\n  - name: up\n    query: sum(up{ {{selector}} })\n    rollback_below: 1\n";
    const RULE: &str = "name: api\nselector: { canary: 'track=\"c\"', baseline: 'track=\"b\"' }\nsteps: [{ weight: 100 }]\nmetrics:\n  - { name: up, template: up }\n";

    /// Stored snapshots are read back by every later version, so the text is a format: fields
    /// in this order, no spaces, every text escaped by JSON. Written lazily now, it must stay
    /// byte for byte what the bundle kept with each rule used to be.
    #[test]
    fn a_snapshot_is_the_stored_format_byte_for_byte_and_reads_back_as_itself() {
        let rule = super::super::parse_rule_with(
            Path::new("api.yaml"),
            RULE,
            &[(Path::new("t/up.yaml"), TEMPLATES)],
        )
        .expect("rule loads");
        let expected = concat!(
            r#"{"kind":"rule_snapshot","rule":{"path":"api.yaml","text":"name: api\nselector: { canary: 'track=\"c\"', baseline: 'track=\"b\"' }\nsteps: [{ weight: 100 }]\nmetrics:\n  - { name: up, template: up }\n"},"#,
            r#""templates":[{"path":"t/up.yaml","text":"kind: metric_templates\ntemplates:\n  - name: up\n    query: sum(up{ {{selector}} })\n    rollback_below: 1\n"}]}"#
        );
        assert_eq!(rule.source().expect("writes"), expected);
        let again = parse(Path::new("elsewhere.yaml"), expected).expect("snapshot parses");
        assert_eq!(
            again.source().expect("kept"),
            expected,
            "kept as stored, whatever the path"
        );
        assert_eq!(
            again.metrics().next().and_then(|m| m.rollback_below),
            Some(1.0)
        );
    }

    /// Three template files of 800 kB each, every byte a `"` that JSON writes as two: the
    /// files fit, their snapshot (4.8 MB) would not, and the check's shortcut must not pass it.
    #[test]
    fn a_rule_whose_snapshot_would_not_fit_is_refused_at_load() {
        let file = |name: &str| {
            format!(
                "kind: metric_templates\ntemplates:\n  - name: {name}\n    query: sum(up{{ {{{{selector}}}} }})\n    rollback_below: 1\n# {}\n",
                "\"".repeat(800_000)
            )
        };
        let (a, b, c) = (file("a"), file("b"), file("c"));
        let rule = RULE.replace(
            "  - { name: up, template: up }\n",
            "  - { name: a, template: a }\n  - { name: b, template: b }\n  - { name: c, template: c }\n",
        );
        let files = [
            (Path::new("a.yaml"), a.as_str()),
            (Path::new("b.yaml"), b.as_str()),
            (Path::new("c.yaml"), c.as_str()),
        ];
        let e = super::super::parse_rule_with(Path::new("api.yaml"), &rule, &files)
            .expect_err("too large once escaped");
        assert!(
            e[0].message.contains("a rollout's snapshot keeps at most"),
            "{e:?}"
        );
        // Two of them fit (3.2 MB): the bound is the escaped size, not the file count.
        let two = rule.replace("  - { name: c, template: c }\n", "");
        super::super::parse_rule_with(Path::new("api.yaml"), &two, &files).expect("fits");
    }
}
