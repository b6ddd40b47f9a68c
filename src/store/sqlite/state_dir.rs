//! What canaryd may open as its state directory, and the lock that keeps a second daemon out.
//!
//! Why refuse rather than start empty: a database that is gone or zero bytes long, in a
//! directory that shows it held one (the marker file, a WAL beside it, the lock file of an older
//! canaryd), has lost every live rollout. Starting empty would silently forget rollbacks still
//! owed to the world and canaries left at 25 %. So canaryd starts empty only in a directory that
//! never held a store, or when the operator says so once with `--init-state`.
//!
//! Why lock the directory itself (not a lock file in it): a lock on a file is lost for everyone
//! who opens the path after the file is deleted, and a second daemon would create a new file and
//! lock that. The directory cannot be swapped under a running daemon while it holds the store, and
//! the OS drops the lock with the process, so a `kill -9` never leaves it stale.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use chrono::Utc;

use crate::store::StoreError;

/// The database, named so an operator finds it with `ls`.
pub const DB_FILE: &str = "canaryd.db";
/// Written once the store is initialized: proof this directory held a store, even after a clean
/// shutdown removed the WAL.
pub const MARKER_FILE: &str = "canaryd.state";
/// Where a new database is built before it is renamed into place, so a crash during
/// initialization never leaves a zero-length `canaryd.db` behind.
const INIT_FILE: &str = "canaryd.db.init";
/// Older canaryd versions locked this file; its presence means a daemon ran here.
const LEGACY_LOCK_FILE: &str = "canaryd.lock";

/// How `serve` may treat a state directory whose database is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartMode {
    /// Open the store; start empty only in a directory that never held one.
    Resume,
    /// `--init-state`: start with no rollouts even if the directory shows it held some (the
    /// stale files are kept, renamed). Refused when a readable store exists, so the flag cannot
    /// stay in a unit file and hide a later loss.
    Init,
}

/// An exclusive OS lock (`flock`) on the state directory, held while this value lives.
#[derive(Debug)]
pub struct DirLock {
    _dir: File,
}

/// Takes the directory's lock, or says which daemon-shared directory is in use.
pub fn lock(dir: &Path) -> Result<DirLock, StoreError> {
    fs::create_dir_all(dir)
        .map_err(|e| StoreError::Unavailable(format!("cannot create {}: {e}", dir.display())))?;
    let handle = File::open(dir)
        .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", dir.display())))?;
    match handle.try_lock() {
        Ok(()) => Ok(DirLock { _dir: handle }),
        Err(fs::TryLockError::WouldBlock) => Err(StoreError::Locked {
            dir: dir.to_path_buf(),
        }),
        Err(fs::TryLockError::Error(e)) => Err(StoreError::Unavailable(format!(
            "cannot lock {}: {e}",
            dir.display()
        ))),
    }
}

/// What [`prepare`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    /// A database with content: open it.
    Store,
    /// No database and nothing that says there was one: build a new one.
    New,
}

/// Decides whether the database in `dir` may be opened or created. Call with the lock held.
pub fn prepare(dir: &Path, mode: StartMode) -> Result<Found, StoreError> {
    let db = dir.join(DB_FILE);
    let db_len = match fs::metadata(&db) {
        Ok(m) => Some(m.len()),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => {
            return Err(StoreError::Unavailable(format!(
                "cannot read {}: {e}",
                db.display()
            )));
        }
    };
    if db_len.is_some_and(|len| len > 0) {
        return match mode {
            StartMode::Resume => Ok(Found::Store),
            StartMode::Init => Err(StoreError::AlreadyInitialized { db }),
        };
    }
    let mut evidence: Vec<PathBuf> = [
        MARKER_FILE,
        "canaryd.db-wal",
        "canaryd.db-shm",
        LEGACY_LOCK_FILE,
    ]
    .iter()
    .map(|name| dir.join(name))
    .filter(|p| p.exists())
    .collect();
    if db_len == Some(0) {
        evidence.insert(0, db.clone());
    }
    if evidence.is_empty() {
        return Ok(Found::New);
    }
    if mode == StartMode::Resume {
        return Err(StoreError::Lost {
            state: if db_len.is_some() { "empty" } else { "missing" },
            evidence: evidence
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            db,
        });
    }
    // Never delete what might be restored: the stale files stay beside the new store.
    let suffix = format!("stale-{}", Utc::now().format("%Y%m%dT%H%M%SZ"));
    for path in evidence {
        let mut aside = path.clone().into_os_string();
        aside.push(format!(".{suffix}"));
        fs::rename(&path, &aside).map_err(|e| {
            StoreError::Unavailable(format!("cannot move {} aside: {e}", path.display()))
        })?;
        tracing::warn!(file = %path.display(), moved_to = %PathBuf::from(&aside).display(), "--init-state: stale state file kept aside");
    }
    Ok(Found::New)
}

/// Builds a new database with `init` (which writes the schema) under a temporary name, then
/// renames it into place and writes the marker: after a crash at any point, `canaryd.db` is
/// either absent or whole.
pub fn create(
    dir: &Path,
    init: impl FnOnce(&Path) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let tmp = dir.join(INIT_FILE);
    for leftover in [tmp.clone(), dir.join("canaryd.db.init-journal")] {
        match fs::remove_file(&leftover) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => {
                return Err(StoreError::Unavailable(format!(
                    "cannot remove {}: {e}",
                    leftover.display()
                )));
            }
        }
    }
    init(&tmp)?;
    let io = |what: &str, p: &Path| {
        let what = format!("{what} {}", p.display());
        move |e: std::io::Error| StoreError::Unavailable(format!("{what}: {e}"))
    };
    File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io("cannot sync", &tmp))?;
    let db = dir.join(DB_FILE);
    fs::rename(&tmp, &db).map_err(io("cannot rename into", &db))?;
    sync_dir(dir)?;
    write_marker(dir)
}

/// Writes the marker if it is missing (a store made by an older canaryd has none).
pub fn ensure_marker(dir: &Path) -> Result<(), StoreError> {
    if dir.join(MARKER_FILE).exists() {
        return Ok(());
    }
    write_marker(dir)
}

fn write_marker(dir: &Path) -> Result<(), StoreError> {
    let marker = dir.join(MARKER_FILE);
    let tmp = dir.join(format!("{MARKER_FILE}.tmp"));
    let body = serde_json::json!({
        "store": DB_FILE,
        "format": 1,
        "initialized_at": Utc::now().to_rfc3339(),
        "note": "canaryd refuses to start if the store beside this file is missing or empty",
    });
    let write = || -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(format!("{body:#}\n").as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, &marker)
    };
    write()
        .map_err(|e| StoreError::Unavailable(format!("cannot write {}: {e}", marker.display())))?;
    sync_dir(dir)
}

/// Makes a rename durable: the directory entry is data too.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::Unavailable(format!("cannot sync {}: {e}", dir.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(dir: &Path, name: &str, bytes: &[u8]) {
        fs::write(dir.join(name), bytes).expect("write");
    }

    #[test]
    fn an_empty_directory_is_new() {
        let d = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            prepare(d.path(), StartMode::Resume).expect("new"),
            Found::New
        );
    }

    #[test]
    fn unrelated_files_do_not_make_a_directory_a_store() {
        let d = tempfile::tempdir().expect("tempdir");
        touch(d.path(), "canaryd-1234.log", b"log");
        assert_eq!(
            prepare(d.path(), StartMode::Resume).expect("new"),
            Found::New
        );
    }

    #[test]
    fn a_zero_length_database_is_refused_naming_it() {
        let d = tempfile::tempdir().expect("tempdir");
        touch(d.path(), DB_FILE, b"");
        let e = prepare(d.path(), StartMode::Resume).expect_err("refused");
        let text = e.to_string();
        assert!(
            text.contains(&d.path().join(DB_FILE).display().to_string()),
            "{text}"
        );
        assert!(text.contains("empty"), "{text}");
    }

    #[test]
    fn a_missing_database_beside_its_wal_or_marker_is_refused() {
        for evidence in [
            MARKER_FILE,
            "canaryd.db-wal",
            "canaryd.db-shm",
            LEGACY_LOCK_FILE,
        ] {
            let d = tempfile::tempdir().expect("tempdir");
            touch(d.path(), evidence, b"x");
            let text = prepare(d.path(), StartMode::Resume)
                .expect_err(evidence)
                .to_string();
            assert!(
                text.contains("missing") && text.contains(evidence),
                "{text}"
            );
        }
    }

    #[test]
    fn init_state_moves_stale_files_aside_and_starts_new() {
        let d = tempfile::tempdir().expect("tempdir");
        touch(d.path(), DB_FILE, b"");
        touch(d.path(), "canaryd.db-wal", b"frames");
        assert_eq!(
            prepare(d.path(), StartMode::Init).expect("init"),
            Found::New
        );
        let names: Vec<String> = fs::read_dir(d.path())
            .expect("ls")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            !names.iter().any(|n| n == DB_FILE || n == "canaryd.db-wal"),
            "{names:?}"
        );
        assert_eq!(
            names.iter().filter(|n| n.contains(".stale-")).count(),
            2,
            "{names:?}"
        );
    }

    #[test]
    fn init_state_is_refused_when_a_store_exists() {
        let d = tempfile::tempdir().expect("tempdir");
        touch(d.path(), DB_FILE, b"SQLite format 3\0");
        let e = prepare(d.path(), StartMode::Init).expect_err("refused");
        assert!(matches!(e, StoreError::AlreadyInitialized { .. }), "{e}");
        assert_eq!(
            prepare(d.path(), StartMode::Resume).expect("open"),
            Found::Store
        );
    }

    #[test]
    fn a_second_lock_on_the_directory_is_refused_even_without_a_lock_file() {
        let d = tempfile::tempdir().expect("tempdir");
        let _held = lock(d.path()).expect("first");
        let e = lock(d.path()).expect_err("second");
        assert!(matches!(e, StoreError::Locked { .. }), "{e}");
    }
}
