//! Reloading rules without dropping working state: a bad file keeps the last good set, as
//! Prometheus does with its rule groups. Reloads come from SIGHUP and from a watch on the rule
//! folders; running rollouts keep the `Arc<Rule>` they started with.
//!
//! The watch reloads on content changes only. Opening a file is an inotify event too, and a
//! reload reads every file: reacting to reads made each reload trigger the next, forever, after
//! a single `cat`. So read events are ignored, and any other event reloads only when the bytes
//! of the rule files (or the set of files) differ from the last ones read.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};

use super::{Controller, RuleSet};
use crate::rules::load::{RuleFile, load_files, read_paths};
use crate::rules::{RuleError, load_paths};

/// Loads every rule or none. Returns the errors when the set is rejected.
pub fn load_set(patterns: &[String]) -> Result<RuleSet, Vec<RuleError>> {
    into_set(load_paths(patterns))
}

fn into_set(
    (rules, errors): (Vec<crate::rules::Rule>, Vec<RuleError>),
) -> Result<RuleSet, Vec<RuleError>> {
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
    match read_paths(patterns) {
        Ok(files) => apply(controller, &files),
        Err(e) => apply_result(controller, Err(vec![e])),
    }
}

/// Loads files already read into the controller, counting the reload.
fn apply(controller: &Controller, files: &[RuleFile]) -> Result<usize, Vec<RuleError>> {
    apply_result(controller, into_set(load_files(files)))
}

fn apply_result(
    controller: &Controller,
    set: Result<RuleSet, Vec<RuleError>>,
) -> Result<usize, Vec<RuleError>> {
    metrics::counter!("canaryd_rules_reloads_total").increment(1);
    match set {
        Ok(set) => {
            let n = set.len();
            crate::faults::stop_at("mid_reload", "parsed");
            controller.replace_rules(set);
            metrics::gauge!("canaryd_rules_reload_success").set(1.0);
            tracing::info!(rules = n, "rules reloaded");
            Ok(n)
        }
        Err(errors) => {
            // Said before the gauge drops: whoever sees the gauge finds the reasons logged
            // (hot_reload's test read the log between the two and found nothing, under load).
            for e in &errors {
                tracing::error!(error = %e, "rule reload rejected; keeping the running rules");
            }
            metrics::gauge!("canaryd_rules_reload_success").set(0.0);
            Err(errors)
        }
    }
}

/// What the files looked like when last read: paths, contents and read errors, hashed. A
/// collision would skip one reload; at 64 bits that is not a practical concern.
fn digest(files: &Result<Vec<RuleFile>, RuleError>) -> u64 {
    let mut h = DefaultHasher::new();
    match files {
        Ok(files) => {
            for f in files {
                f.path.hash(&mut h);
                match &f.text {
                    Ok(text) => text.hash(&mut h),
                    Err(e) => e.message.hash(&mut h),
                }
            }
        }
        Err(e) => e.to_string().hash(&mut h),
    }
    h.finish()
}

/// How long file events settle before a reload: an editor's save is several events.
const DEBOUNCE: Duration = Duration::from_millis(300);

/// Watches the folders the rule patterns live in and reloads when the content of a
/// `.yaml`/`.yml` file in them changes. Folders, not files, are watched: editors save by writing
/// a new file and renaming it over the old one, which a watch on the old file would miss. The
/// returned watcher must be kept alive for as long as the watch should run.
pub fn watch(
    controller: Controller,
    patterns: Vec<String>,
) -> Result<RecommendedWatcher, notify::Error> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut watcher =
        notify::recommended_watcher(move |result: notify::Result<Event>| match result {
            Ok(event) if is_change(&event) => {
                let _ = tx.send(());
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "rule file watch error"),
        })?;
    let dirs = watched_dirs(&patterns);
    for dir in &dirs {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
    }
    tracing::info!(dirs = ?dirs, "watching rule files");
    // The files as serve loaded them a moment ago; an event that changes nothing reloads nothing.
    let mut last = digest(&read_paths(&patterns));
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            tokio::time::sleep(DEBOUNCE).await;
            while rx.try_recv().is_ok() {}
            let patterns = patterns.clone();
            let controller = controller.clone();
            // Reading, parsing and rendering every rule is blocking work; keep it off the
            // workers that answer the API and run rollouts.
            let checked = tokio::task::spawn_blocking(move || {
                let files = read_paths(&patterns);
                let now = digest(&files);
                if now != last {
                    let _ = match &files {
                        Ok(files) => apply(&controller, files),
                        Err(e) => apply_result(&controller, Err(vec![e.clone()])),
                    };
                }
                now
            })
            .await;
            match checked {
                Ok(now) => last = now,
                Err(e) => tracing::error!(error = %e, "rule reload task failed"),
            }
        }
    });
    Ok(watcher)
}

/// An event that may have changed a rule file: anything but a read (open, read, close after
/// reading) of a `.yaml`/`.yml` file.
fn is_change(event: &Event) -> bool {
    let read = matches!(
        event.kind,
        EventKind::Access(
            AccessKind::Open(_)
                | AccessKind::Read
                | AccessKind::Close(AccessMode::Read | AccessMode::Execute)
        )
    );
    !read && event.paths.iter().any(|p| is_rule_file(p))
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
    use notify::event::{CreateKind, DataChange, ModifyKind};

    #[test]
    fn watches_the_folder_of_files_globs_and_folders() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().display().to_string();
        let dirs = watched_dirs(&[format!("{d}/a.yaml"), format!("{d}/*.yaml"), d.clone()]);
        assert_eq!(dirs, vec![tmp.path().to_path_buf()]);
        assert!(is_rule_file(Path::new("x/rule.yml")));
        assert!(!is_rule_file(Path::new("x/canaryd.db-wal")));
    }

    #[test]
    fn reads_are_not_changes_and_writes_are() {
        let at = |kind| Event::new(kind).add_path(PathBuf::from("rules/a.yaml"));
        for read in [
            EventKind::Access(AccessKind::Open(notify::event::AccessMode::Any)),
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            EventKind::Access(AccessKind::Read),
        ] {
            assert!(!is_change(&at(read)), "{read:?}");
        }
        for change in [
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
            EventKind::Create(CreateKind::File),
        ] {
            assert!(is_change(&at(change)), "{change:?}");
        }
    }

    #[test]
    fn the_digest_changes_with_content_only() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("a.yaml");
        std::fs::write(&file, "name: a\n").unwrap();
        let patterns = vec![tmp.path().display().to_string()];
        let first = digest(&read_paths(&patterns));
        assert_eq!(first, digest(&read_paths(&patterns)));
        std::fs::write(&file, "name: b\n").unwrap();
        assert_ne!(first, digest(&read_paths(&patterns)));
    }
}
