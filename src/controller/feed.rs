//! The controller's update stream as subscribers need it: every update in order, and after a
//! subscriber fell behind (`RecvError::Lagged`), the current state of every rollout re-read from
//! the store, so a slow subscriber misses intermediate steps but never the outcome.

use tokio::sync::broadcast::{Receiver, error::RecvError};

use super::{Controller, Update};

/// The `event` of updates made up after a lag, so subscribers can tell them from transitions.
pub const RESYNC: &str = "resync";

pub struct Feed {
    rx: Receiver<Update>,
    controller: Controller,
}

impl Feed {
    pub fn new(controller: &Controller) -> Feed {
        Feed {
            rx: controller.subscribe(),
            controller: controller.clone(),
        }
    }

    /// The next updates; `None` once the controller is gone.
    pub async fn next(&mut self) -> Option<Vec<Update>> {
        match self.rx.recv().await {
            Ok(u) => Some(vec![u]),
            Err(RecvError::Closed) => None,
            Err(RecvError::Lagged(missed)) => {
                tracing::warn!(
                    missed,
                    "a subscriber fell behind the rollout updates; re-reading the store"
                );
                let all = self.controller.list().unwrap_or_default();
                Some(
                    all.into_iter()
                        .map(|rollout| Update {
                            rollout,
                            event: RESYNC,
                            actions: Vec::new(),
                        })
                        .collect(),
                )
            }
        }
    }

    pub fn controller(&self) -> &Controller {
        &self.controller
    }
}
