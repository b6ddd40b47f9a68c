//! Versioned schema migrations, applied at start by whichever replica gets there first.
//!
//! A list of numbered SQL scripts and a table of the ones applied, in one transaction under an
//! advisory lock, so two replicas starting together apply each script once. Written out here
//! (a dozen lines) rather than with a migrations crate: there is one script so far, and this
//! keeps the blocking client the only new dependency on a 2-core build.
//!
//! Architecture Invariant: a script is never edited once released; a change is a new script.

use postgres::Client;

use super::conn::unavailable;
use crate::store::StoreError;

/// Any fixed number: the advisory lock that serializes replicas applying migrations.
const MIGRATION_LOCK: i64 = 0x6361_6e61_7279;

/// Tables are prefixed so canaryd can share a database with the service it watches.
pub const MIGRATIONS: &[(i32, &str)] = &[(
    1,
    "
CREATE TABLE canaryd_rollouts (
    id          TEXT PRIMARY KEY,
    rule        TEXT NOT NULL,
    version     TEXT NOT NULL,
    phase       TEXT NOT NULL,
    state       TEXT NOT NULL,    -- the whole Rollout as JSON, as in the SQLite store
    rule_source TEXT NOT NULL,
    created_us  BIGINT NOT NULL,  -- for ordering; the JSON keeps the exact time
    updated_at  TEXT NOT NULL,
    epoch       BIGINT NOT NULL   -- the leader term of the last write
);
CREATE INDEX canaryd_rollouts_rule ON canaryd_rollouts(rule, phase);
CREATE TABLE canaryd_ticks (
    seq        BIGSERIAL PRIMARY KEY,
    rollout_id TEXT NOT NULL REFERENCES canaryd_rollouts(id),
    at         TEXT NOT NULL,
    step       BIGINT NOT NULL,
    tick       TEXT NOT NULL
);
CREATE INDEX canaryd_ticks_rollout ON canaryd_ticks(rollout_id, seq);
CREATE TABLE canaryd_hook_deliveries (
    seq             BIGSERIAL PRIMARY KEY,
    rollout_id      TEXT NOT NULL,
    hook            TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    attempts        BIGINT NOT NULL,
    outcome         TEXT NOT NULL,
    error           TEXT,
    at              TEXT NOT NULL,
    record          TEXT NOT NULL,
    epoch           BIGINT NOT NULL
);
CREATE INDEX canaryd_deliveries_rollout ON canaryd_hook_deliveries(rollout_id, seq);
-- One row: who leads, under which epoch, until when (the database's clock).
CREATE TABLE canaryd_lease (
    id         INT PRIMARY KEY CHECK (id = 1),
    holder     TEXT NOT NULL,
    url        TEXT NOT NULL,
    epoch      BIGINT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
INSERT INTO canaryd_lease VALUES (1, '', '', 0, '-infinity');
",
)];

/// Applies every script newer than the database's version; refuses a database migrated by a
/// newer canaryd (its tables may mean something this one does not know).
pub fn migrate(client: &mut Client) -> Result<i32, StoreError> {
    let ctx = "applying schema migrations";
    let mut tx = client.transaction().map_err(unavailable(ctx))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(unavailable(ctx))?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS canaryd_schema_migrations (
             version    INT PRIMARY KEY,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    )
    .map_err(unavailable(ctx))?;
    let applied: i32 = tx
        .query_one(
            "SELECT COALESCE(max(version), 0) FROM canaryd_schema_migrations",
            &[],
        )
        .map_err(unavailable(ctx))?
        .get(0);
    let latest = MIGRATIONS.last().map_or(0, |m| m.0);
    if applied > latest {
        return Err(StoreError::Corrupt {
            what: "schema".into(),
            message: format!(
                "the database is at schema version {applied}, newer than this canaryd knows \
                 ({latest}); run the newer canaryd"
            ),
        });
    }
    for (version, sql) in MIGRATIONS.iter().filter(|m| m.0 > applied) {
        tx.batch_execute(sql).map_err(unavailable(ctx))?;
        tx.execute(
            "INSERT INTO canaryd_schema_migrations (version) VALUES ($1)",
            &[version],
        )
        .map_err(unavailable(ctx))?;
        tracing::info!(version, "schema migration applied");
    }
    tx.commit().map_err(unavailable(ctx))?;
    Ok(latest)
}
