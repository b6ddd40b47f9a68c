//! The embedded state store: one SQLite file, `state_dir/canaryd.db`.
//!
//! Why SQLite (and not redb): one file an operator can open with `sqlite3` at 3 a.m. to see what
//! canaryd believes; WAL journaling, so readers (the API) never block the writer; and the same
//! relational shape as the PostgreSQL store that will let replicas share state later.
//!
//! Why `synchronous = FULL`: canaryd acts on the world right after a decision is written (it
//! calls a rollback or promote hook). With WAL and `NORMAL`, a commit survives a crash of the
//! process but may be lost on power loss or a kernel crash, and canaryd could come back believing
//! it never decided a rollback it already announced. `FULL` syncs the WAL on every commit, so a
//! decision that was acted on is on disk. The cost per tick is measured in BENCHMARKS.md.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, params};

use super::{Delivery, SavedBatch, Store, StoreError};
use crate::rollout::{Phase, Rollout, Tick};

mod state_dir;
pub use state_dir::{DB_FILE, MARKER_FILE, StartMode};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS rollouts (
    id          TEXT PRIMARY KEY,
    rule        TEXT NOT NULL,
    version     TEXT NOT NULL,
    phase       TEXT NOT NULL,
    state       TEXT NOT NULL,   -- the whole Rollout as JSON: what the machine resumes from
    rule_source TEXT NOT NULL,   -- the rule file text the rollout started with
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS rollouts_rule ON rollouts(rule, phase);
CREATE TABLE IF NOT EXISTS ticks (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    rollout_id TEXT NOT NULL REFERENCES rollouts(id),
    at         TEXT NOT NULL,
    step       INTEGER NOT NULL,
    tick       TEXT NOT NULL     -- checks and score as JSON
);
CREATE INDEX IF NOT EXISTS ticks_rollout ON ticks(rollout_id, seq);
CREATE TABLE IF NOT EXISTS hook_deliveries (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    rollout_id      TEXT NOT NULL,
    hook            TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    attempts        INTEGER NOT NULL,
    outcome         TEXT NOT NULL,
    error           TEXT,
    at              TEXT NOT NULL,
    record          TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS deliveries_rollout ON hook_deliveries(rollout_id, seq);
";

/// SQLite behind a mutex: writes are a few per second per rollout, one connection is plenty,
/// and a single writer keeps SQLite's locking out of the picture.
pub struct SqliteStore {
    conn: Mutex<Connection>,
    path: PathBuf,
    /// The state directory's lock, released when the store is dropped (or the process dies).
    _lock: Option<state_dir::DirLock>,
}

fn unavailable(context: &str) -> impl FnOnce(rusqlite::Error) -> StoreError + '_ {
    move |e| StoreError::Unavailable(format!("{context}: {e}"))
}

fn corrupt(what: &str) -> impl FnOnce(serde_json::Error) -> StoreError + '_ {
    move |e| StoreError::Corrupt {
        what: what.to_string(),
        message: e.to_string(),
    }
}

impl SqliteStore {
    /// Locks `state_dir` for this process, then opens `state_dir/canaryd.db` in WAL mode with
    /// `synchronous = FULL`. A new database is created only in a directory that never held one,
    /// or with [`StartMode::Init`]; see [`state_dir`] for why.
    pub fn open(state_dir: &Path, mode: StartMode) -> Result<SqliteStore, StoreError> {
        let lock = state_dir::lock(state_dir)?;
        if state_dir::prepare(state_dir, mode)? == state_dir::Found::New {
            state_dir::create(state_dir, |tmp| {
                let conn = Connection::open(tmp).map_err(unavailable("creating the store"))?;
                conn.execute_batch(SCHEMA)
                    .map_err(unavailable("creating the store"))
            })?;
            tracing::info!(dir = %state_dir.display(), "new state store initialized");
        }
        let mut store = Self::open_file(&state_dir.join(DB_FILE), true)?;
        state_dir::ensure_marker(state_dir)?;
        store._lock = Some(lock);
        Ok(store)
    }

    /// Opens a database file without the state directory's checks or lock: for benches and
    /// tools. `full_sync` false is only for measuring what FULL costs.
    pub fn open_file(path: &Path, full_sync: bool) -> Result<SqliteStore, StoreError> {
        let context = format!("opening {}", path.display());
        let conn = Connection::open(path).map_err(unavailable(&context))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(unavailable(&context))?;
        conn.pragma_update(
            None,
            "synchronous",
            if full_sync { "FULL" } else { "NORMAL" },
        )
        .map_err(unavailable(&context))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(unavailable(&context))?;
        conn.execute_batch(SCHEMA).map_err(unavailable(&context))?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
            _lock: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written: transactions roll back.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn state_json(r: &Rollout) -> Result<String, StoreError> {
    serde_json::to_string(r).map_err(corrupt("rollout"))
}

/// One decision, serialized before any lock is taken.
struct Row<'a> {
    rollout: &'a Rollout,
    state: String,
    tick: Option<(&'a Tick, String)>,
}

impl<'a> Row<'a> {
    fn new(rollout: &'a Rollout, tick: Option<&'a Tick>) -> Result<Row<'a>, StoreError> {
        let tick = tick
            .map(|t| Ok::<_, StoreError>((t, serde_json::to_string(t).map_err(corrupt("tick"))?)))
            .transpose()?;
        Ok(Row {
            rollout,
            state: state_json(rollout)?,
            tick,
        })
    }

    /// The rollout's row and its tick, inside the caller's transaction or savepoint.
    fn write(&self, conn: &Connection, path: &Path) -> Result<(), StoreError> {
        let r = self.rollout;
        let changed = conn
            .execute(
                "UPDATE rollouts SET phase = ?2, state = ?3, updated_at = ?4 WHERE id = ?1",
                params![
                    r.id,
                    r.phase.as_str(),
                    self.state,
                    r.updated_at.to_rfc3339()
                ],
            )
            .map_err(unavailable("saving a rollout"))?;
        if changed == 0 {
            return Err(StoreError::Unavailable(format!(
                "rollout {} was never created in {}",
                r.id,
                path.display()
            )));
        }
        if let Some((t, json)) = &self.tick {
            conn.execute(
                "INSERT INTO ticks (rollout_id, at, step, tick) VALUES (?1, ?2, ?3, ?4)",
                params![r.id, t.at.to_rfc3339(), t.step as i64, json],
            )
            .map_err(unavailable("saving a tick"))?;
        }
        Ok(())
    }
}

impl Store for SqliteStore {
    fn create(&self, r: &Rollout, rule_source: &str) -> Result<(), StoreError> {
        let state = state_json(r)?;
        self.lock()
            .execute(
                "INSERT INTO rollouts (id, rule, version, phase, state, rule_source, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    r.id,
                    r.rule,
                    r.version,
                    r.phase.as_str(),
                    state,
                    rule_source,
                    r.created_at.to_rfc3339(),
                    r.updated_at.to_rfc3339()
                ],
            )
            .map_err(unavailable("creating a rollout"))?;
        Ok(())
    }

    fn save(&self, r: &Rollout, tick: Option<&Tick>) -> Result<(), StoreError> {
        let row = Row::new(r, tick)?;
        let mut conn = self.lock();
        let tx = conn
            .transaction()
            .map_err(unavailable("saving a rollout"))?;
        row.write(&tx, &self.path)?;
        tx.commit().map_err(unavailable("committing a decision"))
    }

    /// One transaction (one fsync) for the whole batch; each decision inside its own savepoint,
    /// so one that cannot be written (never created, unserializable) fails alone. A failed
    /// commit fails them all: nothing of the batch reached the disk.
    fn save_many(&self, batch: &[(&Rollout, Option<&Tick>)]) -> SavedBatch {
        let rows: Vec<Result<Row, StoreError>> =
            batch.iter().map(|(r, t)| Row::new(r, *t)).collect();
        let mut conn = self.lock();
        let all_fail = |e: &StoreError| SavedBatch {
            results: batch
                .iter()
                .map(|_| Err(StoreError::Unavailable(e.to_string())))
                .collect(),
            commits: 0,
        };
        let mut tx = match conn.transaction() {
            Ok(tx) => tx,
            Err(e) => return all_fail(&unavailable("saving decisions")(e)),
        };
        let mut results = Vec::with_capacity(rows.len());
        for row in rows {
            results.push(row.and_then(|row| {
                let sp = tx.savepoint().map_err(unavailable("saving a rollout"))?;
                // Dropping the savepoint unfinished rolls this decision back, and only it.
                row.write(&sp, &self.path)?;
                sp.commit().map_err(unavailable("saving a rollout"))
            }));
        }
        match tx.commit() {
            Ok(()) => SavedBatch {
                results,
                commits: 1,
            },
            Err(e) => all_fail(&unavailable("committing decisions")(e)),
        }
    }

    fn get(&self, id: &str) -> Result<Option<Rollout>, StoreError> {
        let state: Option<String> = self
            .lock()
            .query_row(
                "SELECT state FROM rollouts WHERE id = ?1",
                params![id],
                |row| row.get(0),
            )
            .optional()
            .map_err(unavailable("reading a rollout"))?;
        state
            .map(|s| serde_json::from_str(&s).map_err(corrupt(id)))
            .transpose()
    }

    fn list(&self) -> Result<Vec<Rollout>, StoreError> {
        // Rows are read under the connection's lock and parsed after it is released, so a long
        // list does not hold up the group commit's writer for the whole parse.
        let rows: Vec<(String, String)> = {
            let conn = self.lock();
            let mut stmt = conn
                .prepare("SELECT id, state FROM rollouts ORDER BY created_at, id")
                .map_err(unavailable("listing rollouts"))?;
            let rows = stmt
                .query_map([], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
                })
                .map_err(unavailable("listing rollouts"))?;
            rows.collect::<Result<_, _>>()
                .map_err(unavailable("listing rollouts"))?
        };
        rows.iter()
            .map(|(id, state)| serde_json::from_str(state).map_err(corrupt(id)))
            .collect()
    }

    fn list_in(&self, rule: &str, phase: Phase) -> Result<Vec<Rollout>, StoreError> {
        let rows: Vec<(String, String)> = {
            let conn = self.lock();
            let mut stmt = conn
                .prepare(
                    "SELECT id, state FROM rollouts WHERE rule = ?1 AND phase = ?2 \
                     ORDER BY created_at, id",
                )
                .map_err(unavailable("listing a rule's rollouts"))?;
            let rows = stmt
                .query_map(params![rule, phase.as_str()], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
                })
                .map_err(unavailable("listing a rule's rollouts"))?;
            rows.collect::<Result<_, _>>()
                .map_err(unavailable("listing a rule's rollouts"))?
        };
        rows.iter()
            .map(|(id, state)| serde_json::from_str(state).map_err(corrupt(id)))
            .collect()
    }

    fn rule_source(&self, id: &str) -> Result<Option<String>, StoreError> {
        self.lock()
            .query_row(
                "SELECT rule_source FROM rollouts WHERE id = ?1",
                params![id],
                |row| row.get(0),
            )
            .optional()
            .map_err(unavailable("reading a rule snapshot"))
    }

    fn history(&self, id: &str, limit: usize) -> Result<Vec<Tick>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare(
                "SELECT tick FROM (SELECT seq, tick FROM ticks WHERE rollout_id = ?1
                 ORDER BY seq DESC LIMIT ?2) ORDER BY seq",
            )
            .map_err(unavailable("reading history"))?;
        let rows = stmt
            .query_map(params![id, limit as i64], |row| row.get::<_, String>(0))
            .map_err(unavailable("reading history"))?;
        let mut out = Vec::new();
        for row in rows {
            let json = row.map_err(unavailable("reading history"))?;
            out.push(serde_json::from_str(&json).map_err(corrupt("tick"))?);
        }
        Ok(out)
    }

    fn record_delivery(&self, d: &Delivery) -> Result<(), StoreError> {
        let record = serde_json::to_string(d).map_err(corrupt("delivery"))?;
        self.lock()
            .execute(
                "INSERT INTO hook_deliveries
                 (rollout_id, hook, idempotency_key, attempts, outcome, error, at, record)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    d.rollout_id,
                    d.hook.as_str(),
                    d.idempotency_key,
                    d.attempts,
                    d.outcome,
                    d.error,
                    d.at.to_rfc3339(),
                    record
                ],
            )
            .map_err(unavailable("logging a hook delivery"))?;
        Ok(())
    }

    fn deliveries(&self, id: &str) -> Result<Vec<Delivery>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare("SELECT record FROM hook_deliveries WHERE rollout_id = ?1 ORDER BY seq")
            .map_err(unavailable("reading hook deliveries"))?;
        let rows = stmt
            .query_map(params![id], |row| row.get::<_, String>(0))
            .map_err(unavailable("reading hook deliveries"))?;
        let mut out = Vec::new();
        for row in rows {
            let json = row.map_err(unavailable("reading hook deliveries"))?;
            out.push(serde_json::from_str(&json).map_err(corrupt("delivery"))?);
        }
        Ok(out)
    }

    fn ping(&self) -> Result<(), StoreError> {
        self.lock()
            .query_row("SELECT count(*) FROM rollouts", [], |_| Ok(()))
            .map_err(unavailable("checking the state store"))
    }
}
