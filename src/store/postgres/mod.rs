//! The shared state store: PostgreSQL, for two or more replicas with one leader at a time.
//!
//! Same records as the SQLite store (rollouts with their rule snapshot, ticks, hook deliveries),
//! plus the lease row of [`crate::controller::lease`]. Reads are open to every replica (followers
//! serve the API from here). Every write is fenced: in its transaction it takes a share lock on
//! the lease row and checks the lease still carries the writer's epoch. A takeover (which
//! updates that row) therefore waits for a write in flight to commit, and a write after a
//! takeover fails — and ends the writer's term at once, so it stops acting too.
//!
//! The URL (with its password) is read from a file by the caller and never printed; errors go
//! through [`crate::redact`].

mod conn;
pub mod schema;

use std::str::FromStr;
use std::time::Duration;

use postgres::Transaction;

use self::conn::{Conn, unavailable};
use super::leadership::{Leadership, LeaseBackend};
use super::{Delivery, Store, StoreError};
use crate::rollout::{Rollout, Tick};

/// Longest a store call waits for PostgreSQL; the server also cancels a statement after it.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

pub struct PostgresStore {
    store: Conn,
    /// Its own connection: a renewal never queues behind a slow store call.
    lease: Conn,
    leadership: Leadership,
}

fn corrupt(what: &str) -> impl FnOnce(serde_json::Error) -> StoreError + '_ {
    move |e| StoreError::Corrupt {
        what: what.to_string(),
        message: e.to_string(),
    }
}

impl PostgresStore {
    /// Connects, applies pending migrations, and returns a store whose writes are fenced by
    /// `leadership`'s epoch.
    pub fn open(url: &str, leadership: Leadership) -> Result<PostgresStore, StoreError> {
        let mut config = postgres::Config::from_str(url).map_err(|e| {
            StoreError::Unavailable(format!(
                "the PostgreSQL URL is not valid: {}",
                crate::redact::text(&e.to_string())
            ))
        })?;
        config
            .application_name("canaryd")
            .connect_timeout(Duration::from_secs(5))
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(10))
            .options("-c statement_timeout=8000 -c lock_timeout=5000");
        let store = Conn::open("store", config.clone(), CALL_TIMEOUT)?;
        let lease = Conn::open("lease", config, CALL_TIMEOUT)?;
        let version = store.call("applying schema migrations", schema::migrate)?;
        tracing::info!(schema = version, "PostgreSQL state store ready");
        Ok(PostgresStore {
            store,
            lease,
            leadership,
        })
    }

    /// Runs `f` in a transaction that commits only if the lease still carries this replica's
    /// epoch; otherwise nothing is written and the term ends.
    fn fenced<T: Send + 'static>(
        &self,
        context: &'static str,
        f: impl FnOnce(&mut Transaction<'_>, i64) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let Some(epoch) = self.leadership.epoch() else {
            return Err(StoreError::NotLeader(format!(
                "{context}: this replica does not lead"
            )));
        };
        let mine = i64::try_from(epoch).unwrap_or(i64::MAX);
        let result = self.store.call(context, move |c| {
            let mut tx = c.transaction().map_err(unavailable(context))?;
            let current: i64 = tx
                .query_one(
                    "SELECT epoch FROM canaryd_lease WHERE id = 1 FOR SHARE",
                    &[],
                )
                .map_err(unavailable(context))?
                .get(0);
            if current != mine {
                return Err(StoreError::NotLeader(format!(
                    "{context}: fenced, the lease is at epoch {current} and this replica wrote \
                     under {mine}"
                )));
            }
            let out = f(&mut tx, mine)?;
            tx.commit().map_err(unavailable(context))?;
            Ok(out)
        });
        if matches!(result, Err(StoreError::NotLeader(_))) {
            self.leadership.step_down(epoch);
        }
        result
    }

    fn read<T: Send + 'static>(
        &self,
        context: &'static str,
        f: impl FnOnce(&mut postgres::Client) -> Result<T, postgres::Error> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.store
            .call(context, move |c| f(c).map_err(unavailable(context)))
    }
}

fn json<T: serde::Serialize>(what: &str, v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(corrupt(what))
}

fn parse_all<T: serde::de::DeserializeOwned>(
    what: &str,
    texts: Vec<String>,
) -> Result<Vec<T>, StoreError> {
    texts
        .iter()
        .map(|s| serde_json::from_str(s).map_err(corrupt(what)))
        .collect()
}

impl Store for PostgresStore {
    fn create(&self, r: &Rollout, rule_source: &str) -> Result<(), StoreError> {
        let state = json("rollout", r)?;
        let (id, rule, version, phase) = (
            r.id.clone(),
            r.rule.clone(),
            r.version.clone(),
            r.phase.as_str(),
        );
        let (source, created, updated) = (
            rule_source.to_string(),
            r.created_at.timestamp_micros(),
            r.updated_at.to_rfc3339(),
        );
        self.fenced("creating a rollout", move |tx, epoch| {
            tx.execute(
                "INSERT INTO canaryd_rollouts
                 (id, rule, version, phase, state, rule_source, created_us, updated_at, epoch)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[
                    &id, &rule, &version, &phase, &state, &source, &created, &updated, &epoch,
                ],
            )
            .map_err(unavailable("creating a rollout"))?;
            Ok(())
        })
    }

    fn save(&self, r: &Rollout, tick: Option<&Tick>) -> Result<(), StoreError> {
        let state = json("rollout", r)?;
        let tick = tick
            .map(|t| Ok::<_, StoreError>((json("tick", t)?, t.at.to_rfc3339(), t.step as i64)))
            .transpose()?;
        let (id, phase, updated) = (r.id.clone(), r.phase.as_str(), r.updated_at.to_rfc3339());
        self.fenced("saving a decision", move |tx, epoch| {
            let changed = tx
                .execute(
                    "UPDATE canaryd_rollouts SET phase = $2, state = $3, updated_at = $4, epoch = $5
                     WHERE id = $1",
                    &[&id, &phase, &state, &updated, &epoch],
                )
                .map_err(unavailable("saving a decision"))?;
            if changed == 0 {
                return Err(StoreError::Unavailable(format!(
                    "rollout {id} was never created in the PostgreSQL store"
                )));
            }
            if let Some((json, at, step)) = tick {
                tx.execute(
                    "INSERT INTO canaryd_ticks (rollout_id, at, step, tick) VALUES ($1, $2, $3, $4)",
                    &[&id, &at, &step, &json],
                )
                .map_err(unavailable("saving a tick"))?;
            }
            Ok(())
        })
    }

    fn get(&self, id: &str) -> Result<Option<Rollout>, StoreError> {
        let key = id.to_string();
        let state: Option<String> = self.read("reading a rollout", move |c| {
            Ok(
                c.query_opt("SELECT state FROM canaryd_rollouts WHERE id = $1", &[&key])?
                    .map(|row| row.get(0)),
            )
        })?;
        state
            .map(|s| serde_json::from_str(&s).map_err(corrupt(id)))
            .transpose()
    }

    fn list(&self) -> Result<Vec<Rollout>, StoreError> {
        let states = self.read("listing rollouts", |c| {
            Ok(c.query(
                "SELECT state FROM canaryd_rollouts ORDER BY created_us, id",
                &[],
            )?
            .iter()
            .map(|row| row.get(0))
            .collect())
        })?;
        parse_all("rollout", states)
    }

    fn rule_source(&self, id: &str) -> Result<Option<String>, StoreError> {
        let key = id.to_string();
        self.read("reading a rule snapshot", move |c| {
            Ok(c.query_opt(
                "SELECT rule_source FROM canaryd_rollouts WHERE id = $1",
                &[&key],
            )?
            .map(|row| row.get(0)))
        })
    }

    fn history(&self, id: &str, limit: usize) -> Result<Vec<Tick>, StoreError> {
        let (key, limit) = (id.to_string(), i64::try_from(limit).unwrap_or(i64::MAX));
        let ticks = self.read("reading history", move |c| {
            Ok(c.query(
                "SELECT tick FROM (SELECT seq, tick FROM canaryd_ticks WHERE rollout_id = $1
                 ORDER BY seq DESC LIMIT $2) t ORDER BY seq",
                &[&key, &limit],
            )?
            .iter()
            .map(|row| row.get(0))
            .collect())
        })?;
        parse_all("tick", ticks)
    }

    fn record_delivery(&self, d: &Delivery) -> Result<(), StoreError> {
        let record = json("delivery", d)?;
        let d = d.clone();
        self.fenced("logging a hook delivery", move |tx, epoch| {
            tx.execute(
                "INSERT INTO canaryd_hook_deliveries
                 (rollout_id, hook, idempotency_key, attempts, outcome, error, at, record, epoch)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[
                    &d.rollout_id,
                    &d.hook.as_str(),
                    &d.idempotency_key,
                    &i64::from(d.attempts),
                    &d.outcome,
                    &d.error,
                    &d.at.to_rfc3339(),
                    &record,
                    &epoch,
                ],
            )
            .map_err(unavailable("logging a hook delivery"))?;
            Ok(())
        })
    }

    fn deliveries(&self, id: &str) -> Result<Vec<Delivery>, StoreError> {
        let key = id.to_string();
        let records = self.read("reading hook deliveries", move |c| {
            Ok(c.query(
                "SELECT record FROM canaryd_hook_deliveries WHERE rollout_id = $1 ORDER BY seq",
                &[&key],
            )?
            .iter()
            .map(|row| row.get(0))
            .collect())
        })?;
        parse_all("delivery", records)
    }

    fn ping(&self) -> Result<(), StoreError> {
        self.read("checking the state store", |c| {
            c.query_one("SELECT 1", &[]).map(|_| ())
        })
    }
}

fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl LeaseBackend for PostgresStore {
    fn acquire(
        &self,
        holder: &str,
        url: &str,
        lease: Duration,
    ) -> Result<Result<u64, Option<String>>, String> {
        let (holder, url, ms) = (holder.to_string(), url.to_string(), seconds(lease));
        self.lease
            .call("acquiring the lease", move |c| {
                let ctx = "acquiring the lease";
                // The holder's own unexpired lease is taken again under a new epoch too: this
                // replica's term ended locally, so whatever it had in flight must be fenced.
                let won = c
                    .query_opt(
                        "UPDATE canaryd_lease SET holder = $1, url = $2, epoch = epoch + 1,
                           expires_at = now() + $3::float8 * interval '1 second'
                         WHERE id = 1 AND (expires_at < now() OR holder = $1) RETURNING epoch",
                        &[&holder, &url, &ms],
                    )
                    .map_err(unavailable(ctx))?;
                if let Some(row) = won {
                    let epoch: i64 = row.get(0);
                    return Ok(Ok(u64::try_from(epoch).unwrap_or(0)));
                }
                let other = c
                    .query_opt(
                        "SELECT url FROM canaryd_lease WHERE id = 1 AND expires_at >= now()",
                        &[],
                    )
                    .map_err(unavailable(ctx))?;
                Ok(Err(other
                    .map(|row| row.get::<_, String>(0))
                    .filter(|u| !u.is_empty())))
            })
            .map_err(|e| e.to_string())
    }

    fn release(&self, holder: &str, epoch: u64) -> Result<(), String> {
        let holder = holder.to_string();
        let epoch = i64::try_from(epoch).unwrap_or(i64::MAX);
        self.lease
            .call("handing the lease back", move |c| {
                c.execute(
                    "UPDATE canaryd_lease SET expires_at = '-infinity'
                     WHERE id = 1 AND holder = $1 AND epoch = $2",
                    &[&holder, &epoch],
                )
                .map(|_| ())
                .map_err(unavailable("handing the lease back"))
            })
            .map_err(|e| e.to_string())
    }

    fn renew(&self, holder: &str, epoch: u64, lease: Duration) -> Result<bool, String> {
        let (holder, ms) = (holder.to_string(), seconds(lease));
        let epoch = i64::try_from(epoch).unwrap_or(i64::MAX);
        self.lease
            .call("renewing the lease", move |c| {
                c.execute(
                    "UPDATE canaryd_lease SET expires_at = now() + $3::float8 * interval '1 second'
                     WHERE id = 1 AND holder = $1 AND epoch = $2",
                    &[&holder, &epoch, &ms],
                )
                .map(|n| n == 1)
                .map_err(unavailable("renewing the lease"))
            })
            .map_err(|e| e.to_string())
    }
}
