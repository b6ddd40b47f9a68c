//! The deployment records of this process's rollouts ([`ReportBook`]) and the subscriber that
//! builds them from the update stream and writes each when its rollout ends ([`run`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::feed::Feed;
use super::report::{Report, ReportBuilder};
use crate::actions::templates::Templates;

/// Reports of this process's rollouts by id, shared with the API. It holds the builders
/// themselves and renders a [`Report`] when one is asked for: a second copy of every live
/// rollout's report, refreshed by a clone per update, was about 2 KB a rollout at scale.
/// An ended rollout's builder is replaced by its final report: the builder holds the
/// rollout's last state, which is shared only while the rollout is live.
#[derive(Clone, Default)]
pub struct ReportBook {
    inner: Arc<Mutex<HashMap<String, Kept>>>,
    dir: Option<PathBuf>,
}

enum Kept {
    Live(ReportBuilder),
    Ended(Box<Report>),
}

impl ReportBook {
    pub fn new(dir: Option<PathBuf>) -> ReportBook {
        ReportBook {
            inner: Arc::default(),
            dir,
        }
    }

    /// The report of `id`: live from memory, else the JSON an earlier run left in `reports_dir`.
    pub fn get(&self, id: &str) -> Option<Report> {
        match self.lock().get(id) {
            Some(Kept::Live(b)) => return Some(b.report()),
            Some(Kept::Ended(r)) => return Some((**r).clone()),
            None => {}
        }
        let dir = self.dir.as_ref()?;
        let suffix = format!("-{id}.json");
        std::fs::read_dir(dir)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.ends_with(&suffix))
            })
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Kept>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn write(dir: &Path, t: &Templates, r: &Report) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let stem = file_stem(r);
    let md = render_markdown(t, r).map_err(|e| e.to_string())?;
    let json = serde_json::to_vec_pretty(r).map_err(|e| e.to_string())?;
    let md_path = dir.join(format!("{stem}.md"));
    write_whole(dir, &md_path, md.as_bytes())?;
    let json_path = dir.join(format!("{stem}.json"));
    write_whole(dir, &json_path, &json)?;
    Ok(md_path)
}

/// Writes through a temporary file renamed into place, so a reader (or a crash) never sees half
/// a record: the file is absent or whole.
fn write_whole(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), String> {
    let failed = |e: std::io::Error| format!("writing {}: {e}", path.display());
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(failed)?;
    std::io::Write::write_all(&mut tmp, bytes).map_err(failed)?;
    tmp.persist(path).map_err(|e| failed(e.error))?;
    Ok(())
}

/// Runs until the update stream closes.
pub async fn run(mut feed: Feed, book: ReportBook, templates: Templates) {
    // Rollouts whose record is written; a resync after a lag lists them again.
    let mut written = std::collections::HashSet::new();
    while let Some(updates) = feed.next().await {
        for u in updates {
            let r = &u.rollout;
            if written.contains(&r.id) {
                continue;
            }
            let ended = {
                let mut kept = book.lock();
                let entry = kept.entry(r.id.clone()).or_insert_with(|| {
                    let rules = feed.controller().rules();
                    Kept::Live(ReportBuilder::new(r, rules.get(&r.rule).cloned()))
                });
                match entry {
                    Kept::Live(builder) => {
                        builder.observe(&u);
                        if r.phase.is_terminal() {
                            let report = builder.report();
                            // Cloned only to be written, outside the lock.
                            *entry = Kept::Ended(Box::new(report.clone()));
                            Some(report)
                        } else {
                            None
                        }
                    }
                    Kept::Ended(_) => None,
                }
            };
            let Some(report) = ended else {
                continue;
            };
            written.insert(r.id.clone());
            if let Some(dir) = &book.dir {
                match write(dir, &templates, &report) {
                    Ok(p) => {
                        tracing::info!(event = "report.write", rollout = %report.rollout, path = %p.display(), "deployment record written")
                    }
                    Err(e) => {
                        tracing::error!(rollout = %report.rollout, error = %e, "cannot write the deployment record")
                    }
                }
            }
        }
    }
}

/// `<YYYY-MM-DD>-<rule>-<rollout>`: sorted by day like the runbook's `reports/deploys/`, unique
/// per rollout.
pub fn file_stem(r: &Report) -> String {
    format!(
        "{}-{}-{}",
        r.started_at.format("%Y-%m-%d"),
        r.rule,
        r.rollout
    )
}

/// Renders the Markdown record.
pub fn render_markdown(
    t: &Templates,
    r: &Report,
) -> Result<String, crate::actions::templates::TemplateError> {
    let ctx = serde_json::to_value(r).unwrap_or_default();
    t.render("report.md.j2", &ctx)
}
