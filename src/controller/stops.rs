//! What stops every actor, watched once for the daemon: the controller's shutdown and the
//! leader term. The scheduler's loop waits on [`Stops::changed`] and pokes every registered
//! actor's command queue when it fires ([`super::commands::Poke`]); each actor then sees the
//! stop in its one control wait ([`super::commands::Receiver::control`]). Two `watch` waits in
//! every actor (120 bytes each, in every resting task cell and again in every slot future) were
//! the alternative.

use tokio::sync::watch;

use crate::store::leadership::Term;

/// The controller's shutdown flag and the leader term, as the scheduler's loop watches them.
pub(super) struct Stops {
    pub(super) shutdown: watch::Receiver<bool>,
    pub(super) lead: watch::Receiver<Option<Term>>,
}

/// What changed.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Change {
    /// The controller shuts down (or is gone): every actor stops, and so does the loop.
    Shutdown,
    /// The term's epoch changed: actors of the old term stop.
    Term,
}

impl Stops {
    /// The epoch the term stands for: actors stop when it changes. A renewal of the same epoch
    /// changes only the term's end, and stops nobody.
    pub(super) fn epoch(&self) -> Option<u64> {
        self.lead.borrow().map(|t| t.epoch)
    }

    /// Waits until the controller shuts down or the term's epoch is no longer `*seen` (which
    /// it then updates). Cancel-safe: a change not yet returned is seen by the next call.
    pub(super) async fn changed(&mut self, seen: &mut Option<u64>) -> Change {
        // A closed term channel (the controller is gone) can change no more.
        let mut lead_open = true;
        loop {
            tokio::select! {
                biased;
                changed = self.shutdown.changed() => {
                    if changed.is_err() || *self.shutdown.borrow() {
                        return Change::Shutdown;
                    }
                }
                changed = self.lead.changed(), if lead_open => {
                    lead_open = changed.is_ok();
                    let now = self.epoch();
                    if now != *seen {
                        *seen = now;
                        return Change::Term;
                    }
                }
            }
        }
    }
}
