//! Reloading rules without dropping working state: a bad file keeps the last good set, as
//! Prometheus does with its rule groups. Reloads come from SIGHUP and from a watch on the rule
//! folders; running rollouts keep the `Arc<Rule>` they started with.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode};
use notify_debouncer_mini::{DebounceEventResult, Debouncer, new_debouncer};

use super::{RuleError, load_paths};
use crate::rollout::controller::{Controller, RuleSet};

/// Loads every rule or none. Returns the errors when the set is rejected.
pub fn load_set(patterns: &[String]) -> Result<RuleSet, Vec<RuleError>> {
    let (rules, errors) = load_paths(patterns);
    if errors.is_empty() {
        Ok(rules
            .into_iter()
            .map(|r| (r.name().to_string(), Arc::new(r)))
            .collect())
    } else {
        Err(errors)
    }
}

/// Reloads into the controller; on any error keeps the running rules and says where.
pub fn reload(controller: &Controller, patterns: &[String]) -> Result<usize, Vec<RuleError>> {
    match load_set(patterns) {
        Ok(set) => {
            let n = set.len();
            controller.replace_rules(set);
            metrics::gauge!("canaryd_rules_reload_success").set(1.0);
            tracing::info!(rules = n, "rules reloaded");
            Ok(n)
        }
        Err(errors) => {
            metrics::gauge!("canaryd_rules_reload_success").set(0.0);
            for e in &errors {
                tracing::error!(error = %e, "rule reload rejected; keeping the running rules");
            }
            Err(errors)
        }
    }
}

/// How long file events settle before a reload: an editor's save is several events.
const DEBOUNCE: Duration = Duration::from_millis(300);

/// Watches the folders the rule patterns live in and reloads when a `.yaml`/`.yml` file in them
/// changes. Folders, not files, are watched: editors save by writing a new file and renaming it
/// over the old one, which a watch on the old file would miss. The returned debouncer must be
/// kept alive for as long as the watch should run.
pub fn watch(
    controller: Controller,
    patterns: Vec<String>,
) -> Result<Debouncer<RecommendedWatcher>, notify::Error> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut debouncer = new_debouncer(DEBOUNCE, move |result: DebounceEventResult| {
        let relevant = match result {
            Ok(events) => events.iter().any(|e| is_rule_file(&e.path)),
            Err(e) => {
                tracing::warn!(error = %e, "rule file watch error");
                false
            }
        };
        if relevant {
            let _ = tx.send(());
        }
    })?;
    let dirs = watched_dirs(&patterns);
    for dir in &dirs {
        debouncer
            .watcher()
            .watch(dir, RecursiveMode::NonRecursive)?;
    }
    tracing::info!(dirs = ?dirs, "watching rule files");
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            let _ = reload(&controller, &patterns);
        }
    });
    Ok(debouncer)
}

fn is_rule_file(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    )
}

/// The folder each pattern lives in: the folder itself, a file's parent, or a glob's longest
/// literal prefix.
fn watched_dirs(patterns: &[String]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for p in patterns {
        let path = Path::new(p);
        let dir = if p.contains(['*', '?', '[']) {
            path.components()
                .take_while(|c| !c.as_os_str().to_string_lossy().contains(['*', '?', '[']))
                .collect::<PathBuf>()
        } else if path.is_dir() {
            path.to_path_buf()
        } else {
            path.parent().map(Path::to_path_buf).unwrap_or_default()
        };
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        if dir.is_dir() && !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watches_the_folder_of_files_globs_and_folders() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().display().to_string();
        let dirs = watched_dirs(&[format!("{d}/a.yaml"), format!("{d}/*.yaml"), d.clone()]);
        assert_eq!(dirs, vec![tmp.path().to_path_buf()]);
        assert!(is_rule_file(Path::new("x/rule.yml")));
        assert!(!is_rule_file(Path::new("x/canaryd.db-wal")));
    }
}
