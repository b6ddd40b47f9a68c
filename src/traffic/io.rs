//! Bounded I/O shared by the providers: atomic file replacement, bounded reads, commands with a
//! timeout and a capped, redacted error.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Files canaryd reads back are its own small configs; anything larger is not one of them.
pub(super) const MAX_FILE: u64 = 256 * 1024;

pub(super) fn read_bounded(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let f =
        std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut text = String::new();
    f.take(MAX_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if text.len() as u64 > MAX_FILE {
        return Err(format!(
            "{} is larger than {MAX_FILE} bytes",
            path.display()
        ));
    }
    Ok(text)
}

/// Writes beside `path` and renames over it: a reader sees the old file or the new one, never
/// half of one.
pub(super) fn write_atomic(path: &Path, content: &str) -> Result<(), String> {
    use std::io::Write;
    let tmp = sibling(path, "canaryd-tmp");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(content.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot write {}: {e}", path.display())
    })
}

pub(super) fn sibling(path: &Path, tag: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{tag}.{}", std::process::id()))
}

/// Runs argv (never through a shell) with a timeout; the error carries the first 500
/// characters of stderr, redacted.
pub(super) async fn run(argv: &[String], timeout: Duration) -> Result<String, String> {
    let Some((program, args)) = argv.split_first() else {
        return Err("empty command".into());
    };
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("{program:?} could not start: {e}"))?;
    let out = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Err(_) => return Err(format!("{program:?} did not finish within {timeout:?}")),
        Ok(Err(e)) => return Err(format!("{program:?}: {e}")),
        Ok(Ok(out)) => out,
    };
    let stderr: String = crate::redact::text(
        &String::from_utf8_lossy(&out.stderr)
            .chars()
            .take(500)
            .collect::<String>(),
    );
    if out.status.success() {
        Ok(stderr)
    } else {
        Err(format!(
            "{program:?} exited with {:?}: {}",
            out.status.code(),
            stderr.trim()
        ))
    }
}
