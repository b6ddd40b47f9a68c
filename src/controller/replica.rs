//! Wiring of one replica: the shared store, a controller whose tasks act only while this
//! replica leads, and the lease loop that resumes the rollouts on every new term and stops them
//! when a term ends.

use std::sync::Arc;

use anyhow::Context;

use super::lease;
use super::{Controller, RuleSet};
use crate::actions::HookRunner;
use crate::config::{Config, PostgresSection};
use crate::source::PrometheusSource;
use crate::store::leadership::{Leadership, LeaseTiming};

use crate::store::postgres::PostgresStore;

/// A replica of a shared PostgreSQL store: follows until its lease loop wins the lease, then
/// resumes every live rollout from the store; stops its tasks when the lease is lost.
pub fn start(
    pg: &PostgresSection,
    url: &str,
    rules: RuleSet,
    source: PrometheusSource,
    hooks: HookRunner,
) -> anyhow::Result<(Controller, LeaseStop)> {
    pg.check()?;
    let db_url = Config::read_secret(&pg.url_file)?;
    let leadership = Leadership::replica();
    let store = Arc::new(
        PostgresStore::open(&db_url, leadership.clone())
            .context("opening the PostgreSQL state store")?,
    );
    drop(db_url);
    let controller =
        Controller::new(rules, store.clone(), source, hooks).with_leadership(leadership.clone());
    let holder = format!(
        "canaryd-{}-{}",
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    tracing::info!(holder = %holder, lease = ?pg.lease, renew_interval = ?pg.renew_interval,
        "replica of a shared store; following until the lease is won");
    metrics::gauge!("canaryd_leader").set(0.0);
    let c = controller.clone();
    let stop = tokio::sync::watch::channel(false).0;
    let handle = tokio::spawn(lease::run(
        store,
        leadership,
        holder,
        url.to_string(),
        LeaseTiming {
            lease: pg.lease,
            renew_interval: pg.renew_interval,
        },
        move |epoch| match epoch {
            Some(epoch) => match c.recover() {
                Ok(n) => tracing::info!(
                    event = "rollouts.recovered",
                    epoch,
                    count = n,
                    "leading: live rollouts resumed"
                ),
                Err(e) => {
                    // Leading without the rollouts' tasks would hold them all up: hand the
                    // lease back, and take it again (a new term) once the store answers.
                    tracing::error!(epoch, error = %e, "leading, but the rollouts could not be read; stepping down");
                    c.leadership().step_down(epoch);
                }
            },
            None => c.stand_down(),
        },
        stop.subscribe(),
    ));
    Ok((controller, (stop, handle)))
}

/// Tells the lease loop to hand the lease back, and waits for it.
pub type LeaseStop = (
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<()>,
);
