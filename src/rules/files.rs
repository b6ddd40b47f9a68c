//! Rule files on disk: paths, folders and globs expanded, and each file read whole up to a
//! cap. Split from `load` (the file budget); `load` re-exports what callers name.

use std::path::{Path, PathBuf};

use super::RuleError;

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
            let mut found: Vec<PathBuf> = matches
                .filter_map(Result::ok)
                .filter(|f| f.is_file())
                .collect();
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

/// Rule files larger than this are refused unread: the shipped ones are a few KiB, and a rule
/// is parsed, rendered and kept in memory (and in every rollout's snapshot) whole.
pub const MAX_RULE_FILE_BYTES: usize = 1 << 20;

/// One rule file as read from disk: its text, or why it cannot be used.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleFile {
    pub path: PathBuf,
    pub text: Result<String, RuleError>,
}

/// Reads every file under `patterns`, each at most [`MAX_RULE_FILE_BYTES`].
pub fn read_paths(patterns: &[String]) -> Result<Vec<RuleFile>, RuleError> {
    Ok(expand_paths(patterns)?
        .into_iter()
        .map(|path| RuleFile {
            text: read_capped(&path),
            path,
        })
        .collect())
}

/// Reads at most one byte past the cap, so a file that grows while it is read (or a FIFO that
/// never ends) costs no more than the cap.
pub(super) fn read_capped(path: &Path) -> Result<String, RuleError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| io_error(path, &e))?;
    let mut bytes = Vec::new();
    file.take(MAX_RULE_FILE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| io_error(path, &e))?;
    if bytes.len() > MAX_RULE_FILE_BYTES {
        return Err(too_large(path));
    }
    String::from_utf8(bytes).map_err(|e| RuleError {
        file: path.to_path_buf(),
        line: 1,
        column: 1,
        message: format!("not UTF-8 text: {e}"),
    })
}

pub(super) fn too_large(path: &Path) -> RuleError {
    RuleError {
        file: path.to_path_buf(),
        line: 1,
        column: 1,
        message: format!(
            "rule file is larger than the {} bytes allowed",
            MAX_RULE_FILE_BYTES
        ),
    }
}
