//! The controller's update stream as subscribers need it: every update in order, and after a
//! subscriber fell behind (`RecvError::Lagged`), the current state of every live and recently
//! ended rollout, so a slow subscriber misses intermediate steps but never the outcome. The
//! resync comes from the controller's memory ([`super::latest`]); only a subscriber that may
//! have missed more endings than memory keeps re-reads the store.

use std::sync::Arc;

use tokio::sync::broadcast::{Receiver, error::RecvError};

use super::{Controller, Update};
use crate::rollout::Rollout;

/// The `event` of updates made up after a lag, so subscribers can tell them from transitions.
pub const RESYNC: &str = "resync";

pub struct Feed {
    rx: Receiver<Update>,
    controller: Controller,
    /// The controller's ending count when this feed last had everything: endings after it may
    /// have been missed by a lag.
    synced: u64,
}

impl Feed {
    pub fn new(controller: &Controller) -> Feed {
        // Count first, subscribe second: an ending between the two is counted as possibly
        // missed, never the other way round.
        let synced = controller.inner.lock_latest().endings();
        Feed {
            rx: controller.subscribe(),
            controller: controller.clone(),
            synced,
        }
    }

    /// The next updates; `None` once the controller is gone.
    pub async fn next(&mut self) -> Option<Vec<Update>> {
        match self.rx.recv().await {
            Ok(u) => Some(vec![u]),
            Err(RecvError::Closed) => None,
            Err(RecvError::Lagged(missed)) => Some(self.resync(missed)),
        }
    }

    fn resync(&mut self, missed: u64) -> Vec<Update> {
        let snapshot = self.controller.inner.lock_latest().snapshot(self.synced);
        let all: Vec<Arc<Rollout>> = match snapshot {
            Some(snap) => {
                tracing::warn!(
                    missed,
                    "a subscriber fell behind the rollout updates; resyncing from memory"
                );
                self.synced = snap.endings;
                snap.rollouts
            }
            None => {
                tracing::warn!(
                    missed,
                    "a subscriber fell behind the rollout updates past what memory keeps; \
                     re-reading the store"
                );
                self.synced = self.controller.inner.lock_latest().endings();
                self.controller
                    .list()
                    .unwrap_or_default()
                    .into_iter()
                    .map(Arc::new)
                    .collect()
            }
        };
        all.into_iter()
            .map(|rollout| Update {
                rollout,
                event: RESYNC,
                actions: Vec::new(),
            })
            .collect()
    }

    pub fn controller(&self) -> &Controller {
        &self.controller
    }
}
